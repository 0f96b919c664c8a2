"""Tridiagonal fast path for the reduced KKT system of `qp_kkt` (no equalities).

When Q is tridiagonal (over the whole batch), G is shared and each row of G touches at
most two *adjacent* variables, H = Q + Gᵀ diag(d) G is tridiagonal for every d: ramp or
difference constraints |x_i − x_{i+1}| ≤ c and bounds on x_i are of that form (a
separable cost over time steps with ramp limits: diagonal Q, n = 24, 46 rows). Its
factor costs O(n) per element instead of the dense Cholesky's O(n³), and O(n) per solve
instead of O(n²); for n = 24 and a batch of 2,000 the dense batched LAPACK calls were
most of the interior point's time.

LAPACK's ``?pttrf``/``?pttrs`` (LDLᵀ of a symmetric positive definite tridiagonal
matrix) factor and solve it; the answers agree with `KKTFactor`'s dense Cholesky to
rounding (a different rounding, so on a QP at the edge of the interior point's
convergence the per-element status can differ either way). If some element is not numerically positive definite (or the tensors are not
on the CPU), the whole sub-batch falls back to `KKTFactor`, which shifts and refines:
`TridiagonalKKTFactor.factor` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import get_lapack_funcs
from torch import Tensor

from gridlearn.implicit.qp_kkt import QPData, _Refined


@dataclass
class TridiagonalPattern:
    """Per-row products of a shared G (m, n): ``g2`` = G∘G (m, n), ``go`` = G[:, :-1]∘G[:, 1:] (m, n−1).

    Then diag(Gᵀ D G) = d @ g2 and its first off-diagonal = d @ go, for d (b, m).
    """

    g2: Tensor
    go: Tensor

    @classmethod
    def build(cls, Q: Tensor, G: Tensor, A: Tensor) -> "TridiagonalPattern | None":
        """The pattern when Q (b|1, n, n) and Gᵀ diag(d) G are tridiagonal and there are no equalities, else None."""
        n, m, k = Q.shape[-1], G.shape[-2], A.shape[-2]
        if k or m == 0 or n < 3 or G.shape[0] != 1:
            return None
        nz = G[0] != 0
        cols = torch.arange(n, device=G.device).expand(m, n)
        first = torch.where(nz, cols, n).amin(-1)
        last = torch.where(nz, cols, -1).amax(-1)
        if bool(((last - first) > 1).any()):
            return None
        # nonzeros of Q outside its three central diagonals (counting beats a masked gather)
        inband = sum(Q.diagonal(offset=o, dim1=-2, dim2=-1).count_nonzero() for o in (-1, 0, 1))
        if bool(Q.count_nonzero() - inband):
            return None
        g = G[0]
        return cls(g * g, g[:, :-1] * g[:, 1:])


@dataclass
class TridiagonalKKTFactor(_Refined):
    """LDLᵀ factor of H from LAPACK's ``?pttrf``, the whole batch as one block-diagonal
    tridiagonal system of size b·n (the couplings between elements are exact zeros), so a
    factorisation or a solve is one compiled call instead of b small dense ones or a
    Python loop over n. ``df`` (b·n,) is D, ``ef`` (b·n − 1,) the subdiagonal of L (NumPy).

    Same interface as `qp_kkt.KKTFactor` for k = 0 (``broken`` is all False: failures fall back).
    """

    data: QPData
    d: Tensor
    df: np.ndarray
    ef: np.ndarray
    broken: Tensor
    refine_steps: int

    @classmethod
    def factor(cls, data: QPData, d: Tensor, refine_steps: int) -> "TridiagonalKKTFactor | None":
        tri: TridiagonalPattern = data.tri
        Q = data.Q
        if d.device.type != "cpu" or d.dtype not in _LAPACK:
            return None
        batch = d.shape[0]
        a = (Q.diagonal(dim1=-2, dim2=-1) + d @ tri.g2).expand(batch, -1)
        c = Q.diagonal(offset=-1, dim1=-2, dim2=-1) + d @ tri.go
        # one system: each element's subdiagonal, then a 0 that decouples it from the next
        e = torch.cat([c.expand(batch, -1), c.new_zeros(batch, 1)], -1).reshape(-1)[:-1]
        pttrf, _ = _LAPACK[d.dtype]
        df, ef, info = pttrf(a.reshape(-1).numpy(), e.numpy())
        if info != 0 or not np.isfinite(df).all():
            return None  # not numerically PD somewhere: the dense factor shifts and refines
        return cls(data, d, df, ef, torch.zeros(batch, dtype=torch.bool, device=d.device), refine_steps)

    def _solve_once(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        _, pttrs = _LAPACK[rx.dtype]
        x, info = pttrs(self.df, self.ef, rx.reshape(-1, 1).numpy())
        if info != 0:
            raise RuntimeError(f"?pttrs: illegal argument {-info}")  # shapes are ours: a bug, not data
        return torch.from_numpy(x).reshape(rx.shape), re

    def take(self, idx: Tensor) -> "TridiagonalKKTFactor":
        n = self.data.n
        rows = (idx.numpy()[:, None] * n + np.arange(n)).reshape(-1)
        ef = np.append(self.ef, 0.0)[rows].reshape(-1, n)
        ef[:, -1] = 0.0
        return TridiagonalKKTFactor(self.data.take(idx), self.d[idx], self.df[rows], np.ascontiguousarray(ef.reshape(-1)[:-1]),
                                    self.broken[idx], self.refine_steps)


_LAPACK = {dt: get_lapack_funcs(("pttrf", "pttrs"), dtype=npdt) for dt, npdt in ((torch.float64, np.float64), (torch.float32, np.float32))}
