"""`QPLayer` and `solve_qp`: batched differentiable convex QPs by primal-dual interior point.

Solves, for every batch element,

    minimise ½ xᵀQx + pᵀx   s.t.   Gx ≤ h,   Ax = b,

and differentiates the solution x and the duals λ (of Gx ≤ h) and ν (of Ax = b) with
respect to Q, p, G, h, A, b by implicit differentiation of the KKT conditions
(Amos & Kolter 2017, "OptNet"). The forward pass is `qp_ipm.interior_point`
(Mehrotra predictor-corrector, infeasibility certificates), the reduced KKT algebra is
`qp_kkt`, and the backward equations are in `qp_backward`.

Shapes: Q (n, n) or (B, n, n); p (n,) or (B, n); G (m, n) or (B, m, n); h (m,) or (B, m);
A (k, n) or (B, k, n); b (k,) or (B, k). Any input may be shared (no batch dim) or
batched; shared inputs receive gradients summed over the batch. Outputs are (B, n),
(B, m), (B, k), or unbatched when no input has a batch dim.

Edge cases, decided: G=None/h=None or G with 0 rows means no inequalities (an
equality-constrained or unconstrained QP is solved by the same code, by one Newton
step); A=None/b=None means no equalities. Q must be symmetric (asymmetry above
1e-5·(1 + max|Q|) is rejected; the symmetric part is used). A batch of size 0 gives
empty outputs.

Contract (see `qp_scaling`):

* Convexity is checked, per element, by a Cholesky factorisation of Q + δI with
  δ = 100·n·eps·‖Q‖_max (after objective scaling). An element whose Q fails it is not
  solved: status NONCONVEX, x, λ, ν NaN, NaN gradients (`QPLayer.forward` raises
  `SolverFailure` naming it). A NONCONVEX element is never CONVERGED. The test is global:
  a Q convex only on the null space of A is NONCONVEX too (add ρAᵀA to Q and −ρAᵀb to p).
* Scale invariance: the problem is solved with the objective scaled by a power of two σ
  (‖σp‖_∞ ∈ [2, 4), or ‖σQ‖ when p ≈ 0); the iterates and every stopping test (primal,
  dual, gap and certificates) are therefore the same for (Q, p) and s·(Q, p), any s > 0
  (the duals come back as λ, ν of the caller's problem, which scale with s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gridlearn._deprecation import warn_renamed
from gridlearn.errors import ConfigError, DataError
from gridlearn.implicit.qp_backward import QPFunction
from gridlearn.implicit.qp_ipm import IPMResult, QPWarmStart
from gridlearn.implicit.qp_kkt_solvers import KKT_SOLVERS
from gridlearn.implicit.solution import Solution, Status


@dataclass(frozen=True, kw_only=True)
class QPSettings:
    """Interior point settings.

    tol: relative KKT residual (primal, dual, complementarity gap) for CONVERGED; raised
        to 1000·eps of the dtype when smaller (≈1.2e-4 in float32, 2.2e-13 in float64).
    eps_inf: certificate tolerance: INFEASIBLE proves no feasible x with ‖x‖∞ < 1/eps_inf;
        UNBOUNDED proves no dual-feasible point of norm < 1/eps_inf.
    max_iter: iterations before MAX_STEPS. reg: relative diagonal shift used only when
        a Cholesky fails (PSD-only Q). refine_steps: iterative refinement per solve.
    step_fraction: fraction of the step to the boundary taken. warm_push: floor for s
        and λ when warm starting from a previous optimum.
    kkt_solver: how the KKT systems of the forward *and* the backward are solved, one of
        ``"auto"``, ``"primal_cholesky"``, ``"dual_schur"``, ``"bordered_lu"`` (see
        `gridlearn.implicit.qp_kkt_solvers`; every choice solves the same equations).

    >>> QPSettings(tol=1e-10, kkt_solver="bordered_lu").kkt_solver
    'bordered_lu'
    """

    tol: float = 1e-9
    eps_inf: float = 1e-7
    max_iter: int = 60
    reg: float = 1e-10
    refine_steps: int = 1
    step_fraction: float = 0.99
    warm_push: float = 1e-3
    kkt_solver: str = "auto"

    def __post_init__(self):
        if self.kkt_solver not in KKT_SOLVERS:
            raise ConfigError(f"kkt_solver must be one of {sorted(KKT_SOLVERS)}, got {self.kkt_solver!r}")
        for name in ("tol", "eps_inf", "reg", "warm_push"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ConfigError(f"{name} must be a number in (0, 1), got {v!r}")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ConfigError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        if not (isinstance(self.refine_steps, int) and self.refine_steps >= 0):
            raise ConfigError(f"refine_steps must be an int >= 0, got {self.refine_steps!r}")
        if not (isinstance(self.step_fraction, float) and 0.5 <= self.step_fraction < 1):
            raise ConfigError(f"step_fraction must be a float in [0.5, 1), got {self.step_fraction!r}")


def _check(name: str, t: Tensor | None, ndims: tuple[int, int], ref: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != ref.dtype or t.device != ref.device:
        raise DataError(f"{name} is {t.dtype} on {t.device} but Q is {ref.dtype} on {ref.device}; use one dtype and device")
    if t.dim() not in ndims:
        raise DataError(f"{name} must have {ndims[0]} (shared) or {ndims[1]} (batched) dims, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t.detach()).all()):
        raise DataError(f"{name} contains NaN or inf")


def _prepare(Q, p, G, h, A, b):
    """Validate inputs; return them with a leading batch dim (B or 1), B, and batched flag."""
    if not isinstance(Q, Tensor):
        raise TypeError(f"Q must be a torch.Tensor, got {type(Q).__name__}")
    if not Q.is_floating_point():
        raise DataError(f"Q must be a floating-point tensor, got {Q.dtype}")
    _check("Q", Q, (2, 3), Q)
    n = Q.shape[-1]
    if Q.shape[-2] != n:
        raise DataError(f"Q must be square, got shape {tuple(Q.shape)}")
    _check("p", p, (1, 2), Q)
    if (G is None) != (h is None):
        raise DataError("G and h must be given together (both None means no inequalities)")
    if G is None:
        G = Q.new_zeros(0, n)
        h = Q.new_zeros(0)
    if (A is None) != (b is None):
        raise DataError("A and b must be given together (both None means no equalities)")
    if A is None:
        A = Q.new_zeros(0, n)
        b = Q.new_zeros(0)
    _check("G", G, (2, 3), Q)
    _check("h", h, (1, 2), Q)
    _check("A", A, (2, 3), Q)
    _check("b", b, (1, 2), Q)
    m, k = G.shape[-2], A.shape[-2]
    for name, t, want in (("p", p, (n,)), ("G", G, (m, n)), ("h", h, (m,)), ("A", A, (k, n)), ("b", b, (k,))):
        if tuple(t.shape[-len(want):]) != want:
            raise DataError(f"{name} has shape {tuple(t.shape)}, expected (..., {', '.join(map(str, want))}) for n={n}, m={m}, k={k}")
    if k > n:
        raise DataError(f"more equalities ({k}) than variables ({n}): A cannot have full row rank")
    Qd = Q.detach()
    asym = (Qd - Qd.mT).abs().amax()
    if float(asym) > 1e-5 * (1.0 + float(Qd.abs().amax())):
        raise DataError(f"Q is not symmetric (max |Q - Qᵀ| = {float(asym):.3g}); pass a symmetric Q")
    ins = [Q, p, G, h, A, b]
    unbatched_dims = (2, 1, 2, 1, 2, 1)
    sizes = {t.shape[0] for t, d in zip(ins, unbatched_dims) if t.dim() > d}
    batched = bool(sizes)
    sizes.discard(1)
    if len(sizes) > 1:
        raise DataError(f"batch sizes do not broadcast: {sorted(sizes)}")
    B = sizes.pop() if sizes else 1
    ins = [t if t.dim() > d else t.unsqueeze(0) for t, d in zip(ins, unbatched_dims)]
    # Only the symmetric part of Q enters the objective; symmetrising here lets autograd
    # route the (symmetric) gradient to whatever the caller passed. An exactly symmetric
    # Q is left alone: the value is the same and the backward's ∇Q is already symmetric.
    if float(asym) != 0.0:
        ins[0] = 0.5 * (ins[0] + ins[0].mT)
    return ins, B, batched


def _empty_solution(ins: list[Tensor]) -> Solution:
    """The result for a batch of size 0: empty tensors, still attached to the inputs' graph."""
    Q, G, A = ins[0], ins[2], ins[4]
    n, m, k = Q.shape[-1], G.shape[-2], A.shape[-2]
    link = sum((t.sum() * 0 for t in ins if t.requires_grad), Q.new_zeros(()))
    x, lam, nu = Q.new_zeros(0, n) + link, Q.new_zeros(0, m) + link, Q.new_zeros(0, k) + link
    dev = Q.device
    empty_long = torch.zeros(0, dtype=torch.long, device=dev)
    warm = QPWarmStart(x.detach(), Q.new_zeros(0, m), lam.detach(), nu.detach())
    return Solution(value=x, status_code=empty_long, residual=Q.new_zeros(0), steps=empty_long,
                    extras={"lam": lam, "nu": nu, "slack": Q.new_zeros(0, m), "iterations": empty_long,
                            "warm_start": warm})


def solve_qp(Q: Tensor, p: Tensor, G: Tensor | None, h: Tensor | None, A: Tensor | None = None,
             b: Tensor | None = None, *, settings: QPSettings | None = None,
             warm_start: Solution | QPWarmStart | None = None) -> Solution:
    """Solve a batch of QPs; never raises on non-convergence (see module docstring).

    Returns a `Solution`: value = x (B, n), per-element status (CONVERGED, INFEASIBLE,
    UNBOUNDED, MAX_STEPS, NUMERICAL, NONCONVEX), residual (the relative KKT residual of
    the objective-scaled problem, invariant under (Q, p) -> s(Q, p)), steps (iterations); extras: ``lam``
    (B, m), ``nu`` (B, k), ``slack`` (B, m), ``iterations``, ``warm_start`` (a
    `QPWarmStart` to pass to the next, perturbed, solve). x, lam and nu are
    differentiable; elements that did not converge get NaN gradients.

    >>> import torch
    >>> Q = torch.eye(2, dtype=torch.float64)
    >>> sol = solve_qp(Q, torch.tensor([-2.0, 0.0], dtype=torch.float64),
    ...                torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    >>> sol.statuses, sol.value.tolist(), round(float(sol.extras["lam"][0]), 6)   # x₀ ≤ 1 binds, λ = 1
    ([<Status.CONVERGED: 'converged'>], [1.0, 0.0], 1.0)
    """
    settings = QPSettings() if settings is None else settings
    if not isinstance(settings, QPSettings):
        raise TypeError(f"settings must be QPSettings, got {type(settings).__name__}")
    ins, B, batched = _prepare(Q, p, G, h, A, b)
    if B == 0:
        return _empty_solution(ins)
    ws = warm_start.extras["warm_start"] if isinstance(warm_start, Solution) else warm_start
    if ws is not None:
        n, m, k = ins[0].shape[-1], ins[2].shape[-2], ins[4].shape[-2]
        want = {"x": (B, n), "s": (B, m), "lam": (B, m), "nu": (B, k)}
        for name, shape in want.items():
            got = getattr(ws, name)
            if tuple(got.shape) != shape:
                raise DataError(f"warm_start.{name} has shape {tuple(got.shape)}, expected {shape}")
    out: list[IPMResult] = []
    x, lam, nu = QPFunction.apply(settings, ws, B, tuple(t.shape for t in ins), out, *ins)
    res = out[0]
    warm = QPWarmStart(res.x, res.s, res.lam, res.nu)
    if not batched:
        x, lam, nu = x[0], lam[0], nu[0]
    return Solution(
        value=x, status_code=res.status, residual=res.residual, steps=res.iterations,
        extras={"lam": lam, "nu": nu, "slack": res.s, "iterations": res.iterations, "warm_start": warm,
                "status_notes": _certificate_scope(settings.eps_inf)},
    )


def _certificate_scope(eps_inf: float) -> dict[Status, str]:
    # The Farkas-type certificates are tested to eps_inf, so they exclude points of norm
    # below 1/eps_inf only: say so rather than claim more than was proven.
    radius = 1.0 / eps_inf
    return {Status.INFEASIBLE: f"certified for x with ‖x‖∞ < {radius:.3g} (eps_inf = {eps_inf:g})",
            Status.UNBOUNDED: f"certified for multipliers of norm < {radius:.3g} (eps_inf = {eps_inf:g})"}


_SETTING_FIELDS = ("tol", "eps_inf", "max_iter", "reg", "refine_steps", "step_fraction", "warm_push")


class QPLayer(nn.Module):
    """Differentiable batched QP layer: ``x = QPLayer()(Q, p, G, h, A, b)``.

    With ``return_duals=True`` the call returns ``(x, lam, nu)``; every output is
    differentiable w.r.t. every input. ``forward`` raises `InfeasibleError` (or
    `SolverFailure`) naming the failed batch elements; ``solve`` returns a `Solution`
    with per-element status instead. ``settings``: a `QPSettings` (default ``QPSettings()``);
    the keywords ``tol=``, ``max_iter=``... of earlier releases still work for one
    release, with a DeprecationWarning.

    >>> import torch
    >>> Q = torch.eye(2, dtype=torch.float64); p = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    >>> G = torch.tensor([[1.0, 1.0]], dtype=torch.float64); h = torch.tensor([1.0], dtype=torch.float64)
    >>> layer = QPLayer(settings=QPSettings(kkt_solver="primal_cholesky"))
    >>> layer(Q, p, G, h)                   # min ½|x|² − x₀ − x₁  s.t.  x₀ + x₁ ≤ 1
    tensor([0.5000, 0.5000], dtype=torch.float64)
    >>> layer.solve(Q, p, G, h).statuses    # per-element status instead of an exception
    [<Status.CONVERGED: 'converged'>]
    """

    def __init__(self, *, return_duals: bool = False, settings: QPSettings | None = None, **deprecated):
        super().__init__()
        if not isinstance(return_duals, bool):
            raise ConfigError(f"return_duals must be a bool, got {return_duals!r}")
        self.return_duals = return_duals
        unknown = sorted(set(deprecated) - set(_SETTING_FIELDS))
        if unknown:
            raise TypeError(f"QPLayer got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        for name in deprecated:
            warn_renamed("QPLayer", f"{name}=", f"settings=QPSettings({name}=...)")
        if settings is not None and deprecated:
            raise ConfigError("QPLayer: pass either settings= or the deprecated keywords, not both")
        if settings is None:
            settings = QPSettings(**deprecated)
        if not isinstance(settings, QPSettings):
            raise ConfigError(f"settings must be QPSettings, got {type(settings).__name__}")
        self.settings = settings

    def solve(self, Q: Tensor, p: Tensor, G: Tensor | None, h: Tensor | None, A: Tensor | None = None,
              b: Tensor | None = None, warm_start: Solution | QPWarmStart | None = None) -> Solution:
        """`solve_qp` with this layer's settings; per-element status, never raises on failure."""
        return solve_qp(Q, p, G, h, A, b, settings=self.settings, warm_start=warm_start)

    def forward(self, Q: Tensor, p: Tensor, G: Tensor | None, h: Tensor | None, A: Tensor | None = None,
                b: Tensor | None = None, warm_start: Solution | QPWarmStart | None = None):
        sol = self.solve(Q, p, G, h, A, b, warm_start=warm_start)
        sol.raise_on_failure("QPLayer")
        if self.return_duals:
            return sol.value, sol.extras["lam"], sol.extras["nu"]
        return sol.value

    def extra_repr(self) -> str:
        return f"return_duals={self.return_duals}, {self.settings}"


__all__ = ["QPLayer", "QPSettings", "QPWarmStart", "solve_qp"]
