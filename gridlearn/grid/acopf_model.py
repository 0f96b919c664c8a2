"""The AC-OPF recipe as a Pyomo model (written once; the physics comes from `formulations`).

Polar form (MATPOWER manual, section 6.1), everything in per unit except the cost:

    min  sum_g c2 (B pg)^2 + c1 (B pg) + c0                          ($/h, B = base MVA)
    s.t. sum_{g at i} pg - pd_i/B - gs_i/B vm_i^2 - sum_{branch ends at i} p_end = 0   (p_balance)
         sum_{g at i} qg - qd_i/B + bs_i/B vm_i^2 - sum_{branch ends at i} q_end = 0   (q_balance)
         flow_limit_residual(p_end, q_end, vm_end, rate/B) <= 0, both ends, finite rate    (flow_f, flow_t)
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

from gridlearn.grid.formulations import Convention, branch_end_power, flow_limit_residual, generation_cost, pi_admittance_parts


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
        pd_pu=a(bus.pd_mw) / base,
        qd_pu=a(bus.qd_mvar) / base,
        gs_pu=a(bus.gs_mw) / base,
        bs_pu=a(bus.bs_mvar) / base,
        vmin=a(bus.vmin_pu),
        vmax=a(bus.vmax_pu),
        pmin=a(gen.pmin_mw) / base,
        pmax=a(gen.pmax_mw) / base,
        qmin=a(gen.qmin_mvar) / base,
        qmax=a(gen.qmax_mvar) / base,
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

    cos, sin = pyo.cos, pyo.sin
    y = {k: v.tolist() for k, v in d.adm.items()}
    fb, tb = d.from_bus.tolist(), d.to_bus.tolist()
    pf, qf, pt, qt = {}, {}, {}, {}
    for l in range(d.n_branch):
        f, t = fb[l], tb[l]
        pf[l], qf[l] = branch_end_power(m.vm[f], m.vm[t], m.va[f] - m.va[t], y["g_ff"][l], y["b_ff"][l],
                                        y["g_ft"][l], y["b_ft"][l], cos, sin)
        pt[l], qt[l] = branch_end_power(m.vm[t], m.vm[f], m.va[t] - m.va[f], y["g_tt"][l], y["b_tt"][l],
                                        y["g_tf"][l], y["b_tf"][l], cos, sin)
    at_bus: list[list[tuple[dict, dict, int]]] = [[] for _ in buses]
    for l in range(d.n_branch):
        at_bus[fb[l]].append((pf, qf, l))
        at_bus[tb[l]].append((pt, qt, l))
    gens_at: list[list[int]] = [[] for _ in buses]
    for g, i in enumerate(d.gen_bus.tolist()):
        gens_at[i].append(g)

    def p_rule(_, i):
        return (sum(m.pg[g] for g in gens_at[i]) - float(d.pd_pu[i]) - float(d.gs_pu[i]) * m.vm[i] ** 2
                - sum(p[l] for p, _q, l in at_bus[i])) == 0

    def q_rule(_, i):
        return (sum(m.qg[g] for g in gens_at[i]) - float(d.qd_pu[i]) + float(d.bs_pu[i]) * m.vm[i] ** 2
                - sum(q[l] for _p, q, l in at_bus[i])) == 0

    m.p_balance = pyo.Constraint(buses, rule=p_rule)
    m.q_balance = pyo.Constraint(buses, rule=q_rule)
    lim = d.limited.tolist()
    rate = d.rate_pu.tolist()
    m.flow_f = pyo.Constraint(lim, rule=lambda _, l: flow_limit_residual(pf[l], qf[l], m.vm[fb[l]], rate[l], convention) <= 0)
    m.flow_t = pyo.Constraint(lim, rule=lambda _, l: flow_limit_residual(pt[l], qt[l], m.vm[tb[l]], rate[l], convention) <= 0)

    def angle_rule(_, l):
        return (_bound(d.angmin[l]), m.va[fb[l]] - m.va[tb[l]], _bound(d.angmax[l]))

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
