"""The AC-OPF recipe as a Pyomo model (written once; the physics is `acphysics.ACPolar`'s).

Polar form (MATPOWER manual, section 6.1), everything in per unit except the cost:

    min  sum_g c2 (B pg)^2 + c1 (B pg) + c0                          ($/h, B = base MVA)
    s.t. sum_{g at i} pg - pd_i/B - gs_i/B vm_i^2 - sum_{branch ends at i} p_end = 0   (p_balance)
         sum_{g at i} qg - qd_i/B + bs_i/B vm_i^2 - sum_{branch ends at i} q_end = 0   (q_balance)
         h(p_end, q_end, vm_end, rate/B) <= 0 (BranchLimit), both ends, finite rate      (flow_f, flow_t)
         angmin <= va_f - va_t <= angmax, finite limits (convention permitting)           (angle)
         vmin <= vm <= vmax, pmin <= pg <= pmax, qmin <= qg <= qmax     (variable bounds)
         va_ref fixed; vm at ext_grid buses fixed at the setpoint (pandapower convention)

Each constraint body is written as ``expr == 0`` / ``expr <= 0`` with ``expr`` exactly the
function the torch KKT residual uses, so Ipopt's multipliers are those of `acopf_kkt`.
`acopf_nlp.ACOPFNLP` poses the same problem to Ipopt with vectorised callbacks (the default
solve path); this Pyomo model is the readable reference the tests compare it against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gridlearn.grid.acphysics import ACPolar, pi_admittance_parts
from gridlearn.grid.acphysics.namespace import object_array
from gridlearn.grid.formulations import Convention, generation_cost


@dataclass(frozen=True)
class ACOPFArrays:
    """Numpy view of a Network for one AC-OPF (per unit unless the name says otherwise)."""

    base_mva: float
    n_bus: int
    n_gen: int
    n_branch: int
    gen_bus: np.ndarray
    from_bus: np.ndarray
    to_bus: np.ndarray
    adm: dict  # pi_admittance_parts, each (n_branch,)
    pd_pu: np.ndarray
    qd_pu: np.ndarray
    gs_pu: np.ndarray
    bs_pu: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    pmin: np.ndarray
    pmax: np.ndarray
    qmin: np.ndarray
    qmax: np.ndarray
    c2: np.ndarray
    c1: np.ndarray
    c0: np.ndarray
    rate_pu: np.ndarray  # inf = unlimited
    angmin: np.ndarray
    angmax: np.ndarray
    va_fixed: dict  # bus -> angle (reference buses)
    vm_fixed: dict  # bus -> magnitude (ext_grid buses, pandapower convention)
    limited: np.ndarray  # branch positions with a finite rate
    angle_limited: np.ndarray  # branch positions with an angle limit (enforced by the convention)
    # Cost terms beyond c2 p^2 + c1 p + c0 (MATPOWER gencost): piecewise-linear epigraph segments
    # y_j >= pwl_slope_k * pg_{pwl_gen_k} + pwl_icpt_k, j = pwl_var_k ($/h, pg in per unit), and
    # a polynomial reactive cost cq2 (B qg)^2 + cq1 (B qg) + cq0.
    pwl_gen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pwl_var: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pwl_slope: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pwl_icpt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_pwl: int = 0  # epigraph variables (generators with a piecewise-linear cost)
    cq2: np.ndarray | None = None
    cq1: np.ndarray | None = None
    cq0: np.ndarray | None = None

    def pwl_start(self, pg: np.ndarray) -> np.ndarray:
        """Epigraph variables at dispatch ``pg`` (per unit): each generator's cost there."""
        y = np.full(self.n_pwl, -np.inf)
        np.maximum.at(y, self.pwl_var, self.pwl_slope * pg[self.pwl_gen] + self.pwl_icpt)
        return y


def acopf_arrays(network, convention: Convention) -> ACOPFArrays:
    def a(t):
        return t.detach().cpu().double().numpy()

    base = float(network.base_mva)
    br, bus, gen = network.branch, network.bus, network.gen
    adm = pi_admittance_parts(a(br.r_pu), a(br.x_pu), a(br.g_pu), a(br.b_pu), a(br.tap), a(br.shift_rad), np.cos, np.sin)
    rate = a(br.rate_a_mva) / base
    angmin, angmax = a(br.angmin_rad), a(br.angmax_rad)
    va0 = a(bus.va0_rad)
    va_fixed = {int(i): float(va0[i]) for i in network.ref_buses.tolist()}
    vm_fixed: dict[int, float] = {}
    if convention.fix_ext_grid_voltage:
        vg = a(gen.vg_pu)
        gbus = gen.bus.tolist()
        for k, label in enumerate(gen.labels):
            if label[0] == "ext_grid":
                vm_fixed[int(gbus[k])] = float(vg[k])
    if convention.angle_limits:
        angle_limited = np.flatnonzero(np.isfinite(angmin) | np.isfinite(angmax))
    else:
        angle_limited = np.zeros(0, dtype=np.int64)
    return ACOPFArrays(
        base_mva=base,
        n_bus=network.n_bus,
        n_gen=network.n_gen,
        n_branch=network.n_branch,
        gen_bus=gen.bus.cpu().numpy(),
        from_bus=br.from_bus.cpu().numpy(),
        to_bus=br.to_bus.cpu().numpy(),
        adm=adm,
        # MW / MVAr quantities on the network's base, per unit
        **{name: a(t) / base for name, t in (("pd_pu", bus.pd_mw), ("qd_pu", bus.qd_mvar), ("gs_pu", bus.gs_mw),
                                             ("bs_pu", bus.bs_mvar), ("pmin", gen.pmin_mw), ("pmax", gen.pmax_mw),
                                             ("qmin", gen.qmin_mvar), ("qmax", gen.qmax_mvar))},
        vmin=a(bus.vmin_pu),
        vmax=a(bus.vmax_pu),
        c2=a(gen.cost_c2_usd_per_mw2h),
        c1=a(gen.cost_c1_usd_per_mwh),
        c0=a(gen.cost_c0_usd_per_h),
        rate_pu=rate,
        angmin=angmin,
        angmax=angmax,
        va_fixed=va_fixed,
        vm_fixed=vm_fixed,
        limited=np.flatnonzero(np.isfinite(rate)),
        angle_limited=angle_limited,
        **_extra_costs(network, base),
    )


def polar_formulation(d: ACOPFArrays, convention: Convention) -> ACPolar:
    """The `ACPolar` physics of ``d`` (numpy): limits at both ends of `limited` branches, angle
    constraints on `angle_limited` ones, the convention's branch-limit strategy."""
    return ACPolar.from_branches(d.adm, d.from_bus, d.to_bus, d.gen_bus, d.gs_pu, d.bs_pu, convention.branch_limit,
                                 n_bus=d.n_bus, limited=d.limited, rate_pu=d.rate_pu, angle_branches=d.angle_limited)


def _extra_costs(network, base: float) -> dict:
    """`ACOPFArrays` fields of the piecewise-linear and reactive costs (empty when there are none)."""
    out: dict = {}
    pwl = getattr(network, "pwl_cost", None)
    if pwl is not None:
        gen = pwl.gen.cpu().numpy().astype(np.int64)
        gens = np.array(pwl.generators(), dtype=np.int64)
        out.update(pwl_gen=gen, pwl_var=np.searchsorted(gens, gen), n_pwl=len(gens),
                   pwl_slope=pwl.slope_usd_per_mwh.detach().cpu().double().numpy() * base,
                   pwl_icpt=pwl.intercept_usd_per_h.detach().cpu().double().numpy())
    q = getattr(network, "reactive_cost", None)
    if q is not None:
        out.update(cq2=q.c2_usd_per_mvar2h.detach().cpu().double().numpy(),
                   cq1=q.c1_usd_per_mvarh.detach().cpu().double().numpy(),
                   cq0=q.c0_usd_per_h.detach().cpu().double().numpy())
    return out


def _bound(v: float):
    return None if not np.isfinite(v) else float(v)


def build_acopf_model(d: ACOPFArrays, convention: Convention, start: dict[str, np.ndarray]):
    """A Pyomo ConcreteModel of the AC-OPF with ``dual``/``ipopt_zL_out``/``ipopt_zU_out`` import suffixes.

    ``start``: initial ``va``, ``vm``, ``pg``, ``qg`` (per unit, radians).
    """
    import pyomo.environ as pyo

    m = pyo.ConcreteModel(name="acopf")
    buses, gens = range(d.n_bus), range(d.n_gen)
    m.va = pyo.Var(buses, initialize=dict(enumerate(start["va"].tolist())))
    m.vm = pyo.Var(buses, bounds=lambda _, i: (_bound(d.vmin[i]), _bound(d.vmax[i])),
                   initialize=dict(enumerate(start["vm"].tolist())))
    m.pg = pyo.Var(gens, bounds=lambda _, g: (_bound(d.pmin[g]), _bound(d.pmax[g])),
                   initialize=dict(enumerate(start["pg"].tolist())))
    m.qg = pyo.Var(gens, bounds=lambda _, g: (_bound(d.qmin[g]), _bound(d.qmax[g])),
                   initialize=dict(enumerate(start["qg"].tolist())))
    for i, v in d.va_fixed.items():
        m.va[i].fix(v)
    for i, v in d.vm_fixed.items():
        m.vm[i].fix(v)

    # The physics is ACPolar's, evaluated on object arrays of Pyomo variables: one
    # expression per end, balance and limit, built by the same code as the numpy callbacks.
    form = polar_formulation(d, convention)
    va, vm = object_array(m.va[i] for i in buses), object_array(m.vm[i] for i in buses)
    pg, qg = object_array(m.pg[g] for g in gens), object_array(m.qg[g] for g in gens)
    ends = form.end_state(va, vm)
    c_p, c_q = form.balance(ends, vm, pg, qg, d.pd_pu, d.qd_pu)
    m.p_balance = pyo.Constraint(buses, rule=lambda _, i: c_p[i] == 0)
    m.q_balance = pyo.Constraint(buses, rule=lambda _, i: c_q[i] == 0)
    pos = {l: k for k, l in enumerate(d.limited.tolist())}
    h = form.limit_residual(ends)  # from ends of the limited branches, then their to ends
    lim = d.limited.tolist()
    n_lim = len(lim)
    m.flow_f = pyo.Constraint(lim, rule=lambda _, l: h[pos[l]] <= 0)
    m.flow_t = pyo.Constraint(lim, rule=lambda _, l: h[n_lim + pos[l]] <= 0)
    ang = form.angle_difference(va)
    ang_pos = {l: k for k, l in enumerate(d.angle_limited.tolist())}

    def angle_rule(_, l):
        return (_bound(d.angmin[l]), ang[ang_pos[l]], _bound(d.angmax[l]))

    m.angle = pyo.Constraint(d.angle_limited.tolist(), rule=angle_rule)
    c2, c1, c0 = d.c2.tolist(), d.c1.tolist(), d.c0.tolist()
    cost = sum(generation_cost(m.pg[g], c2[g], c1[g], c0[g], d.base_mva) for g in gens)
    if d.n_pwl:  # MATPOWER's epigraph of a piecewise-linear cost: y_j >= slope_k pg + intercept_k
        y0 = d.pwl_start(start["pg"])
        m.y = pyo.Var(range(d.n_pwl), initialize=dict(enumerate(y0.tolist())))
        seg = range(len(d.pwl_gen))
        gk, jk, sk, ik = d.pwl_gen.tolist(), d.pwl_var.tolist(), d.pwl_slope.tolist(), d.pwl_icpt.tolist()
        m.pwl = pyo.Constraint(seg, rule=lambda _, k: sk[k] * m.pg[gk[k]] - m.y[jk[k]] + ik[k] <= 0)
        cost = cost + sum(m.y[j] for j in range(d.n_pwl))
    if d.cq2 is not None:
        q2, q1, q0 = d.cq2.tolist(), d.cq1.tolist(), d.cq0.tolist()
        cost = cost + sum(generation_cost(m.qg[g], q2[g], q1[g], q0[g], d.base_mva) for g in gens)
    m.cost = pyo.Objective(expr=cost)
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    m.ipopt_zL_out = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    m.ipopt_zU_out = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    return m
