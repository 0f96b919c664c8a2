"""Batched iterative solvers for fixed points z = f(z) and roots g(y) = 0.

Every solver is a frozen dataclass of settings, validated at construction (``ConfigError``),
with two methods that never raise on non-convergence and return a `Solution`:

- ``solve_fixed_point(f, z0)``: find z with f(z) = z; residual ``‖f(z) - z‖``.
- ``solve_root(g, y0, jacobian=None)``: find y with g(y) = 0; residual ``‖g(y)‖``.

Shapes: the state is flat, ``z: (batch, d)``; ``f``/``g`` map ``(batch, d) -> (batch, d)``
(the layers in ``fixed_point.py``/``root.py`` flatten and unflatten). Batch elements are
independent: an element that has converged (fixed point: ``‖f(z_i) - z_i‖ <= atol + rtol ‖z_i‖``;
root: ``‖g(y_i)‖ <= atol + rtol ‖g(y0_i)‖``), diverged or
gone non-finite is frozen (masked) while the others keep iterating, so a batch runs to its
slowest element without disturbing the rest.

Picard, Anderson and Broyden are fixed-point methods; they solve a root problem as the
fixed point ``y = y - g(y)`` (so they suit g whose Jacobian is close to the identity).
Newton is a root method; it solves a fixed-point problem as the root of ``z - f(z)``.

The loops are plain torch, so running them with autograd on gives the unrolled
(backprop-through-iterations) gradient used by `UnrolledAdjoint`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit.solution import Solution, Status

logger = logging.getLogger(__name__)

Map = Callable[[torch.Tensor], torch.Tensor]

_CONVERGED = Status.CONVERGED.code
_MAX_STEPS = Status.MAX_STEPS.code
_DIVERGED = Status.DIVERGED.code
_NONFINITE = Status.NONFINITE.code
_NUMERICAL = Status.NUMERICAL.code
_SINGULAR = Status.SINGULAR.code

# Kantorovich number above which a Newton root is not certified simple (see `Newton`).
# A double root gives exactly 1/2 at every iterate, a triple root 2/3; a simple root's
# number falls quadratically to 0 as the iterates converge.
_KANTOROVICH_MAX = 0.1


def _bmask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch,) bool -> broadcastable against ``like`` of shape (batch, ...)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


class _Tracker:
    """Per-element status bookkeeping: convergence, divergence, non-finite, step counts.

    ``active`` elements keep iterating. An element is DIVERGED once its residual grew for
    ``patience`` consecutive steps and is above the best residual it reached (Anderson and
    Broyden are not monotone, so a single increase means nothing).
    """

    def __init__(self, solver: "_SolverBase", res: torch.Tensor, z: torch.Tensor, root: bool = False):
        b = res.shape[0]
        # Fixed point: ‖f(z) - z‖ <= atol + rtol ‖z‖. Root: ‖g(y)‖ <= atol + rtol ‖g(y0)‖
        # (‖y‖ is in different units from g, so the reference is the initial residual).
        self.ref0 = res.detach().clone() if root else None
        dev = res.device
        self.solver = solver
        self.status = torch.full((b,), _MAX_STEPS, dtype=torch.long, device=dev)
        self.steps = torch.zeros(b, dtype=torch.long, device=dev)
        self.res = res.detach().clone()
        self.best = self.res.clone()
        self.grew = torch.zeros(b, dtype=torch.long, device=dev)
        self.active = torch.ones(b, dtype=torch.bool, device=dev)
        self._classify(z, first=True)

    def _classify(self, z: torch.Tensor, first: bool = False) -> None:
        s, res = self.solver, self.res
        # The residual is non-finite whenever z or f(z) is (inf - x = inf, inf - inf = nan),
        # and checking it is far cheaper than reducing isfinite over the state.
        finite = torch.isfinite(res)
        ref = self.ref0 if self.ref0 is not None else z.detach().norm(dim=-1)
        tol = s.atol + s.rtol * ref
        conv = finite & (res <= tol) & self.active
        nonfin = ~finite & self.active
        div = torch.zeros_like(conv)
        if s.divergence_patience > 0 and not first:
            div = self.active & finite & ~conv & (self.grew >= s.divergence_patience) & (res > self.best)
        self.status[conv] = _CONVERGED
        self.status[nonfin] = _NONFINITE
        self.status[div] = _DIVERGED
        self.active = self.active & ~(conv | nonfin | div)

    def update(self, res: torch.Tensor, z: torch.Tensor, stepped: torch.Tensor) -> None:
        """Record residuals after a step taken by the ``stepped`` elements."""
        res = res.detach()
        grew = res > self.res
        self.grew = torch.where(stepped, torch.where(grew, self.grew + 1, torch.zeros_like(self.grew)), self.grew)
        self.res = torch.where(stepped, res, self.res)
        self.best = torch.where(stepped, torch.minimum(self.best, res), self.best)
        self.steps = self.steps + stepped.long()
        self._classify(z)

    def fail(self, mask: torch.Tensor, code: int) -> None:
        self.status[mask & self.active] = code
        self.active = self.active & ~mask

    def solution(self, value: torch.Tensor, **extras) -> Solution:
        return Solution(value=value, status_code=self.status, residual=self.res, steps=self.steps, extras=dict(extras))


@dataclass(frozen=True, kw_only=True)
class _SolverBase:
    rtol: float = 1e-6
    atol: float = 1e-8
    max_steps: int = 100
    divergence_patience: int = 6  # consecutive residual increases before DIVERGED; 0 disables

    def __post_init__(self):
        if not (self.rtol >= 0 and self.atol >= 0):
            raise ConfigError(f"{type(self).__name__}: rtol and atol must be >= 0, got rtol={self.rtol}, atol={self.atol}")
        if self.rtol == 0 and self.atol == 0:
            logger.debug("%s with rtol=atol=0 can only stop at max_steps", type(self).__name__)
        if int(self.max_steps) != self.max_steps or self.max_steps < 1:
            raise ConfigError(f"{type(self).__name__}: max_steps must be a positive integer, got {self.max_steps}")
        if self.divergence_patience < 0:
            raise ConfigError(f"{type(self).__name__}: divergence_patience must be >= 0, got {self.divergence_patience}")

    # -- the two entry points ------------------------------------------------------
    def solve_fixed_point(self, f: Map, z0: torch.Tensor) -> Solution:
        raise NotImplementedError

    def solve_root(self, g: Map, y0: torch.Tensor, jacobian: Optional[Map] = None) -> Solution:
        """Root of g as the fixed point of ``y - g(y)`` (``jacobian`` is not used here)."""
        return self._iterate(lambda y: y - g(y), y0, root=True)


@dataclass(frozen=True, kw_only=True)
class _FixedPointIteration(_SolverBase):
    """Shared loop: evaluate f, propose a step for active elements, mask, track."""

    def _init_state(self, z: torch.Tensor, fz: torch.Tensor) -> dict:
        return {}

    def _propose(self, state: dict, z: torch.Tensor, fz: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_step(self, state: dict, z: torch.Tensor, fz: torch.Tensor, active: torch.Tensor) -> None:
        pass

    def solve_fixed_point(self, f: Map, z0: torch.Tensor) -> Solution:
        return self._iterate(f, z0, root=False)

    def _iterate(self, f: Map, z0: torch.Tensor, root: bool) -> Solution:
        if z0.dim() != 2:
            raise ValueError(f"solver state must be flat (batch, d), got shape {tuple(z0.shape)}")
        z = z0
        fz = f(z)
        nfev = 1
        tr = _Tracker(self, (fz - z).detach().norm(dim=-1), z, root=root)
        state = self._init_state(z, fz)
        for _ in range(int(self.max_steps)):
            if not bool(tr.active.any()):
                break
            act = tr.active.clone()
            z_new = self._propose(state, z, fz, act)
            m = _bmask(act, z)
            z = torch.where(m, z_new, z)
            fz = torch.where(m, f(z), fz)
            nfev += 1
            self._after_step(state, z, fz, act)
            tr.update((fz - z).detach().norm(dim=-1), z, act)
        extras = {"fallbacks": state["fallbacks"]} if "fallbacks" in state else {}
        return tr.solution(z, nfev=nfev, **extras)


@dataclass(frozen=True, kw_only=True)
class Picard(_FixedPointIteration):
    """Damped Picard iteration ``z <- (1 - damping) z + damping f(z)``.

    Converges when f is a contraction (for ``damping = 1``); smaller damping helps maps
    whose Jacobian has eigenvalues near -1.

    >>> import torch
    >>> from gridlearn.implicit import fixed_point_solve
    >>> sol = fixed_point_solve(lambda z: 0.5 * z + 1.0, torch.zeros(1, 1, dtype=torch.float64),
    ...                         solver=Picard(rtol=1e-12, max_steps=200))
    >>> round(float(sol.value), 9), sol.statuses      # z = ½z + 1, so z* = 2
    (2.0, [<Status.CONVERGED: 'converged'>])
    """

    damping: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.damping <= 1:
            raise ConfigError(f"Picard: damping must be in (0, 1], got {self.damping}")

    def _propose(self, state, z, fz, active):
        return z + self.damping * (fz - z)


@dataclass(frozen=True, kw_only=True)
class Anderson(_FixedPointIteration):
    """Anderson acceleration (Walker & Ni 2011, "Anderson acceleration for fixed-point
    iterations", SINUM 49(4)), in its difference form.

    With residual ``r_k = f(z_k) - z_k`` and the last ``memory`` differences
    ``ΔR = [r_{j+1} - r_j]``, ``ΔZ = [z_{j+1} - z_j]``, each element solves the
    regularised least-squares problem

        γ = argmin ‖r_k - ΔR γ‖² + λ tr(ΔRᵀΔR)/m ‖γ‖²,     λ = ``regularization``

    and steps ``z_{k+1} = z_k + β r_k - (ΔZ + β ΔR) γ`` (β = ``mixing``).
    Safeguard: where that small system is singular or ill-conditioned (an LU pivot ratio
    below m·eps,
    γ non-finite or ``‖γ‖ > max_coefficient``) the element takes a damped Picard step
    instead of crashing (the failure reported in locuslab/deq issue #20).

    >>> import torch
    >>> from gridlearn.implicit import fixed_point
    >>> z = fixed_point(lambda z: torch.cos(z), torch.zeros(1, 1, dtype=torch.float64),
    ...                 solver=Anderson(memory=5, rtol=1e-12, atol=1e-14))
    >>> round(float(z), 9)                  # the Dottie number, cos(z) = z
    0.739085133
    """

    memory: int = 5
    mixing: float = 1.0
    regularization: float = 1e-8  # relative to the mean squared residual difference
    max_coefficient: float = 1e6

    def __post_init__(self):
        super().__post_init__()
        if self.memory < 1:
            raise ConfigError(f"Anderson: memory must be >= 1, got {self.memory}")
        if not 0 < self.mixing <= 1:
            raise ConfigError(f"Anderson: mixing must be in (0, 1], got {self.mixing}")
        if self.regularization < 0:
            raise ConfigError(f"Anderson: regularization must be >= 0, got {self.regularization}")
        if self.max_coefficient <= 0:
            raise ConfigError(f"Anderson: max_coefficient must be > 0, got {self.max_coefficient}")

    def _init_state(self, z, fz):
        state = {"z": z, "r": fz - z, "dZ": [], "dR": [], "n": 0, "fallbacks": 0}
        # Without autograd the history lives in preallocated ring buffers written in place
        # (column order is irrelevant to the least-squares problem); stacking a list every
        # step cost ~10% of a forward solve. With autograd (unrolled) it stays a list.
        state["ring"] = not torch.is_grad_enabled()
        if state["ring"]:
            shape = (*z.shape, self.memory)
            state["dZ"] = torch.zeros(shape, dtype=z.dtype, device=z.device)
            state["dR"] = torch.zeros(shape, dtype=z.dtype, device=z.device)
        return state

    def _history(self, state) -> tuple[torch.Tensor, torch.Tensor]:
        """(dR, dZ), each (batch, d, m) with m = number of stored differences."""
        if state["ring"]:
            n = min(state["n"], self.memory)
            return state["dR"][..., :n], state["dZ"][..., :n]
        return torch.stack(state["dR"], dim=-1), torch.stack(state["dZ"], dim=-1)

    def _propose(self, state, z, fz, active):
        r = fz - z
        beta = self.mixing
        picard = z + beta * r
        if state["n"] == 0:
            return picard
        dR, dZ = self._history(state)  # (batch, d, m)
        m = dR.shape[-1]
        gram = dR.transpose(-1, -2) @ dR  # (batch, m, m)
        scale = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1) / m
        tiny = torch.finfo(z.dtype).tiny
        lam = self.regularization * scale.clamp_min(tiny)
        eye = torch.eye(m, dtype=z.dtype, device=z.device)
        A = gram + lam[:, None, None] * eye
        rhs = (dR.transpose(-1, -2) @ r.unsqueeze(-1))  # (batch, m, 1)
        # LU rather than Cholesky: batched cholesky_ex was ~20 ms per call with 2 threads on
        # torch 2.13 CPU (a threading pathology), LU solve ~15 µs.
        LU, piv, info = torch.linalg.lu_factor_ex(A)
        piv_abs = torch.diagonal(LU, dim1=-2, dim2=-1).abs()
        # Pivot ratio as a cheap conditioning check: below ~m·eps the solve is noise.
        rcond = piv_abs.min(-1).values / piv_abs.max(-1).values.clamp_min(tiny)
        ok = (info == 0) & (rcond > m * torch.finfo(z.dtype).eps)
        LU = torch.where(_bmask(ok, LU), LU, eye.expand_as(LU))
        gamma = torch.linalg.lu_solve(LU, piv, rhs).squeeze(-1)  # (batch, m)
        gnorm = gamma.detach().norm(dim=-1)
        ok = ok & torch.isfinite(gnorm) & (gnorm <= self.max_coefficient)
        gamma = torch.where(_bmask(ok, gamma), gamma, torch.zeros_like(gamma))
        z_new = z + beta * r - ((dZ + beta * dR) @ gamma.unsqueeze(-1)).squeeze(-1)
        ok = ok & torch.isfinite(z_new.detach().sum(dim=-1))  # a sum is non-finite if any entry is
        n_fb = int((~ok & active).sum())
        if n_fb:
            state["fallbacks"] += n_fb
            logger.debug("Anderson: %d element(s) fell back to a Picard step (ill-conditioned history)", n_fb)
        return torch.where(_bmask(ok, z_new), z_new, picard)

    def _after_step(self, state, z, fz, active):
        r = fz - z
        # Frozen elements get zero differences: harmless (regularised, they are masked anyway).
        if state["ring"]:
            slot = state["n"] % self.memory
            state["dZ"][..., slot] = z - state["z"]
            state["dR"][..., slot] = r - state["r"]
        else:
            state["dZ"].append(z - state["z"])
            state["dR"].append(r - state["r"])
            if len(state["dR"]) > self.memory:
                state["dZ"].pop(0)
                state["dR"].pop(0)
        state["n"] += 1
        state["z"], state["r"] = z, r


@dataclass(frozen=True, kw_only=True)
class Broyden(_FixedPointIteration):
    """Limited-memory "good" Broyden method on the residual ``G(z) = f(z) - z``.

    Keeps ``H ≈ (∂G/∂z)⁻¹ = -I + Σ_i u_i v_iᵀ`` (at most ``memory`` rank-one terms, oldest
    dropped) and steps ``z <- z - H G(z)``; with ``H = -I`` that is a Picard step. After a
    step ``s = Δz``, ``y = ΔG`` the Sherman–Morrison update (Broyden 1965) is
    ``H <- H + (s - H y) sᵀH / (sᵀ H y)``; it is skipped for an element where
    ``|sᵀ H y|`` is tiny relative to ``‖s‖‖H y‖`` (the update would blow up).

    >>> import torch
    >>> from gridlearn.implicit import fixed_point
    >>> z = fixed_point(lambda z: torch.cos(z), torch.zeros(1, 1, dtype=torch.float64), solver=Broyden(rtol=1e-12))
    >>> round(float(z), 9)
    0.739085133
    """

    memory: int = 30
    skip_threshold: float = 1e-12

    def __post_init__(self):
        super().__post_init__()
        if self.memory < 1:
            raise ConfigError(f"Broyden: memory must be >= 1, got {self.memory}")

    @staticmethod
    def _apply(state, x, transpose=False):
        out = -x
        for u, v in zip(state["U"], state["V"]):
            a, b = (v, u) if transpose else (u, v)
            out = out + a * (b * x).sum(-1, keepdim=True)
        return out

    def _init_state(self, z, fz):
        return {"z": z, "G": fz - z, "U": [], "V": []}

    def _propose(self, state, z, fz, active):
        return z - self._apply(state, fz - z)

    def _after_step(self, state, z, fz, active):
        G = fz - z
        s = z - state["z"]
        y = G - state["G"]
        Hy = self._apply(state, y)
        sHy = (s * Hy).sum(-1, keepdim=True)
        ok = sHy.detach().abs() > self.skip_threshold * s.detach().norm(dim=-1, keepdim=True) * Hy.detach().norm(dim=-1, keepdim=True)
        ok = ok & active.unsqueeze(-1)
        safe = torch.where(ok, sHy, torch.ones_like(sHy))
        u = torch.where(ok, (s - Hy) / safe, torch.zeros_like(s))
        v = self._apply(state, s, transpose=True)
        state["U"].append(u)
        state["V"].append(v)
        if len(state["U"]) > self.memory:
            state["U"].pop(0)
            state["V"].pop(0)
        state["z"], state["G"] = z, G


def autograd_jacobian(g: Map, y: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense batched Jacobian ``J[b, i, j] = ∂g_i/∂y_j`` of a flat map, and ``g(y)``.

    Assumes batch elements are independent (g_b depends only on y_b). One VJP per output
    coordinate (vectorised when autograd's batched gradients support g; looped otherwise).
    """
    with torch.enable_grad():
        yr = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
        out = g(yr)
        n = out.shape[-1]
        eye = torch.eye(n, dtype=out.dtype, device=out.device)
        basis = eye.unsqueeze(1).expand(n, *out.shape)  # (n, batch, n)
        try:
            (rows,) = torch.autograd.grad(out, yr, basis, retain_graph=True, create_graph=create_graph, is_grads_batched=True)
        except RuntimeError:  # vmap unsupported by some op in g: loop instead
            rows = torch.stack(
                [torch.autograd.grad(out, yr, basis[i], retain_graph=True, create_graph=create_graph)[0] for i in range(n)]
            )
    return rows.transpose(0, 1), out


@dataclass(frozen=True, kw_only=True)
class Newton(_SolverBase):
    """Batched Newton–Raphson for small root problems: ``J(y_k) d = -g(y_k)``, ``y <- y + α d``.

    ``J`` is the caller's dense ``jacobian(y) -> (batch, n, n)`` when given, else built by
    autograd (n VJPs per step, so keep n small). ``α = 1`` unless ``max_backtracks > 0``,
    in which case α is halved per element (up to that many times) until ``‖g‖`` decreases.
    An element whose Jacobian is singular (``linalg.solve_ex`` fails or gives non-finite
    steps) is stopped with status NUMERICAL.

    A root that meets the tolerance is reported CONVERGED only if it is certified simple:
    at the final iterate y, with J = ∂g/∂y(y), the Newton step d = J⁻¹g(y) and the
    Lipschitz constant of J estimated from the last step, γ ≈ ‖J(y) − J(y_prev)‖₂ / ‖y − y_prev‖,
    the Kantorovich number h = γ‖d‖/σ_min(J) must be at most 0.1 (by Kantorovich's
    theorem h ≤ ½ guarantees a root within 2‖d‖; a margin keeps it unique and simple), and J
    must not be numerically singular (σ_min ≤ n·eps·σ_max). Otherwise the status is
    SINGULAR: at a multiple root (g = y² − w at w = 0) Newton converges only linearly, h
    stays at ½, the iterate's error is of the order of the tolerance's square root, and
    the implicit derivative does not exist; no gradient is given (on_failure applies).

    >>> import torch
    >>> from gridlearn.implicit import root_find
    >>> y = root_find(lambda y: y**3 - 8.0, torch.ones(1, 1, dtype=torch.float64), solver=Newton(rtol=1e-12))
    >>> round(float(y), 9)
    2.0
    """

    max_backtracks: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.max_backtracks < 0:
            raise ConfigError(f"Newton: max_backtracks must be >= 0, got {self.max_backtracks}")

    def solve_fixed_point(self, f: Map, z0: torch.Tensor) -> Solution:
        return self._newton(lambda z: z - f(z), z0, None, root=False)

    def solve_root(self, g: Map, y0: torch.Tensor, jacobian: Optional[Map] = None) -> Solution:
        return self._newton(g, y0, jacobian, root=True)

    def _newton(self, g: Map, y0: torch.Tensor, jacobian: Optional[Map], root: bool) -> Solution:
        if y0.dim() != 2:
            raise ValueError(f"solver state must be flat (batch, d), got shape {tuple(y0.shape)}")
        unrolled = torch.is_grad_enabled()
        y = y0
        gy = g(y)
        nfev = 1
        tr = _Tracker(self, gy.detach().norm(dim=-1), y, root=root)
        y_prev, J_prev = y.detach().clone(), None
        for _ in range(int(self.max_steps)):
            if not bool(tr.active.any()):
                break
            act = tr.active.clone()
            if jacobian is not None:
                J = jacobian(y)
            else:
                J, _ = autograd_jacobian(g, y, create_graph=unrolled)
                if not unrolled:
                    J = J.detach()
            Jd = J.detach()
            J_prev = Jd.clone() if J_prev is None else torch.where(_bmask(act, Jd), Jd, J_prev)
            y_prev = torch.where(_bmask(act, y_prev), y.detach(), y_prev)
            d, info = torch.linalg.solve_ex(J, -gy.unsqueeze(-1))
            d = d.squeeze(-1)
            singular = (info != 0) | ~torch.isfinite(d.detach()).all(dim=-1)
            tr.fail(singular & act, _NUMERICAL)
            act = act & ~singular
            d = torch.where(_bmask(act, d), d, torch.zeros_like(d))
            alpha = torch.ones(y.shape[0], dtype=y.dtype, device=y.device)
            y_try = y + alpha[:, None] * d
            g_try = g(y_try)
            nfev += 1
            for _bt in range(self.max_backtracks):
                worse = act & ~(g_try.detach().norm(dim=-1) < tr.res)
                if not bool(worse.any()):
                    break
                alpha = torch.where(worse, alpha / 2, alpha)
                y_half = y + alpha[:, None] * d
                g_half = g(y_half)
                nfev += 1
                y_try = torch.where(_bmask(worse, y), y_half, y_try)
                g_try = torch.where(_bmask(worse, y), g_half, g_try)
            m = _bmask(act, y)
            y = torch.where(m, y_try, y)
            gy = torch.where(m, g_try, gy)
            tr.update(gy.detach().norm(dim=-1), y, act)
        conv = tr.status == _CONVERGED
        if bool(conv.any()):
            # Checked on the whole batch (g may not accept a sub-batch); the others are
            # replaced by a harmless finite stand-in and their result ignored.
            c = _bmask(conv, y)
            yc = torch.where(c, y.detach(), torch.zeros_like(y))
            gc = torch.where(c, gy.detach(), torch.zeros_like(gy))
            simple = self._simple_root(g, yc, gc, jacobian, torch.where(c, y_prev, torch.zeros_like(y_prev)),
                                       None if J_prev is None else torch.where(conv[:, None, None], J_prev, torch.zeros_like(J_prev)),
                                       tr.steps, conv)
            tr.status[conv & ~simple] = _SINGULAR
        return tr.solution(y, nfev=nfev)

    @staticmethod
    def _simple_root(g: Map, y: torch.Tensor, gy: torch.Tensor, jacobian: Optional[Map], y_prev: torch.Tensor,
                     J_prev: Optional[torch.Tensor], steps: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
        """(batch,) bool: the Kantorovich test of the class docstring at the final iterates."""
        with torch.no_grad():
            J = jacobian(y).detach() if jacobian is not None else autograd_jacobian(g, y)[0].detach()
            eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
            J = torch.where(conv[:, None, None] & torch.isfinite(J).all(-1).all(-1)[:, None, None], J, eye)
            sv = torch.linalg.svdvals(J)
            smax, smin = sv[:, 0], sv[:, -1]
            n = y.shape[-1]
            eps = torch.finfo(y.dtype).eps
            ok = torch.isfinite(sv).all(-1) & (smin > n * eps * smax) & (smin > 0)
            d = torch.linalg.lstsq(J, gy.unsqueeze(-1)).solution.squeeze(-1) if n else gy
            if J_prev is not None:
                dy = (y - y_prev).norm(dim=-1)
                dJ = torch.linalg.matrix_norm(J - J_prev, ord=2)
                gamma = torch.where((steps > 0) & (dy > 0), dJ / dy.clamp_min(torch.finfo(y.dtype).tiny), torch.zeros_like(dy))
                kant = gamma * d.norm(dim=-1) / smin.clamp_min(torch.finfo(y.dtype).tiny)
                ok = ok & ~(kant > _KANTOROVICH_MAX)
        return ok


FixedPointSolver = _FixedPointIteration
SolverBase = _SolverBase

__all__ = ["Picard", "Anderson", "Broyden", "Newton", "autograd_jacobian", "SolverBase"]
