"""`CvxpyLayer`: the QP  min ½xᵀQx + pᵀx  s.t. Gx ≤ h, Ax = b  through cvxpylayers.

A thin adapter with the same call signature as `QPLayer`, used as its reference in tests
and as a peer in benchmarks. It builds one DPP cvxpy problem for fixed sizes (n, m, k)
and maps cvxpylayers' failures onto gridlearn's `Status`/errors:

* solver="DIFFCP" (cvxpylayers' default; SCS or Clarabel underneath via
  ``solver_args={"solve_method": ...}``). DIFFCP cannot take a parametric quadratic
  form, so the objective is written ½‖Lx‖² with L = chol(Q)ᵀ computed by torch
  (differentiable): Q must be positive *definite* here. A diffcp failure fails the whole
  batch, so `solve` re-solves element by element to find which elements failed and why.
* solver="MOREAU": quad_form(x, Q) with parametric Q (PSD allowed). Moreau's status is
  not exposed through cvxpylayers, so every returned point is checked against the KKT
  conditions; elements that fail the check are reported NUMERICAL.

Duals follow QPLayer's sign convention: λ ≥ 0 for Gx ≤ h, and ν with
Qx + p + Gᵀλ + Aᵀν = 0.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, nn

from gridlearn.errors import ConfigError, DataError, SolverUnavailable
from gridlearn.implicit.solution import Solution, Status

log = logging.getLogger(__name__)

_SOLVERS = ("DIFFCP", "MOREAU")


class CvxpyLayer(nn.Module):
    """QP layer through cvxpylayers for sizes n (variables), m (inequalities), k (equalities).

    ``CvxpyLayer(n, m, k, solver="DIFFCP")(Q, p, G, h, A, b)`` returns x, or
    ``(x, lam, nu)`` with ``return_duals=True``; shapes as in `gridlearn.implicit.qp`.
    ``kkt_tol`` is the relative KKT residual above which a returned point is rejected.

    The QP of `QPLayer`'s example, min ½|x|² − x₀ − x₁ s.t. x₀ + x₁ ≤ 1, through DIFFCP
    (SCS's default accuracy leaves a KKT residual of about 1e-5 here, so ``eps`` is tightened):

    >>> import torch
    >>> Q = torch.eye(2, dtype=torch.float64); p = torch.tensor([-1.0, -1.0], dtype=torch.float64, requires_grad=True)
    >>> G = torch.tensor([[1.0, 1.0]], dtype=torch.float64); h = torch.tensor([1.0], dtype=torch.float64)
    >>> x = CvxpyLayer(2, 1, solver_args={"eps": 1e-10})(Q, p, G, h)
    >>> x.flatten()[0].backward()
    >>> [round(v, 6) for v in x.flatten().tolist()], [round(v, 6) for v in p.grad.tolist()]   # x₀ = (1 − p₀ + p₁)/2
    ([0.5, 0.5], [-0.5, 0.5])
    """

    def __init__(self, n: int, m: int, k: int = 0, *, solver: str = "DIFFCP",
                 solver_args: dict | None = None, return_duals: bool = False, kkt_tol: float = 1e-5):
        super().__init__()
        for name, v, low in (("n", n, 1), ("m", m, 0), ("k", k, 0)):
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {v!r}")
        if solver not in _SOLVERS:
            raise ConfigError(f"solver must be one of {_SOLVERS}, got {solver!r}")
        if m == 0 and k == 0:
            raise ConfigError("cvxpylayers needs at least one constraint (m > 0 or k > 0)")
        if not 0 < kkt_tol < 1:
            raise ConfigError(f"kkt_tol must be in (0, 1), got {kkt_tol!r}")
        try:
            import cvxpy as cp
            from cvxpylayers.torch import CvxpyLayer as _Layer
        except ImportError as e:  # pragma: no cover - both are core dependencies
            raise SolverUnavailable(f"cvxpylayers is not importable ({e}); reinstall with scripts/setup.sh") from e
        self.n, self.m, self.k = n, m, k
        self.solver = solver
        self.return_duals = return_duals
        self.kkt_tol = kkt_tol
        args = dict(solver_args or {})
        if solver == "MOREAU":
            # Without an explicit method Moreau warns on every call.
            args.setdefault("solver", "ipm")
        self.solver_args = args
        x = cp.Variable(n)
        p = cp.Parameter(n)
        if solver == "DIFFCP":
            Q = cp.Parameter((n, n))
            objective = 0.5 * cp.sum_squares(Q @ x) + p @ x
        else:
            Q = cp.Parameter((n, n), PSD=True)
            objective = 0.5 * cp.quad_form(x, Q) + p @ x
        params, cons = [Q, p], []
        if m:
            G, h = cp.Parameter((m, n)), cp.Parameter(m)
            cons.append(G @ x <= h)
            params += [G, h]
        if k:
            A, b = cp.Parameter((k, n)), cp.Parameter(k)
            cons.append(A @ x == b)
            params += [A, b]
        variables = [x] + [c.dual_variables[0] for c in cons]
        problem = cp.Problem(cp.Minimize(objective), cons)
        self._layer = _Layer(problem, parameters=params, variables=variables, solver=solver, solver_args=args)

    def _call(self, ins: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        with warnings.catch_warnings():
            # Solver chatter (e.g. SCS accuracy warnings) is judged by our KKT check instead.
            warnings.simplefilter("ignore")
            out = self._layer(*ins)
        x = out[0]
        i = 1
        lam = nu = None
        if self.m:
            lam, i = out[i], i + 1
        if self.k:
            nu = out[i]
        lam = x.new_zeros(x.shape[:-1] + (0,)) if lam is None else lam
        nu = x.new_zeros(x.shape[:-1] + (0,)) if nu is None else nu
        return x, lam, nu

    def _inputs(self, Q, p, G, h, A, b) -> list[Tensor]:
        n, m, k = self.n, self.m, self.k
        for name, t, shape in (("Q", Q, (n, n)), ("p", p, (n,)), ("G", G, (m, n)), ("h", h, (m,)),
                               ("A", A, (k, n)), ("b", b, (k,))):
            if (m == 0 and name in "Gh") or (k == 0 and name in "Ab"):
                continue
            if not isinstance(t, Tensor) or tuple(t.shape[-len(shape):]) != shape:
                raise DataError(f"{name} must have shape (..., {shape}) for this layer, got {getattr(t, 'shape', t)}")
            if not bool(torch.isfinite(t.detach()).all()):
                raise DataError(f"{name} contains NaN or inf")
        Qs = 0.5 * (Q + Q.mT)
        if self.solver == "DIFFCP":
            L, info = torch.linalg.cholesky_ex(Qs)
            if bool((info != 0).any()):
                raise DataError("solver='DIFFCP' needs Q positive definite (it is given as ½‖Lᵀx‖²); use solver='MOREAU' for PSD Q")
            Qs = L.mT
        ins = [Qs, p]
        if m:
            ins += [G, h]
        if k:
            ins += [A, b]
        return ins

    def _kkt_ok(self, Q, p, G, h, A, b, x, lam, nu) -> Tensor:
        """Per-element check of primal/dual feasibility, stationarity and complementarity."""
        def mv(M, v):
            return torch.matmul(M, v.unsqueeze(-1)).squeeze(-1)
        r_d = mv(Q, x) + p
        worst = x.new_zeros(x.shape[:-1])
        scale = 1.0 + p.abs().amax(-1)
        if self.m:
            r_d = r_d + torch.matmul(lam.unsqueeze(-2), G).squeeze(-2)
            slack = h - mv(G, x)
            hs = 1.0 + h.abs().amax(-1)
            worst = torch.maximum(worst, (-slack).clamp_min(0).amax(-1) / hs)
            worst = torch.maximum(worst, (-lam).clamp_min(0).amax(-1) / scale)
            worst = torch.maximum(worst, (lam * slack).abs().amax(-1) / (hs * scale))
        if self.k:
            r_d = r_d + torch.matmul(nu.unsqueeze(-2), A).squeeze(-2)
            worst = torch.maximum(worst, (mv(A, x) - b).abs().amax(-1) / (1.0 + b.abs().amax(-1)))
        worst = torch.maximum(worst, r_d.abs().amax(-1) / scale)
        return worst.detach()

    def solve(self, Q: Tensor, p: Tensor, G: Tensor | None, h: Tensor | None,
              A: Tensor | None = None, b: Tensor | None = None) -> Solution:
        """Per-element status instead of raising: value = x (B, n), extras lam, nu."""
        ins = self._inputs(Q, p, G, h, A, b)
        try:
            x, lam, nu = self._call(ins)
            failed_all = None
        except Exception as e:  # diffcp raises SolverError for the whole batch
            failed_all = e
        batch_shape = torch.broadcast_shapes(*(t.shape[:-1] for t in (p,) + ((h,) if self.m else ()) + ((b,) if self.k else ())))
        B = batch_shape[0] if len(batch_shape) else 1
        status = torch.full((B,), Status.CONVERGED.code, dtype=torch.long)
        if failed_all is not None:
            log.info("cvxpylayers failed on the batch (%s); re-solving element by element", failed_all)
            xs, lams, nus = [], [], []
            dt = p.dtype
            for i in range(B):
                one = [t[i] if t.dim() > d else t for t, d in zip(ins, self._unbatched_dims())]
                try:
                    xi, li, ni = self._call(one)
                except Exception as e:
                    msg = str(e).lower()
                    code = (Status.INFEASIBLE if "infeasible" in msg and "dual" not in msg
                            else Status.UNBOUNDED if "unbounded" in msg or "dual infeasible" in msg
                            else Status.NUMERICAL)
                    status[i] = code.code
                    xi = torch.full((self.n,), float("nan"), dtype=dt)
                    li = torch.full((self.m,), float("nan"), dtype=dt)
                    ni = torch.full((self.k,), float("nan"), dtype=dt)
                xs.append(xi), lams.append(li), nus.append(ni)
            x, lam, nu = torch.stack(xs), torch.stack(lams), torch.stack(nus)
        if x.dim() == 1:
            x, lam, nu = x[None], lam[None], nu[None]
        Qs = 0.5 * (Q + Q.mT)
        worst = self._kkt_ok(Qs, p, G, h, A, b, x, lam, nu)
        bad = (status == Status.CONVERGED.code) & ~(worst <= self.kkt_tol)
        status[bad] = Status.NUMERICAL.code
        return Solution(value=x, status_code=status, residual=worst, steps=torch.zeros(B, dtype=torch.long),
                        extras={"lam": lam, "nu": nu})

    def _unbatched_dims(self) -> list[int]:
        dims = [2, 1] + ([2, 1] if self.m else []) + ([2, 1] if self.k else [])
        return dims

    def forward(self, Q: Tensor, p: Tensor, G: Tensor | None, h: Tensor | None,
                A: Tensor | None = None, b: Tensor | None = None):
        sol = self.solve(Q, p, G, h, A, b)
        sol.raise_on_failure(f"CvxpyLayer({self.solver})")
        if self.return_duals:
            return sol.value, sol.extras["lam"], sol.extras["nu"]
        return sol.value


__all__ = ["CvxpyLayer"]
