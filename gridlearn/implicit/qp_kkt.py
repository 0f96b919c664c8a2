"""Batched reduced KKT factorisation shared by the QP interior point and its backward pass.

Every Newton step of the interior point (and the adjoint solve of the backward pass)
solves, per batch element, the reduced KKT system

    [ H   Aᵀ ] [dx]   [r_x]
    [ A   0  ] [dν] = [r_e],        H = Q + Gᵀ diag(d) G,   d = λ / s > 0,

obtained by eliminating the slack and inequality-dual blocks (see `qp_ipm`). We factor
H by Cholesky and the equalities through the Schur complement S = A H⁻¹ Aᵀ:

    t = H⁻¹ r_x,   S dν = A t − r_e,   dx = t − H⁻¹ Aᵀ dν.

H is only positive *semi*-definite when Q is PSD and the inequalities do not cover
its null space (qpth fails there with "cannot perform LU factorization"). Elements
whose Cholesky fails get a small diagonal shift δ on H (and −δ on the Schur block);
the shift is removed again by iterative refinement against the unshifted system. If
even the shifted Cholesky fails, that element falls back to an LU factorisation of the
shifted bordered matrix [[H + δI, Aᵀ], [A, −δI]]. Elements whose LU is singular too
are flagged `broken` and the caller marks them NUMERICAL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# m·n² above which Gᵀ diag(d) G is formed by batched matmul instead of from the
# precomputed outer products of G's rows (memory guard).
_OUTER_LIMIT = 20_000_000


@dataclass
class QPData:
    """The problem in broadcastable form, restricted to some subset of the batch.

    Shapes: Q (b|1, n, n), p (b|1, n), G (b|1, m, n), h (b|1, m), A (b|1, k, n),
    b (b|1, k). A leading 1 means shared by every element. ``GG`` holds the row outer
    products of a shared G, shape (m, n·n), or None.
    """

    Q: Tensor
    p: Tensor
    G: Tensor
    h: Tensor
    A: Tensor
    b: Tensor
    GG: Tensor | None = None

    @property
    def n(self) -> int:
        return self.Q.shape[-1]

    @property
    def m(self) -> int:
        return self.G.shape[-2]

    @property
    def k(self) -> int:
        return self.A.shape[-2]

    def take(self, idx: Tensor) -> "QPData":
        """Restrict batched fields to the elements ``idx``; shared ones stay shared."""

        def sel(t: Tensor) -> Tensor:
            return t if t.shape[0] == 1 else t.index_select(0, idx)

        return QPData(sel(self.Q), sel(self.p), sel(self.G), sel(self.h), sel(self.A), sel(self.b), self.GG)

    @staticmethod
    def outer_rows(G: Tensor) -> Tensor | None:
        """(m, n·n) outer products of the rows of a shared G, or None if batched/too big."""
        if G.shape[0] != 1:
            return None
        m, n = G.shape[-2], G.shape[-1]
        if m == 0 or m * n * n > _OUTER_LIMIT:
            return None
        g = G[0]
        return (g.unsqueeze(2) * g.unsqueeze(1)).reshape(m, n * n)


def mv(M: Tensor, v: Tensor) -> Tensor:
    """Batched (or shared) matrix (b|1, r, c) times vectors (b, c) -> (b, r)."""
    return torch.matmul(M, v.unsqueeze(-1)).squeeze(-1)


def mtv(M: Tensor, v: Tensor) -> Tensor:
    """Batched (or shared) transpose-matrix-vector: Mᵀ v, M (b|1, r, c), v (b, r) -> (b, c)."""
    return torch.matmul(v.unsqueeze(-2), M).squeeze(-2)


def reduced_hessian(data: QPData, d: Tensor, batch: int) -> Tensor:
    """H = Q + Gᵀ diag(d) G, shape (batch, n, n); d is (batch, m)."""
    n = data.n
    Q = data.Q.expand(batch, n, n)
    if data.m == 0:
        return Q.clone()
    if data.GG is not None:
        return Q + (d @ data.GG).view(batch, n, n)
    return Q + torch.matmul(data.G.mT, d.unsqueeze(-1) * data.G)


@dataclass
class KKTFactor:
    """Factorisation of the reduced KKT system for a (sub-)batch; see module docstring.

    Shapes: L (b, n, n) Cholesky of H (+δI where ``shifted``); W = H⁻¹Aᵀ (b, n, k);
    Ls (b, k, k) Cholesky of S (+δI where ``shifted``); d (b, m). ``lu``/``piv``/``lu_idx``
    hold the bordered LU of the elements where the shifted Cholesky failed too.
    """

    data: QPData
    d: Tensor
    L: Tensor
    W: Tensor
    Ls: Tensor
    shifted: Tensor
    broken: Tensor
    lu: Tensor | None
    piv: Tensor | None
    lu_idx: Tensor | None
    refine_steps: int

    @classmethod
    def factor(cls, data: QPData, d: Tensor, reg: float, refine_steps: int) -> "KKTFactor":
        batch, n, k = d.shape[0], data.n, data.k
        H = reduced_hessian(data, d, batch)
        L, info = torch.linalg.cholesky_ex(H)
        shifted = info != 0
        eye = torch.eye(n, dtype=H.dtype, device=H.device)
        if bool(shifted.any()):
            bad = torch.nonzero(shifted).flatten()
            Hb = H.index_select(0, bad)
            # Shift relative to H's scale, so the refinement has little to undo.
            scale = Hb.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1.0)
            Lb, infob = torch.linalg.cholesky_ex(Hb + (reg * scale)[:, None, None] * eye)
            L = L.index_copy(0, bad, Lb)
            still = torch.zeros_like(shifted)
            still[bad] = infob != 0
        else:
            still = torch.zeros_like(shifted)
        A = data.A.expand(batch, k, n)
        if k > 0:
            W = torch.cholesky_solve(A.mT, L)
            S = torch.matmul(A, W)
            Ls, infos = torch.linalg.cholesky_ex(S)
            bad_s = infos != 0
            if bool(bad_s.any()):
                bad = torch.nonzero(bad_s).flatten()
                Sb = S.index_select(0, bad)
                scale = Sb.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1.0)
                eyek = torch.eye(k, dtype=H.dtype, device=H.device)
                Lsb, infosb = torch.linalg.cholesky_ex(Sb + (reg * scale)[:, None, None] * eyek)
                Ls = Ls.index_copy(0, bad, Lsb)
                shifted = shifted | bad_s
                still[bad] |= infosb != 0
        else:
            W = H.new_zeros(batch, n, 0)
            Ls = H.new_zeros(batch, 0, 0)
        lu = piv = lu_idx = None
        broken = torch.zeros_like(shifted)
        if bool(still.any()):
            lu_idx = torch.nonzero(still).flatten()
            Hb = H.index_select(0, lu_idx)
            Ab = A.index_select(0, lu_idx)
            scale = Hb.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1.0)
            delta = (reg * scale)[:, None, None]
            top = torch.cat([Hb + delta * eye, Ab.mT], -1)
            bottom = torch.cat([Ab, -delta * torch.eye(k, dtype=H.dtype, device=H.device)], -1)
            lu, piv, infol = torch.linalg.lu_factor_ex(torch.cat([top, bottom], -2))
            broken[lu_idx] = infol != 0
        return cls(data, d, L, W, Ls, shifted, broken, lu, piv, lu_idx, refine_steps)

    def _hmv(self, v: Tensor) -> Tensor:
        """Unshifted H v = Q v + Gᵀ(d ∘ G v)."""
        out = mv(self.data.Q, v)
        if self.data.m:
            out = out + mtv(self.data.G, self.d * mv(self.data.G, v))
        return out

    def _solve_once(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.cholesky_solve(rx.unsqueeze(-1), self.L)
        if re.shape[-1]:
            A = self.data.A
            rhs = torch.matmul(A, t) - re.unsqueeze(-1)
            dnu = torch.cholesky_solve(rhs, self.Ls)
            dx = (t - torch.matmul(self.W, dnu)).squeeze(-1)
            dnu = dnu.squeeze(-1)
        else:
            dx, dnu = t.squeeze(-1), re
        if self.lu_idx is not None:
            i = self.lu_idx
            rhs = torch.cat([rx.index_select(0, i), re.index_select(0, i)], -1).unsqueeze(-1)
            sol = torch.linalg.lu_solve(self.lu, self.piv, rhs).squeeze(-1)
            n = rx.shape[-1]
            dx = dx.index_copy(0, i, sol[:, :n])
            dnu = dnu.index_copy(0, i, sol[:, n:])
        return dx, dnu

    def solve(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        """Solve H dx + Aᵀ dν = rx, A dx = re; rx (b, n), re (b, k) -> (dx, dν).

        Iterative refinement against the unshifted system removes the effect of the
        diagonal shift and recovers accuracy lost to ill-conditioning near the solution.
        """
        dx, dnu = self._solve_once(rx, re)
        for _ in range(self.refine_steps):
            res_x = rx - self._hmv(dx)
            res_e = re
            if re.shape[-1]:
                res_x = res_x - mtv(self.data.A, dnu)
                res_e = re - mv(self.data.A, dx)
            cx, cnu = self._solve_once(res_x, res_e)
            dx, dnu = dx + cx, dnu + cnu
        return dx, dnu

    def take(self, idx: Tensor) -> "KKTFactor":
        """The factorisation restricted to the elements ``idx`` (a sub-batch)."""
        lu = piv = lu_idx = None
        if self.lu_idx is not None:
            # Keep only LU rows whose element survives, renumbered into the sub-batch.
            pos = torch.full((self.L.shape[0],), -1, dtype=torch.long, device=idx.device)
            pos[idx] = torch.arange(idx.numel(), device=idx.device)
            new = pos[self.lu_idx]
            keep = new >= 0
            if bool(keep.any()):
                lu, piv, lu_idx = self.lu[keep], self.piv[keep], new[keep]
        return KKTFactor(
            self.data.take(idx), self.d[idx], self.L[idx], self.W[idx], self.Ls[idx],
            self.shifted[idx], self.broken[idx], lu, piv, lu_idx, self.refine_steps,
        )
