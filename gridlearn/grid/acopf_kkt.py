"""KKT conditions of the AC-OPF in torch, for differentiating a solved AC-OPF (implicit function theorem).

At an Ipopt optimum with active set A (binding flow/angle limits; variables at a bound
are held fixed there), the reduced KKT system

    F(y, theta) = [ grad_{z_F} L ;  c(z, theta) ;  h_A(z, theta) ] = 0,
    L = f(pg; c2, c1, c0) + lambda^T c(z, theta) + mu_A^T h_A(z, theta),   y = (z_F, lambda, mu_A)

holds, with Ipopt's own multipliers (``c``: power balances, ``h_A``: active limits, the
same `acphysics.ACPolar` as the Pyomo model and the Ipopt callbacks). Backward (Amos & Kolter 2017,
OptNet; Fiacco 1976 for NLP sensitivity): for output cotangents ``v`` on y,

    K = dF/dy (symmetric),   K w = v,   grad_theta = -w^T dF/dtheta,

and the objective's gradient is the envelope theorem, ``d f*/d theta = dL/d theta``.

K is assembled analytically and sparse (`kkt_matrix`): ``K = [[H_FF, J_F^T], [J_F, 0]]``
with ``H`` the Hessian of the Lagrangian and ``J`` the Jacobian of (c, h_A), both from the
same `ACOPFNLP` callbacks Ipopt used, restricted to the free variables; one sparse LU per
sample. ``dF/dtheta`` is closed form for loads and costs (`bus_gen_vjp`, `bus_gen_envelope`:
``dc/dpd = -I/B``, ``d grad_pg f/dc2 = 2 B^2 pg``, ``d grad_pg f/dc1 = B``) and comes from
torch.func (reverse over reverse, `KKTSystem.theta_vjp`) for branch parameters, only when
one of them needs a gradient. `KKTSystem.matrix` (dense K by torch.func.jacfwd) is the
slower reference the tests compare `kkt_matrix` against.
A weakly active constraint (slack and multiplier both ~0: strict complementarity fails) or
a singular K means the solution map is not differentiable there: `SolverFailure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.grid.acphysics import ACPolar, pi_admittance_parts
from gridlearn.grid.formulations import Convention, generation_cost

# Parameters the layer differentiates through, as named in the Network tables.
BRANCH_FIELDS = ("r_pu", "x_pu", "g_pu", "b_pu")
THETA_FIELDS = ("pd_mw", "qd_mvar", "cost_c2_usd_per_mw2h", "cost_c1_usd_per_mwh", "cost_c0_usd_per_h",
                "r_pu", "x_pu", "g_pu", "b_pu")


@dataclass(frozen=True)
class ActiveSet:
    """Which parts of an AC-OPF solution are free, fixed or binding (index tensors, long)."""

    free: Tensor  # positions in z = (va, vm, pg, qg) that are neither fixed nor at a bound
    flow_f: Tensor  # branch positions whose from-end limit binds
    flow_t: Tensor
    angle: Tensor  # branch positions whose angle-difference limit binds


#: A constraint whose scaled slack and scaled multiplier are within this factor of each other
#: is weakly active. Ipopt keeps ``slack * multiplier`` ~ its final barrier parameter, so an
#: exactly weakly active bound comes back with both ~ its square root (case9, pmax set at the
#: unconstrained optimum: 1.65e-6 and 1.9e-6 scaled), while on case9-case118 at Ipopt
#: ``tol=1e-9`` every other constraint had the larger >= 100x the smaller (and >= 1.4e-5).
SEPARATION = 10.0
#: Default of `active_set`'s ``tol``: a constraint whose scaled slack and multiplier are both
#: below it is weakly active whatever their ratio (both are zero to solver precision).
ACTIVE_TOL = 1e-9


def complementarity_classes(mult: Tensor, slack: Tensor, tol: float = ACTIVE_TOL) -> tuple[Tensor, Tensor]:
    """(active, weak) bool tensors of inequalities from their scaled multipliers and slacks (both >= 0,
    any shape): active where the multiplier exceeds the slack; weakly active where the two are within
    `SEPARATION` of each other or both below ``tol``. The one rule of the Ipopt layer (`active_set`) and
    of the torch interior point's backward (`acopf_ipm.solve`)."""
    big, small = torch.maximum(mult, slack), torch.minimum(mult, slack)
    return mult > slack, (big < tol) | (big < SEPARATION * small)


def multiplier_scale(result, nlp=None) -> float:
    """The problem's multiplier scale, $/h per pu.

    With the sample's `ACOPFNLP`: the largest entry of the objective's gradient at the
    solution (a generator's marginal cost times the base MVA), which the multipliers of a
    binding constraint are commensurate with. Without it: the largest |balance multiplier|
    (|LMP| * base), which congestion can inflate (PGLib case57: 1e6 against costs ~4e3).
    """
    if nlp is not None:
        base = float(nlp.base)
        x = nlp.to_x(torch.cat([result.va_rad, result.vm_pu, result.pg_mw / base, result.qg_mvar / base]).numpy())
        grad = np.abs(nlp.gradient(x))
        m = float(grad.max()) if grad.size else 0.0
    else:
        d = result.duals
        lam = torch.cat([d["p_balance"], d["q_balance"]]).abs()
        m = float(lam.max()) if lam.numel() else 0.0
    return m if m > 0 else 1.0  # all costs zero: multipliers are then plain numbers


def active_set(result, n_bus: int, n_gen: int, tol: float = ACTIVE_TOL, sample: int = 0, *, nlp=None) -> ActiveSet:
    """Classify each bound and limit as active or inactive, scale-aware; raise on a weakly active one.

    Ipopt stops with ``slack * multiplier ~ barrier parameter``, so for a strictly
    complementary solution one of the two is orders of magnitude above the other. The two
    live in different units: slacks are per unit or radians (O(1) by construction),
    multipliers in $/h per pu, which scale with the cost coefficients. So each multiplier is
    divided by `multiplier_scale` M (the objective gradient's size) before comparing:
    active when ``|mult| / M > slack``. Without that a bound multiplier of 8e-5 $/h per pu on
    case118 (M ~ 4e3: relative 2e-8, slack 1e-4) counted as active and the sensitivity was
    wrong; and the active set is now the same when every cost is scaled by 1e3 (tested). A
    constraint whose two scaled quantities are within a factor `SEPARATION` of each other, or
    both below ``tol``, is weakly active (strict complementarity fails): the solution map
    has a kink there and `SolverFailure` is raised rather than a one-sided, silently wrong
    gradient.

    ``nlp``: the sample's `ACOPFNLP`, which gives the variable bounds (so variable bounds are
    judged by slack too, and a variable with equal bounds counts as fixed). Without it a
    variable is at a bound when its scaled multiplier exceeds ``tol`` (no weak-activity check
    for variable bounds).
    """
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    d = result.duals
    scale = multiplier_scale(result, nlp)
    fixed = torch.cat([result.fixed["va"], result.fixed["vm"], torch.zeros(2 * n_gen, dtype=torch.bool)])
    lower = torch.cat([d["va_lower"], d["vm_lower"], d["pg_lower"], d["qg_lower"]]).abs() / scale
    upper = torch.cat([d["va_upper"], d["vm_upper"], d["pg_upper"], d["qg_upper"]]).abs() / scale

    def weak_error(what: str, slack: float, mult: float) -> SolverFailure:
        return SolverFailure(
            f"AC-OPF sample {sample}: {what} is weakly active (slack {slack:.2e}, multiplier {mult:.2e} relative to "
            f"{scale:.3g} $/h per pu: within a factor {SEPARATION:g} or both below {tol:g}); strict complementarity "
            "fails, so the solution is not differentiable there", indices=[sample])


    if nlp is None:
        at_bound = (lower > tol) | (upper > tol)
    else:
        base = float(nlp.base)
        z = torch.cat([result.va_rad, result.vm_pu, result.pg_mw / base, result.qg_mvar / base]).numpy()
        lb = np.full(z.size, -np.inf)
        ub = np.full(z.size, np.inf)
        lb[nlp.free], ub[nlp.free] = nlp.x_lb, nlp.x_ub
        fixed = fixed | torch.as_tensor(ub - lb <= 1e-12)  # pmin = pmax (a synchronous condenser): a constant
        at_bound = torch.zeros(z.size, dtype=torch.bool)
        for mult, slack, side in ((lower, torch.as_tensor(z - lb), "lower"), (upper, torch.as_tensor(ub - z), "upper")):
            active, weak = complementarity_classes(mult, slack.abs(), tol)
            weak = ~fixed & weak
            if weak.any():
                i = int(weak.nonzero()[0])
                raise weak_error(f"{side} bound of variable {_variable_name(i, n_bus, n_gen)}", float(slack[i]),
                                 float(mult[i]))
            at_bound |= active
    free = (~fixed & ~at_bound).nonzero().flatten()

    def binding(mult: Tensor, slack: Tensor, what: str) -> Tensor:
        m = mult.abs() / scale
        active, weak = complementarity_classes(m, slack.abs(), tol)
        if weak.any():
            i = int(weak.nonzero()[0])
            raise weak_error(f"{what} {i}", float(slack[i]), float(m[i]))
        return active.nonzero().flatten()

    slacks = result.slacks
    return ActiveSet(
        free=free,
        flow_f=binding(d["flow_f"], slacks["flow_f"], "from-end flow limit of branch"),
        flow_t=binding(d["flow_t"], slacks["flow_t"], "to-end flow limit of branch"),
        angle=binding(d["angle"], slacks["angle"], "angle limit of branch"),
    )


def _variable_name(i: int, n_bus: int, n_gen: int) -> str:
    names = (("va", n_bus), ("vm", n_bus), ("pg", n_gen), ("qg", n_gen))
    for name, n in names:
        if i < n:
            return f"{name}[{i}]"
        i -= n
    return f"z[{i}]"


class KKTSystem:
    """The reduced KKT residual F(y, theta) of one solved AC-OPF sample (see module docstring).

    ``fixed_data``: tensors of the network that are not differentiated (tap, shift, shunts,
    rates, angle limits, bus indices). ``z0``: the full solution (va, vm, pg_pu, qg_pu).
    """

    def __init__(self, network, convention: Convention, z0: Tensor, active: ActiveSet, angle_bound: Tensor):
        self.conv = convention
        self.base = float(network.base_mva)
        br, bus, gen = network.branch, network.bus, network.gen
        self.nb, self.ng, self.nl = network.n_bus, network.n_gen, network.n_branch
        self.f, self.t = br.from_bus, br.to_bus
        self.tap, self.shift = br.tap.detach(), br.shift_rad.detach()
        self.gs, self.bs = bus.gs_mw.detach() / self.base, bus.bs_mvar.detach() / self.base
        self.rate = br.rate_a_mva.detach() / self.base
        self.gen_bus = gen.bus
        self.z0 = z0
        self.active = active
        self.angle_bound = angle_bound  # (n_branch,) the binding side's limit
        # Binding flow limits as branch ends (from ends are 0..n_branch-1, to ends follow).
        self.active_ends = torch.cat([active.flow_f, self.nl + active.flow_t])
        self.active_branches = torch.cat([active.flow_f, active.flow_t])
        nz = z0.shape[0]
        self.sel = torch.zeros(nz, active.free.numel(), dtype=z0.dtype, device=z0.device)
        self.sel[active.free, torch.arange(active.free.numel(), device=z0.device)] = 1.0
        keep = torch.ones(nz, dtype=z0.dtype, device=z0.device)
        keep[active.free] = 0.0
        self.z_const = z0 * keep
        self.sizes = (active.free.numel(), 2 * self.nb, active.flow_f.numel() + active.flow_t.numel() + active.angle.numel())

    # ---------------------------------------------------------------- pieces
    def full_z(self, z_free: Tensor) -> Tensor:
        return self.z_const + self.sel @ z_free

    def formulation(self, th: dict[str, Tensor]) -> ACPolar:
        """The `ACPolar` physics at branch parameters ``th`` (differentiable in them)."""
        y = pi_admittance_parts(th["r_pu"], th["x_pu"], th["g_pu"], th["b_pu"], self.tap, self.shift, torch.cos, torch.sin)
        return ACPolar.from_branches(y, self.f, self.t, self.gen_bus, self.gs, self.bs, self.conv.branch_limit,
                                     n_bus=self.nb)

    def constraints(self, z: Tensor, th: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(c, h_A): power balances (2 n_bus) and active limits, exactly as in the Pyomo model."""
        form = self.formulation(th)
        va, vm, pg, qg = form.split(z)
        ends = form.end_state(va, vm)
        c_p, c_q = form.balance(ends, vm, pg, qg, th["pd_mw"] / self.base, th["qd_mvar"] / self.base)
        a = self.active
        h = [
            form.limit_residual(ends, self.active_ends, self.rate[self.active_branches]),
            form.angle_difference(va, a.angle) - self.angle_bound[a.angle],
        ]
        return torch.cat([c_p, c_q]), torch.cat(h)

    def objective(self, z: Tensor, th: dict[str, Tensor]) -> Tensor:
        pg = z[2 * self.nb : 2 * self.nb + self.ng]
        return generation_cost(pg, th["cost_c2_usd_per_mw2h"], th["cost_c1_usd_per_mwh"], th["cost_c0_usd_per_h"], self.base).sum()

    def lagrangian(self, z_free: Tensor, lam: Tensor, mu: Tensor, th: dict[str, Tensor]) -> Tensor:
        z = self.full_z(z_free)
        c, h = self.constraints(z, th)
        return self.objective(z, th) + lam @ c + mu @ h

    def residual(self, y: Tensor, th: dict[str, Tensor]) -> Tensor:
        nf, nl_, _ = self.sizes
        z_free, lam, mu = y[:nf], y[nf : nf + nl_], y[nf + nl_ :]
        grad_z = torch.func.grad(self.lagrangian, argnums=0)(z_free, lam, mu, th)
        c, h = self.constraints(self.full_z(z_free), th)
        return torch.cat([grad_z, c, h])

    # ---------------------------------------------------------------- backward
    def matrix(self, y: Tensor, th: dict[str, Tensor]) -> Tensor:
        """Dense K = dF/dy by torch.func.jacfwd of the residual (reference for `kkt_matrix`)."""
        return torch.func.jacfwd(self.residual, argnums=0)(y, th)

    def theta_vjp(self, y: Tensor, th: dict[str, Tensor], w: Tensor) -> dict[str, Tensor]:
        """``-w^T dF/dtheta`` for every parameter (torch.func, reverse over reverse)."""
        _, pull = torch.func.vjp(lambda t: self.residual(y, t), th)
        (g,) = pull(-w)
        return g

    def vjp(self, y: Tensor, th: dict[str, Tensor], v: Tensor, sample: int = 0) -> dict[str, Tensor]:
        """``-w^T dF/dtheta`` with ``K w = v``, K dense from torch.func (reference path)."""
        k = self.matrix(y, th)
        w = torch.linalg.solve(k, v) if k.numel() else v
        err = (k @ w - v).norm() / v.norm().clamp_min(1e-300) if k.numel() else torch.zeros(())
        if not torch.isfinite(w).all() or err > 1e-6:
            raise _singular(sample, float(err))
        return self.theta_vjp(y, th, w)

    def envelope(self, y_full_lam: tuple[Tensor, Tensor, Tensor], th: dict[str, Tensor]) -> dict[str, Tensor]:
        """d objective*/d theta = dL/d theta at the optimum (envelope theorem)."""
        z_free, lam, mu = y_full_lam
        return torch.func.grad(lambda t: self.lagrangian(z_free, lam, mu, t))(th)


# -------------------------------------------------------------------- analytic, sparse
def _singular(sample: int, err: float) -> SolverFailure:
    return SolverFailure(
        f"AC-OPF sample {sample}: the KKT matrix is singular (relative solve residual {err:.2e}); "
        "constraint gradients are linearly dependent at this optimum, so no implicit gradient exists",
        indices=[sample],
    )


def kkt_rows(nlp, active: ActiveSet) -> np.ndarray:
    """Rows of Ipopt's constraint vector g that enter F: both balances, then the active limits."""
    d = nlp.d
    n_half = nlp.n_lim // 2
    lim_pos = np.full(d.n_branch, -1, dtype=np.int64)
    lim_pos[d.limited] = np.arange(d.limited.size)
    ang_pos = np.full(d.n_branch, -1, dtype=np.int64)
    ang_pos[d.angle_limited] = np.arange(d.angle_limited.size)
    o = 2 * nlp.nb
    return np.concatenate([
        np.arange(o), o + lim_pos[active.flow_f.numpy()], o + n_half + lim_pos[active.flow_t.numpy()],
        o + nlp.n_lim + ang_pos[active.angle.numpy()],
    ])


def kkt_matrix(nlp, z0: np.ndarray, lam: np.ndarray, mu: np.ndarray, active: ActiveSet):
    """Sparse K = dF/dy (scipy CSC) from the NLP's analytic Hessian and Jacobian at ``z0``.

    ``lam``: (2 n_bus,) balance multipliers; ``mu``: multipliers of the active limits, in
    `kkt_rows` order. Inactive limits get multiplier 0, as in `KKTSystem.lagrangian`.
    """
    import scipy.sparse as sp

    rows = kkt_rows(nlp, active)
    lagrange = np.zeros(nlp.m)
    lagrange[rows] = np.concatenate([lam, mu])
    x = nlp.to_x(z0)
    hv = nlp.hessian(x, lagrange, 1.0)
    n = nlp.n
    h_low = sp.coo_matrix((hv, (nlp.hes_rows, nlp.hes_cols)), shape=(n, n)).tocsr()
    h = h_low + h_low.T - sp.diags(h_low.diagonal())
    jac = sp.coo_matrix((nlp.jacobian(x), (nlp.jac_rows, nlp.jac_cols)), shape=(nlp.m, n)).tocsr()
    cols = nlp.pos[active.free.numpy()]
    j = jac[rows][:, cols]
    return sp.bmat([[h[cols][:, cols], j.T], [j, None]], format="csc")


def solve_kkt(k, v: np.ndarray, sample: int = 0) -> np.ndarray:
    """``w`` with ``K w = v`` by sparse LU; `SolverFailure` when K is (numerically) singular."""
    from scipy.sparse.linalg import splu

    if k.shape[0] == 0:
        return v
    try:
        w = splu(k).solve(v)
    except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
        raise _singular(sample, float("inf")) from exc
    err = float(np.linalg.norm(k @ w - v) / max(np.linalg.norm(v), 1e-300))
    if not np.all(np.isfinite(w)) or err > 1e-6:
        raise _singular(sample, err)
    return w


def bus_gen_vjp(w: np.ndarray, z0: np.ndarray, active: ActiveSet, n_bus: int, n_gen: int,
                base_mva: float) -> dict[str, np.ndarray]:
    """``-w^T dF/dtheta`` for loads and cost coefficients (closed form, see module docstring)."""
    nf = active.free.numel()
    free = active.free.numpy()
    w_z, w_p, w_q = w[:nf], w[nf : nf + n_bus], w[nf + n_bus : nf + 2 * n_bus]
    pg_first = 2 * n_bus
    is_pg = (free >= pg_first) & (free < pg_first + n_gen)
    gen = free[is_pg] - pg_first
    w_pg = np.zeros(n_gen)
    w_pg[gen] = w_z[is_pg]
    pg = z0[pg_first : pg_first + n_gen]
    return {
        "pd_mw": w_p / base_mva,
        "qd_mvar": w_q / base_mva,
        "cost_c2_usd_per_mw2h": -w_pg * 2 * base_mva * base_mva * pg,
        "cost_c1_usd_per_mwh": -w_pg * base_mva,
        "cost_c0_usd_per_h": np.zeros(n_gen),
    }


def bus_gen_envelope(lam: np.ndarray, z0: np.ndarray, n_bus: int, n_gen: int, base_mva: float) -> dict[str, np.ndarray]:
    """d objective*/d theta = dL/d theta for loads and costs (envelope theorem, closed form)."""
    p_mw = z0[2 * n_bus : 2 * n_bus + n_gen] * base_mva
    return {
        "pd_mw": -lam[:n_bus] / base_mva,
        "qd_mvar": -lam[n_bus:] / base_mva,
        "cost_c2_usd_per_mw2h": p_mw * p_mw,
        "cost_c1_usd_per_mwh": p_mw,
        "cost_c0_usd_per_h": np.ones(n_gen),
    }
