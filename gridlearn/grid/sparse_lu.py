"""Sparse LU for matrices that share one pattern (the power flow Jacobians of a batch).

`PatternLU` does the symbolic work once per pattern: a fill-reducing column ordering
(computed by SuperLU on the first matrix) is folded into a gather of the CSC values, so
every later factorisation of a matrix with the same pattern (other scenarios, other
Newton iterations) runs SuperLU with the NATURAL ordering on pre-permuted values and
never re-orders. Row pivoting stays numerical (threshold partial pivoting), which is what
keeps an ill-conditioned Jacobian honest.

Why SuperLU (SciPy): measured against the alternatives named in issue #18 (see
benchmarks/README.md, "Sparse AC power flow"): KLU (``pyklu``) and UMFPACK
(``scikit-umfpack``) could not be installed from this environment's package index, and
``kvxopt``'s KLU/UMFPACK bindings were measured beside it where they installed.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

# SuperLU's partial-pivoting threshold: a pivot within this factor of the column's largest
# entry is taken on the diagonal. A power flow Jacobian is close to diagonally dominant, so
# a low threshold keeps the ordering's fill while still pivoting away from tiny pivots.
DIAG_PIVOT_THRESH = 0.1


class LUFactor:
    """One factorisation: ``solve(b)`` solves A x = b, ``solve(b, trans=True)`` solves Aᵀ x = b.

    b: (n,) or (n, k) float64 numpy.
    """

    def __init__(self, lu: spla.SuperLU, perm: np.ndarray):
        self._lu = lu
        self._perm = perm

    def solve(self, b: np.ndarray, trans: bool = False) -> np.ndarray:
        # A P = (LU) with P the column ordering: A x = b  <=>  x[perm] = (LU)^-1 b;
        # Aᵀ x = b  <=>  (LU)ᵀ x = b[perm].
        if trans:
            return self._lu.solve(np.ascontiguousarray(b[self._perm]), trans="T")
        z = self._lu.solve(np.ascontiguousarray(b))
        x = np.empty_like(z)
        x[self._perm] = z
        return x


class PatternLU:
    """Factorises CSC matrices of one pattern (``indptr``, ``indices``, shape (n, n)).

    ``factor(data)`` takes the CSC values in the pattern's order and returns an `LUFactor`,
    or None when the matrix is singular (or not finite).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n: int, ordering: str = "COLAMD"):
        self.n = n
        self.indptr = np.asarray(indptr, dtype=np.int32)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.ordering = ordering
        self._perm: np.ndarray | None = None
        self._gather: np.ndarray | None = None
        self._p_indptr: np.ndarray | None = None
        self._p_indices: np.ndarray | None = None

    def _analyse(self, data: np.ndarray) -> None:
        a = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))
        lu = spla.splu(a, permc_spec=self.ordering, diag_pivot_thresh=DIAG_PIVOT_THRESH)
        perm = np.asarray(lu.perm_c, dtype=np.int64)
        # Column j of the permuted matrix is column perm[j] of the original: gather its values.
        counts = np.diff(self.indptr)
        starts = self.indptr[:-1][perm]
        lens = counts[perm]
        p_indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        offsets = np.arange(p_indptr[-1]) - np.repeat(p_indptr[:-1], lens)
        gather = np.repeat(starts, lens) + offsets
        self._perm = perm
        self._gather = gather
        self._p_indptr = p_indptr
        self._p_indices = self.indices[gather]

    def factor(self, data: np.ndarray) -> LUFactor | None:
        data = np.ascontiguousarray(data, dtype=np.float64)
        if not np.isfinite(data).all():
            return None
        if self._perm is None:
            self._analyse(data)
        a = sp.csc_matrix((data[self._gather], self._p_indices, self._p_indptr), shape=(self.n, self.n))
        try:
            lu = spla.splu(a, permc_spec="NATURAL", diag_pivot_thresh=DIAG_PIVOT_THRESH)
        except RuntimeError:  # "Factor is exactly singular"
            return None
        return LUFactor(lu, self._perm)


__all__ = ["PatternLU", "LUFactor", "DIAG_PIVOT_THRESH"]
