"""Sparse LU for matrices that share one pattern (the power flow Jacobians of a batch).

`PatternLU` does the symbolic work once per pattern: a fill-reducing column ordering
(computed by SuperLU on the first matrix) is folded into a gather of the CSC values, so
every later factorisation of a matrix with the same pattern (other scenarios, other
Newton iterations) runs SuperLU with the NATURAL ordering on pre-permuted values and
never re-orders. Row pivoting stays numerical (threshold partial pivoting), which is what
keeps an ill-conditioned Jacobian honest.

Two factorisation engines, one interface:

- "klu" (default when ``kvxopt`` is installed): SuiteSparse KLU through kvxopt. KLU's
  symbolic analysis (BTF + AMD ordering) runs once per pattern, as KLU is designed for
  (circuit and power flow matrices); every matrix after that is a numeric factorisation.
- "superlu" (SciPy, always available): the column ordering SuperLU computes on the first
  matrix is folded into a gather of the CSC values, and every later factorisation runs
  with the NATURAL ordering on pre-permuted values.

Measured on case2869pegase's Jacobian (n = 5,227, 1 thread; benchmarks/README.md, "Sparse
AC power flow"): KLU's numeric factorisation ≈ 0.45× SuperLU's time and its solve ≈ 0.2×;
UMFPACK (also in kvxopt) was slower than both. ``pyklu`` and ``scikit-umfpack`` could not
be installed from this environment's package index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from gridlearn.errors import ConfigError

try:  # optional: SuiteSparse KLU (faster); SuperLU is the fallback
    from kvxopt import klu as _klu
    from kvxopt import matrix as _kv_matrix
    from kvxopt import spmatrix as _kv_spmatrix
except ImportError:  # pragma: no cover - depends on the environment
    _klu = None

ENGINES = ("auto", "klu", "superlu")


def default_engine() -> str:
    return "klu" if _klu is not None else "superlu"

# SuperLU's partial-pivoting threshold: a pivot within this factor of the column's largest
# entry is taken on the diagonal. A power flow Jacobian is close to diagonally dominant, so
# a low threshold keeps the ordering's fill while still pivoting away from tiny pivots.
DIAG_PIVOT_THRESH = 0.1


class KLUFactor:
    """One KLU factorisation; same interface as `LUFactor`."""

    def __init__(self, template, symbolic, numeric):
        self._a, self._fs, self._fn = template, symbolic, numeric

    def solve(self, b: np.ndarray, trans: bool = False) -> np.ndarray:
        rhs = _kv_matrix(np.asfortranarray(b, dtype=np.float64))
        _klu.solve(self._a, self._fs, self._fn, rhs, trans="T" if trans else "N")
        return np.asarray(rhs).reshape(b.shape)


class LUFactor:
    """One SuperLU factorisation: ``solve(b)`` solves A x = b, ``solve(b, trans=True)``
    solves Aᵀ x = b. b: (n,) or (n, k) float64 numpy.
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

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n: int, engine: str = "auto",
                 ordering: str = "COLAMD"):
        if engine not in ENGINES:
            raise ConfigError(f"sparse LU engine must be one of {ENGINES}, got {engine!r}")
        if engine == "klu" and _klu is None:
            raise ConfigError("sparse LU engine 'klu' needs the kvxopt package (pip install kvxopt)")
        self.engine = default_engine() if engine == "auto" else engine
        self.n = n
        self.indptr = np.asarray(indptr, dtype=np.int32)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.ordering = ordering
        self._perm: np.ndarray | None = None
        self._gather: np.ndarray | None = None
        self._p_indptr: np.ndarray | None = None
        self._p_indices: np.ndarray | None = None
        self._klu_a = None
        self._klu_symbolic = None

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

    def factor(self, data: np.ndarray) -> LUFactor | KLUFactor | None:
        data = np.ascontiguousarray(data, dtype=np.float64)
        if not np.isfinite(data).all():
            return None
        if self.engine == "klu":
            return self._factor_klu(data)
        if self._perm is None:
            self._analyse(data)
        a = sp.csc_matrix((data[self._gather], self._p_indices, self._p_indptr), shape=(self.n, self.n))
        try:
            lu = spla.splu(a, permc_spec="NATURAL", diag_pivot_thresh=DIAG_PIVOT_THRESH)
        except RuntimeError:  # "Factor is exactly singular"
            return None
        return LUFactor(lu, self._perm)

    def _factor_klu(self, data: np.ndarray) -> KLUFactor | None:
        # The pattern's CSC order (sorted rows within each column) is kvxopt's storage
        # order, so a new matrix is a copy of the values into one template.
        if self._klu_a is None:
            counts = np.diff(self.indptr)
            cols = np.repeat(np.arange(self.n, dtype=np.int64), counts)
            self._klu_a = _kv_spmatrix(_kv_matrix(data), _kv_matrix(self.indices.astype(np.int64)),
                                       _kv_matrix(cols), (self.n, self.n))
            self._klu_symbolic = _klu.symbolic(self._klu_a)
        # One template for every factor: KLU's solve reads only the factors (klu_solve takes
        # Symbolic and Numeric, never A), so later values written here cannot reach an
        # earlier factor (tests/grid/test_sparse_lu.py checks this).
        a = self._klu_a
        a.V = _kv_matrix(data)
        try:
            numeric = _klu.numeric(a, self._klu_symbolic)
        except ArithmeticError:  # singular
            return None
        return KLUFactor(a, self._klu_symbolic, numeric)


__all__ = ["PatternLU", "LUFactor", "KLUFactor", "ENGINES", "default_engine", "DIAG_PIVOT_THRESH"]
