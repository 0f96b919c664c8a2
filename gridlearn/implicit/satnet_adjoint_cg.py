"""SATNet's backward (adjoint) system solved by preconditioned conjugate gradients, batched.

The system is the one of `gridlearn.implicit.satnet_mixing.mixing_backward`: for the
unknowns o, with ``u_o`` tangent at ``v_o`` (zero rows elsewhere),

    A(U)_o = gn_o u_o + P_o sum_{j in O, j != o} c_oj u_j = rhs_o,   C = S^T S,

``gn_o = (1 + lambda) ||g_o||``. On tangent fields ``<U', A U> = sum_o (gn_o - ||s_o||^2)
u'_o . u_o + <S U', S U>``: A is symmetric, and positive definite at a (damped) local
minimum of the mixing objective, so CG applies; the preconditioner is the block diagonal
``gn_o I`` (it keeps fields tangent).

Why CG and not the coordinate sweeps the reference runs. A sweep is Gauss-Seidel on this
system. Its rate is set by the condition number kappa of ``D^{-1/2} A D^{-1/2}`` (about
kappa sweeps per decade), CG's by sqrt(kappa). As S trains on Sudoku the fixed point becomes
sharper and kappa grows; at ``lambda = 0.05`` the 40 sweeps that the paper's budget allows
then no longer reach eps, so the "mask" policy dropped gradients (the reference never checks:
it runs as many sweeps as the forward did and accepts the result). One CG iteration costs the
same multiply-adds as one sweep, ``4 m N k`` per element, but as two batched matrix
products (BLAS-3 on CPU, one GEMM each on CUDA) instead of N rank-one updates.

Stopping test: after iteration t the preconditioned residual ``<r, D^{-1} r>`` (a quadratic,
like the sweeps' objective decrease) is below ``eps`` times its value at U = 0; the residual
reported is that ratio. A direction of non-positive curvature (A not positive definite:
the forward stopped away from a local minimum) ends that element with Status.NUMERICAL,
as does a recursive residual that met eps while the true one, ``rhs - A(U)`` computed once at
the end (one more product), does not (round-off drift, float32 with a tight eps).
Each element stops on its own (its iterate is frozen), so its result does not depend on
the rest of the batch.
"""

from __future__ import annotations

import torch

from gridlearn.implicit.satnet_batch_threads import run_chunks
from gridlearn.implicit.solution import Status


def _dot(a, b):
    return (a * b).sum(dim=(1, 2))


def adjoint_cg(S, V, rhs, gn, is_out, max_iter: int, eps: float, threads: int | None = None):
    """Solve ``A(U) = rhs`` (module docstring). S ``(m, N)``; V, rhs ``(B, N, k)``;
    gn ``(B, N)`` (damped ||g||); is_out ``(B, N)`` bool.

    Returns U ``(B, N, k)``, Psi = S U per element ``(B, m, k)``, status code ``(B,)``,
    residual ``(B,)`` (float64), iterations ``(B,)``.

    On CPU the batch is cut into ``threads`` chunks (default ``torch.get_num_threads()``),
    each solved on its own thread with one intra-op thread (`satnet_batch_threads`: about
    500 small parallel regions per solve stall on a loaded machine). The elements are
    independent, so the answer is that of one batched solve. On CUDA: one batched solve.
    """
    if V.device.type != "cpu":
        return _adjoint_cg(S, V, rhs, gn, is_out, max_iter, eps)
    parts = run_chunks(lambda a, b: _adjoint_cg(S, V[a:b], rhs[a:b], gn[a:b], is_out[a:b], max_iter, eps),
                       V.shape[0], threads)
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(5))


def _adjoint_cg(S, V, rhs, gn, is_out, max_iter: int, eps: float):
    B, N, k = V.shape
    out_f = is_out.to(V.dtype).unsqueeze(2)
    sq = (S * S).sum(dim=0).view(1, N, 1)
    inv_d = out_f / gn.unsqueeze(2)  # zero on rows that are not unknowns

    def apply_a(P):
        SP = torch.matmul(S, P)  # (B, m, k)
        field = torch.matmul(S.t(), SP) - sq * P
        field = field - (field * V).sum(dim=2, keepdim=True) * V  # P_o
        return (gn.unsqueeze(2) * P + field) * out_f, SP

    U = torch.zeros_like(V)
    Psi = torch.zeros((B, S.shape[0], k), dtype=V.dtype, device=V.device)
    r = rhs * out_f
    z = r * inv_d
    p = z.clone()
    rz = _dot(r, z)
    rz0 = rz.clone()
    active = rz0 > 0  # rhs = 0: U = 0 is exact
    converged = ~active
    bad = torch.zeros_like(active)
    steps = torch.zeros(B, dtype=torch.long, device=V.device)
    residual = torch.where(active, torch.ones_like(rz0), torch.zeros_like(rz0)).double()
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        Ap, Sp = apply_a(p)
        pAp = _dot(p, Ap)
        curved = pAp > 0
        bad = bad | (active & ~curved)
        active = active & curved
        alpha = torch.where(active, rz / torch.where(curved, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        a3 = alpha.view(B, 1, 1)
        U = U + a3 * p
        Psi = Psi + a3 * Sp
        r = r - a3 * Ap
        z = r * inv_d
        rz_new = _dot(r, z)
        steps += active.long()
        rel = (rz_new / torch.where(rz0 > 0, rz0, torch.ones_like(rz0))).double()
        residual = torch.where(active, rel, residual)
        done = active & (rel < eps)
        converged = converged | done
        beta = torch.where(active, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta.view(B, 1, 1) * p
        rz = torch.where(active, rz_new, rz)
        active = active & ~done
    # CG updates r by recursion, which drifts from rhs - A(U) in finite precision (float32
    # above all): the residual reported, and the test, are those of the true residual
    AU, _ = apply_a(U)
    r_true = rhs * out_f - AU
    true_rel = (_dot(r_true, r_true * inv_d) / torch.where(rz0 > 0, rz0, torch.ones_like(rz0))).double()
    residual = torch.where(rz0 > 0, true_rel, residual)
    drifted = converged & (rz0 > 0) & ~(true_rel < eps)
    converged = converged & ~drifted
    bad = bad | drifted
    finite = torch.isfinite(U).flatten(1).all(dim=1) & torch.isfinite(residual)
    code = torch.full((B,), Status.MAX_STEPS.code, dtype=torch.long, device=V.device)
    code = torch.where(converged, torch.full_like(code, Status.CONVERGED.code), code)
    code = torch.where(bad, torch.full_like(code, Status.NUMERICAL.code), code)
    code = torch.where(finite, code, torch.full_like(code, Status.NONFINITE.code))
    return U, Psi, code, residual, steps


__all__ = ["adjoint_cg"]
