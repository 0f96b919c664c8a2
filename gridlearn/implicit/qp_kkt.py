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

When Q itself is positive definite (and not badly conditioned) and there are fewer
constraints than variables, the same system is solved through Q instead (`DualKKTFactor`,
the reduction qpth uses, Amos & Kolter 2017): with C = [G; A] and E = diag(1/d, 0),

    [ Q  Cᵀ ] [dx]   [r_x      ]
    [ C  −E ] [y ] = [(0, r_e) ],   (C Q⁻¹ Cᵀ + E) y = C Q⁻¹ r_x − (0, r_e),
    dx = Q⁻¹ (r_x − Cᵀ y),   dν = y_A,

(y_G = d∘(G dx) is the eliminated block). Q's Cholesky, V = Q⁻¹Cᵀ and P = C Q⁻¹ Cᵀ
(`QFactor`) are computed once per solve, so an iteration costs one (m+k)³ Cholesky
instead of forming Q + GᵀDG (m·n²) and its n³ Cholesky.
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
    b (b|1, k). A leading 1 means shared by every element. ``GG`` holds the `GramRows`
    of a shared G, or None; ``qf`` the `QFactor` when the dual
    reduction is used, else None; ``tri`` the `qp_tridiag.TridiagonalPattern` when
    Q + GᵀDG is tridiagonal, else None.
    """

    Q: Tensor
    p: Tensor
    G: Tensor
    h: Tensor
    A: Tensor
    b: Tensor
    GG: "GramRows | None" = None
    qf: "QFactor | None" = None
    tri: "TridiagonalPattern | None" = None  # noqa: F821 - `qp_tridiag`'s (it imports this module); set when H is tridiagonal

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

        qf = None if self.qf is None else self.qf.take(idx)
        return QPData(sel(self.Q), sel(self.p), sel(self.G), sel(self.h), sel(self.A), sel(self.b), self.GG, qf, self.tri)

    @staticmethod
    def outer_rows(G: Tensor) -> "GramRows | None":
        """`GramRows` of a shared G, or None if G is batched or too big."""
        return GramRows.build(G)


@dataclass
class GramRows:
    """Gᵀ diag(d) G for a shared G (m, n) from precomputed row outer products.

    Rows equal up to sign have the same outer product, so their weights are summed
    first (DC-OPF: ±PTDF rows and ±I bounds halve m); rows with a single nonzero
    (variable bounds) only touch the diagonal. Shapes: ``cls`` (m,) row -> class, classes
    numbered dense first (``n_dense`` = r of them), then u single-nonzero ones, then zero
    rows; ``GG`` (r, n·n) the dense outer products; ``col`` (u,) and ``sq`` (u,) the column
    and squared value of each single-nonzero class.
    """

    n: int
    n_cls: int
    cls: Tensor
    n_dense: int
    GG: Tensor
    col: Tensor
    sq: Tensor

    @classmethod
    def build(cls_, G: Tensor) -> "GramRows | None":
        if G.shape[0] != 1:
            return None
        m, n = G.shape[-2], G.shape[-1]
        if m == 0:
            return None
        g = G[0]
        # Flip each row so its first nonzero is positive, then group identical rows.
        nz = g != 0
        first = torch.where(nz.any(-1), nz.to(torch.int8).argmax(-1), torch.zeros(m, dtype=torch.long, device=g.device))
        sign = torch.where(g.gather(1, first[:, None]) < 0, -1.0, 1.0).to(g.dtype)
        rows, inverse = torch.unique(sign * g, dim=0, return_inverse=True)
        nnz = (rows != 0).sum(-1)
        # Renumber classes: dense ones first, then single-nonzero ones, then zero rows.
        perm = torch.cat([torch.nonzero(nnz > 1).flatten(), torch.nonzero(nnz == 1).flatten(),
                          torch.nonzero(nnz == 0).flatten()])
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(perm.numel(), device=perm.device)
        rows, nnz = rows[perm], nnz[perm]
        n_dense, n_unit = int((nnz > 1).sum()), int((nnz == 1).sum())
        if n_dense * n * n > _OUTER_LIMIT:
            return None
        gd = rows[:n_dense]
        GG = (gd.unsqueeze(2) * gd.unsqueeze(1)).reshape(n_dense, n * n)
        gu = rows[n_dense:n_dense + n_unit]
        col = (gu != 0).to(torch.int8).argmax(-1)
        sq = gu.gather(1, col[:, None]).squeeze(1) ** 2
        return cls_(n, rows.shape[0], rank[inverse], n_dense, GG, col, sq)

    def hessian(self, Q: Tensor, d: Tensor) -> Tensor:
        """Q + Gᵀ diag(d) G, Q (b|1, n, n), d (b, m) -> (b, n, n)."""
        batch, n, r = d.shape[0], self.n, self.n_dense
        w = d.new_zeros(batch, self.n_cls).index_add_(1, self.cls, d)
        if r:
            # addmm accumulates onto Q inside the GEMM: no separate (b, n²) add pass.
            H = torch.addmm(Q.reshape(Q.shape[0], n * n), w[:, :r], self.GG).view(batch, n, n)
        else:
            H = Q.expand(batch, n, n).clone()
        if self.col.numel():
            diag = d.new_zeros(batch, n).index_add_(1, self.col, w[:, r:r + self.col.numel()] * self.sq)
            H.diagonal(dim1=-2, dim2=-1).add_(diag)
        return H


def mv(M: Tensor, v: Tensor) -> Tensor:
    """Batched (or shared) matrix (b|1, r, c) times vectors (b, c) -> (b, r)."""
    if M.shape[0] == 1:
        return v @ M[0].mT  # one GEMM for a shared matrix instead of b matrix-vector products
    return torch.matmul(M, v.unsqueeze(-1)).squeeze(-1)


def mtv(M: Tensor, v: Tensor) -> Tensor:
    """Batched (or shared) transpose-matrix-vector: Mᵀ v, M (b|1, r, c), v (b, r) -> (b, c)."""
    if M.shape[0] == 1:
        return v @ M[0]
    return torch.matmul(v.unsqueeze(-2), M).squeeze(-2)


def chol_solve(L: Tensor, rhs: Tensor) -> Tensor:
    """Solve (L Lᵀ) X = rhs for batched lower-triangular L (b, n, n), rhs (b, n, r).

    Two triangular solves instead of `torch.cholesky_solve`: on CPU the latter copies
    every factor into column-major order on each call, which we measured at ~10x the
    cost of the solves themselves for single right-hand sides (b=128, n=200).
    """
    if L.shape[0] == 1 and rhs.shape[0] > 1:
        # Shared factor: one triangular solve with b·r right-hand sides (BLAS-3).
        b, n, r = rhs.shape
        R = rhs.permute(1, 0, 2).reshape(n, b * r)
        Y = torch.linalg.solve_triangular(L[0], R, upper=False)
        X = torch.linalg.solve_triangular(L[0].mT, Y, upper=True)
        return X.reshape(n, b, r).permute(1, 0, 2)
    y = torch.linalg.solve_triangular(L, rhs, upper=False)
    return torch.linalg.solve_triangular(L.mT, y, upper=True)


def bordered_lu(H: Tensor, A: Tensor, reg: float) -> tuple[Tensor, Tensor, Tensor]:
    """LU of the shifted bordered matrix [[H + δI, Aᵀ], [A, −δI]], δ = reg·max|diag H|.

    H (b, n, n), A (b, k, n) -> (LU, pivots, singular (b,) bool). The shift keeps a
    PSD-only H (or dependent rows of A) factorable; refinement against the unshifted
    system (`_Refined.solve`) removes it again.
    """
    n, k = H.shape[-1], A.shape[-2]
    scale = H.diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp_min(1.0)
    delta = (reg * scale)[:, None, None]
    top = torch.cat([H + delta * torch.eye(n, dtype=H.dtype, device=H.device), A.mT], -1)
    bottom = torch.cat([A, -delta * torch.eye(k, dtype=H.dtype, device=H.device)], -1)
    lu, piv, info = torch.linalg.lu_factor_ex(torch.cat([top, bottom], -2))
    return lu, piv, info != 0


def reduced_hessian(data: QPData, d: Tensor, batch: int) -> Tensor:
    """H = Q + Gᵀ diag(d) G, shape (batch, n, n); d is (batch, m)."""
    n = data.n
    Q = data.Q.expand(batch, n, n)
    if data.m == 0:
        return Q.clone()
    if data.GG is not None:
        return data.GG.hessian(data.Q, d)
    return Q + torch.matmul(data.G.mT, d.unsqueeze(-1) * data.G)


class _Refined:
    """Iterative refinement shared by both factorisations (needs data, d, refine_steps)."""

    data: QPData
    d: Tensor
    refine_steps: int

    def _solve_once(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _hmv(self, v: Tensor) -> Tensor:
        """Unshifted H v = Q v + Gᵀ(d ∘ G v)."""
        out = mv(self.data.Q, v)
        if self.data.m:
            out = out + mtv(self.data.G, self.d * mv(self.data.G, v))
        return out

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


@dataclass
class KKTFactor(_Refined):
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
            W = chol_solve(L, A.mT)
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
            lu, piv, singular = bordered_lu(H.index_select(0, lu_idx), A.index_select(0, lu_idx), reg)
            broken[lu_idx] = singular
        return cls(data, d, L, W, Ls, shifted, broken, lu, piv, lu_idx, refine_steps)

    def _solve_once(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        t = chol_solve(self.L, rx.unsqueeze(-1))
        if re.shape[-1]:
            A = self.data.A
            rhs = torch.matmul(A, t) - re.unsqueeze(-1)
            dnu = chol_solve(self.Ls, rhs)
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


# Q's Cholesky diagonal ratio (squared: a lower bound on its condition number) above
# which the dual reduction is not used: it solves with Q alone, so Q's conditioning
# (not that of Q + GᵀDG) sets its accuracy.
_COND_LIMIT = 1e8


@dataclass
class QFactor:
    """Q = L Lᵀ, V = Q⁻¹Cᵀ and P = C Q⁻¹ Cᵀ for C = [G; A] (see module docstring).

    Shapes: L (b|1, n, n), V (b|1, n, m+k), P (b|1, m+k, m+k); a leading 1 is shared.
    """

    L: Tensor
    V: Tensor
    P: Tensor

    @classmethod
    def build(cls, Q: Tensor, G: Tensor, A: Tensor) -> "QFactor | None":
        """Factor Q (b|1, n, n); None if some element is not PD or is badly conditioned."""
        L = q_cholesky(Q)
        if L is None:
            return None
        n, bc = Q.shape[-1], max(G.shape[0], A.shape[0])
        C = torch.cat([G.expand(bc, -1, n), A.expand(bc, -1, n)], -2)
        Ct = C.mT if L.shape[0] == 1 else C.mT.expand(L.shape[0], n, C.shape[-2])
        V = chol_solve(L, Ct)
        P = torch.matmul(C, V)
        return cls(L, V, 0.5 * (P + P.mT))

    def take(self, idx: Tensor) -> "QFactor":
        def sel(t: Tensor) -> Tensor:
            return t if t.shape[0] == 1 else t.index_select(0, idx)

        return QFactor(sel(self.L), sel(self.V), sel(self.P))


def q_cholesky(Q: Tensor) -> Tensor | None:
    """Cholesky factor of Q (b|1, n, n) if every element is PD and well-conditioned."""
    L, info = torch.linalg.cholesky_ex(Q)
    if bool((info != 0).any()):
        return None
    diag = L.diagonal(dim1=-2, dim2=-1)
    ratio = diag.amax(-1) / diag.amin(-1)
    if not bool(torch.isfinite(ratio).all()) or float(ratio.amax()) ** 2 > _COND_LIMIT:
        return None
    return L


def prefer_dual(n: int, m: int, k: int, iterations: int = 10) -> bool:
    """Whether the dual reduction is clearly cheaper (flop model, ~10 iterations)."""
    c = m + k
    if m == 0 or c >= n:
        return False
    primal = iterations * (m * n * n + n ** 3 / 3)
    dual = n ** 3 / 3 + 2 * n * n * c + n * c * c + iterations * (c ** 3 / 3 + 4 * n * c + 4 * n * n)
    return dual < 0.5 * primal


@dataclass
class DualKKTFactor(_Refined):
    """Reduced KKT system solved through Q (see module docstring); Ls (b, m+k, m+k)."""

    data: QPData
    d: Tensor
    Ls: Tensor
    broken: Tensor
    refine_steps: int

    @classmethod
    def factor(cls, data: QPData, d: Tensor, refine_steps: int) -> "DualKKTFactor | None":
        """None when the Schur complement's Cholesky fails for some element."""
        qf = data.qf
        batch, k = d.shape[0], data.k
        e = torch.cat([1.0 / d, d.new_zeros(batch, k)], -1)
        S = qf.P + torch.diag_embed(e)
        Ls, info = torch.linalg.cholesky_ex(S)
        if bool((info != 0).any()):
            return None
        return cls(data, d, Ls, torch.zeros(batch, dtype=torch.bool, device=d.device), refine_steps)

    def _solve_aug(self, r1: Tensor, r2: Tensor) -> tuple[Tensor, Tensor]:
        """Solve [[Q, Cᵀ], [C, −E]] [dx; y] = [r1; r2]; r1 (b, n), r2 (b, m+k)."""
        qf = self.data.qf
        t = chol_solve(qf.L, r1.unsqueeze(-1)).squeeze(-1)
        y = chol_solve(self.Ls, (mtv(qf.V, r1) - r2).unsqueeze(-1)).squeeze(-1)
        return t - mv(qf.V, y), y

    def solve(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        """Solve H dx + Aᵀ dν = rx, A dx = re through the augmented system.

        Refinement is on the augmented system, whose residual stays bounded: the residual
        of H dx would multiply rounding errors in G dx by d = λ/s, which grows without
        bound on active constraints.
        """
        data, m = self.data, self.data.m
        e = torch.cat([1.0 / self.d, self.d.new_zeros(rx.shape[0], data.k)], -1)
        r2 = torch.cat([rx.new_zeros(rx.shape[0], m), re], -1)
        dx, y = self._solve_aug(rx, r2)
        for _ in range(self.refine_steps):
            res1 = rx - mv(data.Q, dx) - mtv(data.G, y[:, :m])
            res2 = r2 + e * y
            res2[:, :m] -= mv(data.G, dx)
            if data.k:
                res1 = res1 - mtv(data.A, y[:, m:])
                res2[:, m:] -= mv(data.A, dx)
            cx, cy = self._solve_aug(res1, res2)
            dx, y = dx + cx, y + cy
        return dx, y[:, m:]

    def take(self, idx: Tensor) -> "DualKKTFactor":
        return DualKKTFactor(self.data.take(idx), self.d[idx], self.Ls[idx], self.broken[idx], self.refine_steps)


def factor_kkt(data: QPData, d: Tensor, reg: float, refine_steps: int) -> "KKTFactor | DualKKTFactor":
    """The dual reduction when ``data.qf`` is set and succeeds, else `KKTFactor`.

    (`qp_kkt_solvers.primal_factor` tries the tridiagonal factor of ``data.tri`` first.)"""
    if data.qf is not None:
        f = DualKKTFactor.factor(data, d, refine_steps)
        if f is not None:
            return f
    return KKTFactor.factor(data, d, reg, refine_steps)
