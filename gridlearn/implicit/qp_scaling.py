"""The QP layer's input contract: objective scaling and the convexity check.

Objective scaling. The interior point solves the equivalent problem (σQ, σp, G, h, A, b)
with σ a power of two chosen so that ‖σp‖_∞ lies in [2, 4) (or, when p is zero or below
2⁻³⁰‖Q‖_max, so that 2⁻³⁰‖σQ‖_max does); this is the cost scaling of OSQP (Stellato et
al. 2020) and Clarabel. [2, 4) rather than [½, 1) keeps the "1 +" in the residual
denominators small next to ‖σp‖, which measured 2-5x more accurate x at the same tol. Its primal solution is
the same x, its duals are σλ and σν. Because σ is computed from (Q, p), the scaled
problem, and with it every iterate and every stopping test, is unchanged when (Q, p)
becomes s·(Q, p): the stopping tests are invariant under that map for any s > 0 (exactly
so when s is a power of two; otherwise up to the rounding of s·Q itself). A power of two
multiplies without rounding. When Q is shared by the batch, σ is shared too (so Q stays
one matrix): it is computed from ‖Q‖ and the largest ‖p_b‖ in the batch.

Convexity. Q (after scaling) is accepted as positive semidefinite when the Cholesky
factorisation of Q + δI succeeds with δ = 100·n·eps·‖Q‖_max (+ the smallest normal
number, so that Q = 0 passes). Success shows λ_min(Q) > −δ up to the factorisation's own
rounding error (of order n·eps·‖Q‖, well below δ), and a Q with λ_min(Q) < −δ makes it
fail: such elements are reported NONCONVEX. Eigenvalues in (−δ, 0) are rounding noise
of a PSD matrix as far as float64 can tell, and are accepted. A diagonal Q is tested
exactly instead (every entry >= 0): its eigenvalues are its entries. This is
the global test: a Q that is indefinite but positive definite on the null space of A
(convex only on the feasible set) is reported NONCONVEX as well; pass Q + ρAᵀA and
p − ρAᵀb instead, which has the same solution and duals.
"""

from __future__ import annotations

import torch
from torch import Tensor


_Q_WEIGHT = 2.0 ** -30


def objective_scale(Q: Tensor, p: Tensor) -> Tensor:
    """σ per element (shape (1,) when Q is shared, else (B,)); a power of two, > 0."""
    qn = Q.detach().abs().amax((-2, -1))
    pn = p.detach().abs().amax(-1) if p.shape[-1] else torch.zeros_like(p[..., 0])
    if Q.shape[0] == 1:
        pn = pn.amax().reshape(1)
    # ‖p‖ sets the scale (the dual residual Qx + p + Gᵀλ + Aᵀν is measured in p's units);
    # ‖Q‖ only when p is zero or negligible, so that σQ cannot overflow.
    den = torch.maximum(pn, _Q_WEIGHT * qn)
    _, e = torch.frexp(den)  # den = m·2^e, m in [½, 1)
    sigma = torch.ldexp(torch.ones_like(den), 2 - e)  # ‖σp‖ in [2, 4)
    ok = (den > 0) & torch.isfinite(sigma) & (sigma > 0)
    return torch.where(ok, sigma, torch.ones_like(den))


def psd_mask(Q: Tensor) -> Tensor:
    """(b,) bool: which elements of Q (b|1, n, n) pass the convexity test above."""
    n = Q.shape[-1]
    if n == 0:
        return torch.ones(Q.shape[0], dtype=torch.bool, device=Q.device)
    Qd = Q.detach()
    fin = torch.finfo(Qd.dtype)
    delta = 100 * n * fin.eps * Qd.abs().amax((-2, -1)) + fin.tiny
    diag = Qd.diagonal(dim1=-2, dim2=-1)
    if not bool(Qd.count_nonzero() - diag.count_nonzero()):
        # Diagonal Q (e.g. separable costs): its eigenvalues are its entries, exactly (no
        # factorisation, so no rounding to allow for), and a negative one is a nonconvex
        # problem however small: diag(1e8, −1e-6) on |x₂| ≤ 1000 passed the δ test above
        # and came back CONVERGED at a saddle, objective 0 against the minimum −0.5.
        # (−0.0 >= 0; NaN fails.) This also skips a batched n³ factorisation per solve.
        return (diag >= 0).all(-1)
    eye = torch.eye(n, dtype=Qd.dtype, device=Qd.device)
    _, info = torch.linalg.cholesky_ex(Qd + delta[:, None, None] * eye)
    return info == 0


__all__ = ["objective_scale", "psd_mask"]
