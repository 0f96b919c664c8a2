"""Implicit differentiation of the QP's KKT conditions (OptNet, Amos & Kolter 2017, §3).

At the solution z = (x, λ, ν), with s = h − Gx, the KKT map

    F(z) = [Qx + p + Gᵀλ + Aᵀν;  diag(λ)(Gx − h);  Ax − b] = 0

defines z(θ). For upstream gradients ḡ = (g_x, g_λ, g_ν) the adjoint w = −J_zᵀ⁻¹ ḡ solves

    Q w_x + GᵀΛ w_λ + Aᵀ w_ν = −g_x,   G w_x − S w_λ = −g_λ,   A w_x = −g_ν.

With u = Λ w_λ and D = diag(λ/s), constraint i satisfies G_i w_x − u_i/D_i = −g_λi.
Then dL/dθ = wᵀ ∂F/∂θ gives

    ∇p = w_x,  ∇Q = ½(w_x xᵀ + x w_xᵀ),  ∇G = λ w_xᵀ + u xᵀ,  ∇h = −u,
    ∇A = ν w_xᵀ + w_ν xᵀ,  ∇b = −w_ν.

Including g_λ and g_ν makes the duals differentiable too (OptNet only needs g_x).

Why the forward's reduced factorisation is *not* reused: eliminating every constraint
(u = D(G w_x + g_λ), H = Q + GᵀDG) multiplies a residual that is O(1/D_i) by D_i for the
active constraints, where D_i = λ_i/s_i → ∞ at the solution. We measured the resulting
gradient error at ~5e-5 for a forward tolerance of 1e-9, ~1e-3 at 1e-11 and O(1) at 1e-13.
So only the inactive constraints (D_i < 1, where elimination is harmless) are
eliminated, and the active ones stay explicit in the bordered system

    [ Q + G_IᵀD_I G_I   G_Aᵀ        Aᵀ ] [w_x]   [−g_x − G_IᵀD_I g_λI]
    [ G_A              −D_A⁻¹       0  ] [u_A] = [−g_λA              ]
    [ A                 0           0  ] [w_ν]   [−g_ν               ]

whose entries stay bounded as the solution is approached. We then take the limits
D_I → 0 and D_A⁻¹ → 0 (up to a 100·eps shift): it becomes the KKT matrix of the
equality-constrained QP on the active set, which is the exact derivative under strict
complementarity; keeping the interior point's finite D adds an O(min(D, 1/D)) error
that we measured at 1e-5 on random problems. Weakly active constraints (λ_i and s_i
both tiny) are classified by D_i ≥ 1, where the derivative is not unique anyway. It is padded to the largest active-set
size in the batch and solved in chunks to bound memory: when Q is positive definite
(and not badly conditioned) through the Schur complement on Q,

    (C Q⁻¹ Cᵀ + E) y = C Q⁻¹ r₁ − r₂,   w_x = Q⁻¹ (r₁ − Cᵀ y),   C = [G_A; A],

an (a+k)³ LU per element, else by batched LU of the whole bordered matrix (which of the two
is `QPSettings.kkt_solver`'s choice, `qp_kkt_solvers`, the same object the forward asks); either way
with one step of iterative refinement against the bordered system.
Elements that did not converge get NaN gradients: a wrong-but-finite gradient would
be silently absorbed by an optimiser, and shared inputs then show NaN as well.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gridlearn.implicit.qp_ipm import IPMResult, QPWarmStart, interior_point
from gridlearn.implicit.qp_kkt import QPData, chol_solve, mtv, mv
from gridlearn.implicit.qp_kkt_solvers import KKT_SOLVERS
from gridlearn.implicit.qp_scaling import objective_scale, psd_mask
from gridlearn.implicit.qp_tridiag import TridiagonalPattern
from gridlearn.implicit.solution import Status


def _reduce(grad: Tensor, like_shape: torch.Size) -> Tensor:
    """Sum a batched gradient (B, ...) down to an input's (broadcast) shape."""
    if grad.shape == like_shape:
        return grad
    if len(like_shape) < grad.dim():
        return grad.sum(0)
    return grad.sum(0, keepdim=True)


def _outer(pairs: list[tuple[Tensor, Tensor]], like_shape: torch.Size) -> Tensor:
    """Σ_j a_j b_jᵀ per element (B, r, c), reduced to ``like_shape``.

    For a shared input (leading dim 1) the batch sum Σ_b a_b b_bᵀ is one matmul
    aᵀ b (r, B)·(B, c): never materialise the (B, r, c) outer products (415 MB for
    the DC-OPF shape at B=2000).
    """
    B = pairs[0][0].shape[0]
    if like_shape[0] == 1 and B > 1:
        return sum(a.mT @ b for a, b in pairs).unsqueeze(0)
    return _reduce(sum(a.unsqueeze(2) * b.unsqueeze(1) for a, b in pairs), like_shape)


_CHUNK = 1024


def _adjoint(data: QPData, s: Tensor, lam: Tensor, gx: Tensor, glam: Tensor, gnu: Tensor, Lq: Tensor | None):
    """Solve the bordered adjoint system of the module docstring -> (w_x, u, w_ν).

    ``Lq``: Cholesky factor of Q (b|1, n, n) when Q is PD and well-conditioned (see
    `qp_kkt.q_cholesky`), else None.
    """
    B, n = gx.shape
    outs = []
    for lo in range(0, B, _CHUNK):
        hi = min(B, lo + _CHUNK)
        idx = torch.arange(lo, hi, device=gx.device)
        sub = data.take(idx) if B > 1 else data
        L = None if Lq is None else (Lq if Lq.shape[0] == 1 else Lq[lo:hi])
        outs.append(_adjoint_chunk(sub, s[lo:hi], lam[lo:hi], gx[lo:hi], glam[lo:hi], gnu[lo:hi], L))
    return tuple(torch.cat(parts) for parts in zip(*outs))


def _adjoint_chunk(data: QPData, s: Tensor, lam: Tensor, gx: Tensor, glam: Tensor, gnu: Tensor,
                   Lq: Tensor | None):
    B, n = gx.shape
    m, k = lam.shape[-1], gnu.shape[-1]
    dt = gx.dtype
    d = lam / s.clamp_min(torch.finfo(dt).tiny)
    active = d >= 1.0
    # Inactive constraints take their limit λ_i = 0 exactly (D_i → 0): keeping the
    # interior point's D_i = μ/s_i² adds an O(D_i) error (measured 3e-5 at tol 1e-9).
    # With D_I = 0 the eliminated block Gᵀ D_I G vanishes: the (1,1) block is Q itself.
    a = int(active.sum(-1).max()) if m else 0
    # Active constraints first (stable sort keeps their order), padded to a rows.
    order = torch.sort(active.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :a]
    valid = torch.gather(active, 1, order)
    G = data.G.expand(B, m, n)
    Ga = torch.gather(G, 1, order.unsqueeze(-1).expand(B, a, n)) * valid.unsqueeze(-1)
    # Padded rows read  −y = 0.
    # Active constraints likewise take their limit s_i = 0 (D_i⁻¹ → 0), but keep a tiny
    # −δ on the diagonal so degenerate active sets (dependent rows) stay factorable.
    delta = 100 * torch.finfo(dt).eps
    e = torch.where(valid, torch.full_like(Ga[..., 0], delta), torch.full_like(Ga[..., 0], 1.0))
    # Constraint block C = [G_A; A] (B, a+k, n) and −E its diagonal block.
    C = torch.cat([Ga, data.A.expand(B, k, n)], 1)
    e = torch.cat([e, e.new_zeros(B, k)], -1)
    r1 = -gx
    r2 = torch.cat([-torch.gather(glam, 1, order) * valid, -gnu], -1)
    if Lq is not None:
        wx, y = _solve_schur(data.Q, Lq, C, e, r1, r2)
    else:
        wx, y = _solve_bordered(data.Q.expand(B, n, n), C, e, r1, r2)
    ya, wnu = y[:, :a], y[:, a:]
    u = torch.zeros_like(glam)
    if a:
        u = u.scatter(1, order, torch.where(valid, ya, torch.gather(u, 1, order)))
    return wx, u, wnu


def _solve_bordered(H: Tensor, C: Tensor, e: Tensor, r1: Tensor, r2: Tensor) -> tuple[Tensor, Tensor]:
    """[[H, Cᵀ], [C, −diag(e)]] [w; y] = [r1; r2] by dense batched LU (any PSD H).

    H (B, n, n), C (B, c, n), e (B, c), r1 (B, n), r2 (B, c).
    """
    B, n = r1.shape
    N = n + C.shape[1]
    K = r1.new_zeros(B, N, N)
    K[:, :n, :n] = H
    K[:, :n, n:] = C.mT
    K[:, n:, :n] = C
    K[:, n:, n:] = torch.diag_embed(-e)
    rhs = torch.cat([r1, r2], -1)
    LU, piv, _ = torch.linalg.lu_factor_ex(K)
    sol = torch.linalg.lu_solve(LU, piv, rhs.unsqueeze(-1)).squeeze(-1)
    # One step of iterative refinement: cheap, and recovers digits lost to pivoting.
    sol = sol + torch.linalg.lu_solve(LU, piv, (rhs - mv(K, sol)).unsqueeze(-1)).squeeze(-1)
    return sol[:, :n], sol[:, n:]


def _solve_schur(Q: Tensor, Lq: Tensor, C: Tensor, e: Tensor, r1: Tensor, r2: Tensor) -> tuple[Tensor, Tensor]:
    """The same system through Q = Lq Lqᵀ (PD): (C Q⁻¹ Cᵀ + E) y = C Q⁻¹ r1 − r2,
    w = Q⁻¹ (r1 − Cᵀ y). Costs an (a+k)³ LU per element instead of (n+a+k)³; the
    Schur complement is symmetric but may be only semi-definite (+δ) for degenerate
    active sets, hence LU rather than Cholesky. Q (B|1, n, n), Lq (B|1, n, n).
    """
    c = C.shape[1]
    if c == 0:
        return chol_solve(Lq, r1.unsqueeze(-1)).squeeze(-1), r2
    V = chol_solve(Lq, C.mT)  # Q⁻¹Cᵀ (B, n, c)
    S = torch.matmul(C, V) + torch.diag_embed(e)
    LU, piv, _ = torch.linalg.lu_factor_ex(S)

    def once(q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        t = chol_solve(Lq, q1.unsqueeze(-1)).squeeze(-1)
        y = torch.linalg.lu_solve(LU, piv, (mv(C, t) - q2).unsqueeze(-1)).squeeze(-1)
        return t - mv(V, y), y

    w, y = once(r1, r2)
    # One step of iterative refinement on the full bordered system.
    cw, cy = once(r1 - mv(Q, w) - mtv(C, y), r2 - mv(C, w) + e * y)
    return w + cw, y + cy


def _nan_result(batch: int, n: int, m: int, k: int, like: Tensor) -> IPMResult:
    """An all-NONCONVEX result (nothing was solved)."""
    nan = float("nan")
    f = lambda *shape: like.new_full(shape, nan)  # noqa: E731
    status = torch.full((batch,), Status.NONCONVEX.code, dtype=torch.long, device=like.device)
    return IPMResult(f(batch, n), f(batch, m), f(batch, m), f(batch, k), status,
                     like.new_full((batch,), float("inf")), torch.zeros(batch, dtype=torch.long, device=like.device))


def _run(settings: Any, warm: QPWarmStart | None, batch: int, Q, p, G, h, A, b) -> tuple[IPMResult, Tensor | None]:
    """Interior point on already scaled, convex inputs -> (result, Q's Cholesky or None)."""
    solver = KKT_SOLVERS[settings.kkt_solver]
    qf = solver.q_factor(Q, G, A)
    # H = Q + GᵀDG tridiagonal for every D (ramp-limited schedules): an O(n) LDLᵀ inside the
    # primal factor (`qp_tridiag`); solvers with their own factor ignore it.
    tri = None if qf is not None else TridiagonalPattern.build(Q, G, A)
    data = QPData(Q, p, G, h, A, b, None if qf is not None else QPData.outer_rows(G), qf, tri)
    tol = max(settings.tol, 1000 * torch.finfo(Q.dtype).eps)
    res = interior_point(
        data, batch, solver=solver, tol=tol, eps_inf=settings.eps_inf, max_iter=settings.max_iter,
        reg=settings.reg, refine_steps=settings.refine_steps,
        step_fraction=settings.step_fraction, warm_start=warm,
        warm_push=settings.warm_push,
    )
    _retry_bordered(settings, warm, res, Q, p, G, h, A, b, tol)
    return res, None if qf is None else qf.L


_RETRIED = (Status.MAX_STEPS.code, Status.NUMERICAL.code)


def _retry_bordered(settings: Any, warm: QPWarmStart | None, res: IPMResult, Q, p, G, h, A, b, tol: float) -> None:
    """Re-solve, with the bordered LU, the elements that ended MAX_STEPS or NUMERICAL (in place).

    Why: near the solution D = λ/s spans many decades and the Cholesky of H = Q + GᵀDG can
    lose the digits the last steps need; the iterate then degrades instead of converging,
    and whether it does depends on rounding (case_RTS_GMLC's DC-OPF: CONVERGED alone,
    MAX_STEPS in a batch of two). The bordered LU, refined against the unshifted system,
    does not. Only a CONVERGED re-solve replaces the first result; elements that finished
    are untouched, so batches that converge cost nothing more.
    """
    if settings.kkt_solver == "bordered_lu":
        return
    failed = (res.status == _RETRIED[0]) | (res.status == _RETRIED[1])
    if not bool(failed.any()):
        return
    idx = torch.nonzero(failed).flatten()
    sub = [t if t.shape[0] == 1 else t.index_select(0, idx) for t in (Q, p, G, h, A, b)]
    data = QPData(*sub, QPData.outer_rows(sub[2]), None, None)
    ws = None if warm is None else QPWarmStart(warm.x[idx], warm.s[idx], warm.lam[idx], warm.nu[idx])
    again = interior_point(
        data, idx.numel(), solver=KKT_SOLVERS["bordered_lu"], tol=tol, eps_inf=settings.eps_inf,
        max_iter=settings.max_iter, reg=settings.reg, refine_steps=settings.refine_steps,
        step_fraction=settings.step_fraction, warm_start=ws, warm_push=settings.warm_push,
    )
    ok = again.status == Status.CONVERGED.code
    if not bool(ok.any()):
        return
    dst = idx[ok]
    for name in ("x", "s", "lam", "nu", "status", "residual"):
        getattr(res, name)[dst] = getattr(again, name)[ok]
    res.iterations[dst] = res.iterations[dst] + again.iterations[ok]


def _solve_convex_part(settings: Any, warm: QPWarmStart | None, batch: int, convex: Tensor,
                       ins: list[Tensor]) -> tuple[IPMResult, Tensor | None]:
    """Solve the elements whose Q passed `psd_mask`; the others come back NONCONVEX."""
    Q, G, A = ins[0], ins[2], ins[4]
    n, m, k = Q.shape[-1], G.shape[-2], A.shape[-2]
    ok = convex.expand(batch) if convex.shape[0] == 1 else convex
    if bool(ok.all()):
        return _run(settings, warm, batch, *ins)
    full = _nan_result(batch, n, m, k, Q)
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return full, None
    sub = [t if t.shape[0] == 1 else t.index_select(0, idx) for t in ins]
    ws = None if warm is None else QPWarmStart(warm.x[idx], warm.s[idx], warm.lam[idx], warm.nu[idx])
    res, _ = _run(settings, ws, idx.numel(), *sub)
    for name in ("x", "s", "lam", "nu", "status", "residual", "iterations"):
        getattr(full, name)[idx] = getattr(res, name)
    return full, None


class QPFunction(torch.autograd.Function):
    """x, λ, ν = QP(Q, p, G, h, A, b); inputs already validated and broadcast-ready.

    Inputs carry a leading batch dim of size B or 1 (shared). ``settings`` is a
    `gridlearn.implicit.qp.QPSettings`; ``out`` is a one-slot list receiving the
    `IPMResult` (status, iterations...; duals in the caller's units) since autograd
    outputs must be tensors. The solve and the backward work on the objective-scaled
    problem (σQ, σp) of `qp_scaling`, whose duals are σλ, σν; elements whose Q is not
    PSD are not solved and come back NONCONVEX.
    """

    @staticmethod
    def forward(ctx: Any, settings: Any, warm: QPWarmStart | None, batch: int, shapes: tuple,
                out: list, Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor, b: Tensor):
        sigma = objective_scale(Q, p)
        Qs, ps = Q * sigma[:, None, None], p * sigma[:, None]
        sig_b = sigma.expand(batch)[:, None]
        if warm is not None:
            warm = QPWarmStart(warm.x, warm.s, warm.lam * sig_b, warm.nu * sig_b)
        res, Lq = _solve_convex_part(settings, warm, batch, psd_mask(Qs), [Qs, ps, G, h, A, b])
        # Caller's units for everything that leaves; the scaled duals stay for the backward.
        out.append(IPMResult(res.x, res.s, res.lam / sig_b, res.nu / sig_b, res.status,
                             res.residual, res.iterations))
        ctx.save_for_backward(Qs, ps, G, h, A, b)
        ctx.res = res
        ctx.sigma = sig_b
        ctx.Lq = Lq  # reused by the backward's Schur solve
        ctx.settings = settings
        ctx.shapes = shapes
        return res.x, res.lam / sig_b, res.nu / sig_b

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gx: Tensor | None, glam: Tensor | None, gnu: Tensor | None):
        res: IPMResult = ctx.res
        x, lam, nu = res.x, res.lam, res.nu  # duals of the scaled problem
        sig = ctx.sigma  # (B, 1)
        B, n = x.shape
        bad = res.status != Status.CONVERGED.code
        # Elements that did not converge (NONCONVEX ones are NaN) take a finite stand-in so
        # they cannot disturb the batched solves; their gradients are set to NaN below.
        if bool(bad.any()):
            keep = ~bad[:, None]
            x = torch.where(keep, x, torch.zeros_like(x))
            lam = torch.where(keep, lam, torch.ones_like(lam))
            nu = torch.where(keep, nu, torch.zeros_like(nu))
            s_b = torch.where(keep, res.s, torch.ones_like(res.s))
        else:
            s_b = res.s
        gx = torch.zeros_like(x) if gx is None else gx
        # L(x, λ, ν) = L(x, λ_s/σ, ν_s/σ): cotangents of the scaled duals are ḡ/σ.
        glam = torch.zeros_like(lam) if glam is None else glam / sig
        gnu = torch.zeros_like(nu) if gnu is None else gnu / sig
        data = QPData(*ctx.saved_tensors, None)
        # The same setting as the forward chooses the adjoint's factorisation.
        Lq = KKT_SOLVERS[ctx.settings.kkt_solver].adjoint_cholesky(data.Q, ctx.Lq)
        wx, u, wnu = _adjoint(data, s_b, lam, gx, glam, gnu, Lq)
        if bool(bad.any()):
            nan = float("nan")
            wx = wx.masked_fill(bad[:, None], nan)
            wnu = wnu.masked_fill(bad[:, None], nan)
            u = u.masked_fill(bad[:, None], nan)
        need = ctx.needs_input_grad[5:]
        sQ, sp, sG, sh, sA, sb = ctx.shapes
        grads: list[Tensor | None] = [None] * 6
        # Q and p enter the solved problem as σQ and σp (σ is locally constant: the
        # scaled problem's solution scales exactly with it).
        wxs = wx * sig
        if need[0]:
            g = _outer([(wxs, x)], sQ)
            grads[0] = 0.5 * (g + g.mT)
        if need[1]:
            grads[1] = _reduce(wxs, sp)
        if need[2]:
            grads[2] = _outer([(lam, wx), (u, x)], sG)
        if need[3]:
            grads[3] = _reduce(-u, sh)
        if need[4]:
            grads[4] = _outer([(nu, wx), (wnu, x)], sA)
        if need[5]:
            grads[5] = _reduce(-wnu, sb)
        return (None, None, None, None, None, *grads)
