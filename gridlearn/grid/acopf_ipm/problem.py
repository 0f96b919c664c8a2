"""The AC-OPF of one network under B scenarios as one batched NLP in torch, evaluated from `ACPolar`.

Variables ``x`` (B, n): the free entries of the layout ``z = (va, vm, pg, qg)``, as in
`acopf_nlp.ACOPFNLP`: reference angles (and, pandapower convention, ext_grid voltages) are
constants; so is any variable whose two bounds are equal (a unit with pmin = pmax). After them,
one epigraph variable per generator with a piecewise-linear cost (MATPOWER's formulation, as
`acopf_model` and `acopf_nlp` state it), its cost y_j in units of `Structure.pwl_unit` $/h. Then

    min  s_f f(x)                    (f: `QuadraticCost` of pg, of qg where reactive power is priced, + sum y)
    s.t. s_c c(x) = 0                (c: p and q balances, 2 n_bus rows)
         s_h h(x) <= 0               (h: variable bounds, flow limits, angle limits, epigraph segments
                                      slope_k pg_g + intercept_k - y_j <= 0)

``s_f``, ``s_c``, ``s_h`` are Ipopt's gradient-based scaling (``nlp_scaling_method``,
``max(1e-8, min(1, 100 / |row gradient|_inf))`` at the start point), per scenario. Every
value and derivative of the physics is `ACPolar`'s; this module only maps its layout onto
the free variables and groups the inequality rows. Each inequality row has at most four
nonzeros (a bound: one; a flow limit: va and vm at its two buses; an angle limit: two), so
the inequality Jacobian is kept as a padded ``(B, n_ineq, 4)`` value table over a fixed
``(n_ineq, 4)`` column table (pad column ``n``: a dummy, always multiplied by 0).

Scenario data: loads ``(B, n_bus)``, cost coefficients ``(B, n_gen)``, branch parameters
``(n_branch,)`` or ``(B, n_branch)``; any may carry autograd history (the backward
re-evaluates this problem at the solution with them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.grid.acopf_model import ACOPFArrays
from gridlearn.grid.acphysics import ACPolar, QuadraticCost, pi_admittance_parts
from gridlearn.grid.formulations import Convention

#: Ipopt's ``nlp_scaling_max_gradient`` and ``nlp_scaling_min_value``.
SCALING_MAX_GRADIENT = 100.0
SCALING_MIN_VALUE = 1e-8


@dataclass(frozen=True)
class Structure:
    """What every scenario shares: index maps, bounds, the inequality tables (built once, on a device)."""

    n_bus: int
    n_gen: int
    n_z: int
    n: int  # free variables
    free: Tensor  # (n,) positions in z
    pos: np.ndarray  # (n_z,) position in x of each z entry, n for a constant
    z_const: Tensor  # (n_z,) values of the constants
    eq_entries: Tensor  # ACPolar Jacobian entries of the balance rows
    eq_rows: Tensor
    eq_cols: Tensor  # in x (n = dropped)
    n_eq: int
    # inequality rows: [x >= lb (finite), x <= ub (finite), flow limits, angle <= max, angle >= min]
    n_ineq: int
    n_bound: int
    bound_cols: Tensor  # (n_bound,) x column of each bound row
    bound_sign: Tensor  # (n_bound,) -1 lower, +1 upper: h = sign (x - bound)
    bound_value: Tensor
    form_table: Tensor  # (n_form_rows, 4) ACPolar Jacobian entry of each nonzero (nnz = pad: value 0)
    form_cols: Tensor  # (n_form_rows, 4) x column (n = pad)
    form_rows: Tensor  # (n_ineq - n_bound,) row of ACPolar's inequality part each inequality takes
    form_sign: Tensor  # (n_ineq - n_bound,) +1 (h <= 0, angle <= max), -1 (angle >= min)
    form_offset: Tensor  # (n_ineq - n_bound,) subtracted after the sign: angmax, or -angmin
    n_lim: int
    ineq_cols: Tensor  # (n_ineq, 4) x column of each nonzero (n = pad)
    hes_r: Tensor  # ACPolar Hessian entries in x (n = dropped), both triangles listed for off-diagonal ones
    hes_c: Tensor
    hes_src: Tensor  # which ACPolar Hessian entry each (hes_r, hes_c) takes
    pg_cols: Tensor  # (n_gen,) x column of each pg (n = constant)
    form_table_rows: Tensor  # form_table[form_rows]: (n_ineq - n_bound, 4)
    eq_rows_np: np.ndarray  # eq_rows, eq_cols, ineq_cols as numpy (the CPU kernels' index arrays)
    eq_cols_np: np.ndarray
    ineq_cols_np: np.ndarray
    eq_prefix: bool  # eq_entries == arange: the balance rows' entries are a slice of ACPolar's (no gather)
    bound_jacobian: Tensor  # (n_bound, 4) the bound rows' constant Jacobian (bound_sign, then pads)
    # Epigraph variables y (the last n_pwl columns of x) and their segment rows (the last n_seg of h)
    n_free: int  # free entries of z (x's first n_free columns)
    n_pwl: int
    n_seg: int
    pwl_gen: Tensor  # (n_seg,) generator of each segment
    pwl_var: Tensor  # (n_seg,) its epigraph variable (0..n_pwl-1)
    pwl_slope: Tensor  # (n_seg,) $/h per pu
    pwl_icpt: Tensor  # (n_seg,) $/h
    pwl_jacobian: Tensor  # (n_seg, 4) the segment rows' constant Jacobian (slope at pg, -1 at y, pads)
    pwl_unit: float  # $/h per unit of an epigraph variable (`_unit`): x holds y / pwl_unit
    qg_cols: Tensor  # (n_gen,) x column of each qg (n = constant)
    obj_cols: Tensor  # x column of each entry of the objective's Hessian diagonal: pg, then qg if priced
    grad_cols: Tensor  # x column of each entry of the objective's gradient: obj_cols, then y


def build_structure(d: ACOPFArrays, form: ACPolar, device, dtype) -> Structure:
    """Index maps of the free variables and the inequality tables, from the numpy `ACOPFArrays`."""
    nb, ng = d.n_bus, d.n_gen
    nz = 2 * nb + 2 * ng
    lb = np.concatenate([np.full(nb, -np.inf), d.vmin, d.pmin, d.qmin])
    ub = np.concatenate([np.full(nb, np.inf), d.vmax, d.pmax, d.qmax])
    fixed = np.zeros(nz, dtype=bool)
    z_const = np.zeros(nz)
    for i, v in d.va_fixed.items():
        fixed[i], z_const[i] = True, v
    for i, v in d.vm_fixed.items():
        fixed[nb + i], z_const[nb + i] = True, v
    equal = np.isfinite(lb) & (ub - lb <= 1e-12) & ~fixed  # a degenerate range: the variable is a constant
    fixed |= equal
    z_const[equal] = lb[equal]
    free = np.flatnonzero(~fixed)
    n_free = free.size
    n = n_free + d.n_pwl
    pos = np.full(nz, n, dtype=np.int64)
    pos[free] = np.arange(n_free)

    rows, cols = form.jacobian_pattern()
    eq = np.flatnonzero(rows < 2 * nb)
    ineq = np.flatnonzero(rows >= 2 * nb)
    # Group ACPolar's inequality entries (flow limits, then angle rows) by row, padded to 4.
    nnz = rows.size
    n_form_rows = form.n_lim + form.n_ang
    table = np.full((n_form_rows, 4), nnz, dtype=np.int64)
    fill = np.zeros(n_form_rows, dtype=np.int64)
    for e in ineq:
        r = rows[e] - 2 * nb
        table[r, fill[r]] = e
        fill[r] += 1
    col_of_entry = np.concatenate([pos[cols], [n]])
    form_cols = col_of_entry[table]
    ang = d.angle_limited
    up = np.flatnonzero(np.isfinite(d.angmax[ang]))
    lo = np.flatnonzero(np.isfinite(d.angmin[ang]))
    form_rows = np.concatenate([np.arange(form.n_lim), form.n_lim + up, form.n_lim + lo])
    form_sign = np.concatenate([np.ones(form.n_lim + up.size), -np.ones(lo.size)])
    form_offset = np.concatenate([np.zeros(form.n_lim), d.angmax[ang][up], -d.angmin[ang][lo]])

    lbx, ubx = lb[free], ub[free]
    has_lo, has_up = np.flatnonzero(np.isfinite(lbx)), np.flatnonzero(np.isfinite(ubx))
    bound_cols = np.concatenate([has_lo, has_up])
    bound_sign = np.concatenate([-np.ones(has_lo.size), np.ones(has_up.size)])
    bound_value = np.concatenate([lbx[has_lo], ubx[has_up]])
    n_bound = bound_cols.size
    bound_tab = np.full((n_bound, 4), n, dtype=np.int64)
    bound_tab[:, 0] = bound_cols
    # Epigraph segments: slope pg + icpt - y <= 0 (a constant pg: column n, entry 0)
    n_seg = d.pwl_gen.size
    pg_of_seg = pos[2 * nb + d.pwl_gen]
    pwl_tab = np.full((n_seg, 4), n, dtype=np.int64)
    pwl_tab[:, 0], pwl_tab[:, 1] = pg_of_seg, n_free + d.pwl_var
    pwl_jac = np.zeros((n_seg, 4))
    pwl_jac[:, 0], pwl_jac[:, 1] = np.where(pg_of_seg < n, d.pwl_slope, 0.0), -_unit(d)
    ineq_cols = np.concatenate([bound_tab, form_cols[form_rows], pwl_tab])
    pg_cols, qg_cols = pos[2 * nb + np.arange(ng)], pos[2 * nb + ng + np.arange(ng)]
    obj_cols = np.concatenate([pg_cols] + ([qg_cols] if d.cq2 is not None else []))

    hr, hc = form.hessian_pattern()
    hr, hc = pos[hr], pos[hc]
    keep = (hr < n) & (hc < n)
    src = np.flatnonzero(keep)
    off = src[hr[src] != hc[src]]
    hes_r = np.concatenate([hr[src], hc[off]])
    hes_c = np.concatenate([hc[src], hr[off]])
    hes_src = np.concatenate([src, off])

    def t(a, dt=torch.long):
        return torch.as_tensor(np.asarray(a), dtype=dt, device=device)

    return Structure(
        n_bus=nb, n_gen=ng, n_z=nz, n=n, free=t(free), pos=pos, z_const=t(z_const, dtype),
        eq_entries=t(eq), eq_rows=t(rows[eq]), eq_cols=t(pos[cols[eq]]), n_eq=2 * nb,
        n_ineq=n_bound + form_rows.size + n_seg, n_bound=n_bound, bound_cols=t(bound_cols), bound_sign=t(bound_sign, dtype),
        bound_value=t(bound_value, dtype), form_table=t(table), form_cols=t(form_cols), form_rows=t(form_rows),
        form_sign=t(form_sign, dtype), form_offset=t(form_offset, dtype), n_lim=form.n_lim, ineq_cols=t(ineq_cols),
        hes_r=t(hes_r), hes_c=t(hes_c), hes_src=t(hes_src), pg_cols=t(pg_cols),
        form_table_rows=t(table[form_rows]), eq_prefix=bool(np.array_equal(eq, np.arange(eq.size))),
        eq_rows_np=np.ascontiguousarray(rows[eq]), eq_cols_np=np.ascontiguousarray(pos[cols[eq]]),
        ineq_cols_np=np.ascontiguousarray(ineq_cols),
        bound_jacobian=t(np.pad(bound_sign[:, None], ((0, 0), (0, 3))), dtype),
        n_free=n_free, n_pwl=d.n_pwl, n_seg=n_seg, pwl_gen=t(d.pwl_gen), pwl_var=t(d.pwl_var),
        pwl_slope=t(d.pwl_slope, dtype), pwl_icpt=t(d.pwl_icpt, dtype), pwl_jacobian=t(pwl_jac, dtype),
        pwl_unit=_unit(d), qg_cols=t(qg_cols), obj_cols=t(obj_cols),
        grad_cols=t(np.concatenate([obj_cols, n_free + np.arange(d.n_pwl)])),
    )


def _unit(d: ACOPFArrays) -> float:
    """$/h per unit of an epigraph variable: the largest segment slope ($/h per pu), so that a segment row
    ``slope pg + icpt - unit t <= 0`` has entries of one size in pg and t, as the polynomial costs' own
    gradients are (c1 B). In $/h (unit 1, Ipopt's formulation) the (pg, y) block of K, ``sigma (slope,
    -1)(slope, -1)^T`` with one binding segment, spans slope^2 ~ 1e7, and the sparse path's static pivots
    lost the Newton steps' accuracy: case30pwl stalled at dual error 1e-6 on 2 of 4 +-10% load scenarios
    (converged in 20-25 iterations with this unit), and the objective gradient's size, 1, made the
    multiplier tests (`ipm`) call a feasible +10% scenario INFEASIBLE."""
    return float(np.abs(d.pwl_slope).max()) if d.pwl_slope.size else 1.0


@dataclass(frozen=True)
class Scenarios:
    """The per-scenario data of B scenarios (torch, leading dimension B; branch parts may be 1-D)."""

    pd_pu: Tensor  # (B, n_bus)
    qd_pu: Tensor
    cost: QuadraticCost  # coefficients (B, n_gen)
    form: ACPolar  # torch; admittances (n_end,) or (B, n_end)
    reactive_cost: QuadraticCost | None = None  # of qg (MVAr in its units), coefficients (n_gen,); None: unpriced

    @property
    def batch(self) -> int:
        return int(self.pd_pu.shape[0])

    def take(self, idx: Tensor) -> "Scenarios":
        """The scenarios ``idx`` (the interior point iterates only on those not yet finished)."""
        def sel(v):
            return v[idx] if isinstance(v, Tensor) and v.dim() == 2 else v

        f = self.form
        form = dataclasses.replace(f, **{k: sel(getattr(f, k)) for k in
                                         ("g_self", "b_self", "g_mut", "b_mut", "gs_pu", "bs_pu", "rate_pu")})
        c = self.cost
        cost = QuadraticCost(sel(c.c2_usd_per_mw2h), sel(c.c1_usd_per_mwh), sel(c.c0_usd_per_h), c.base_mva)
        return Scenarios(sel(self.pd_pu), sel(self.qd_pu), cost, form, self.reactive_cost)


def scenarios_from(network, d: ACOPFArrays, convention: Convention, theta: dict[str, Tensor], batch: int, device,
                   dtype) -> Scenarios:
    """`Scenarios` from the network's numpy arrays ``d`` and the torch parameters ``theta``.

    ``theta`` holds any of pd_mw, qd_mvar (B, n_bus), cost_c2/c1/c0 (B, n_gen), r_pu, x_pu,
    g_pu, b_pu ((n_branch,) or (B, n_branch)); missing ones come from ``d``. Tensors keep their
    autograd history, so the backward can differentiate the problem with respect to them.
    """
    def arr(a):
        return torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)

    base = d.base_mva

    def get(name, default):
        v = theta.get(name)
        return arr(default) if v is None else v.to(device=device, dtype=dtype)

    pd = get("pd_mw", d.pd_pu * base).expand(batch, d.n_bus) / base
    qd = get("qd_mvar", d.qd_pu * base).expand(batch, d.n_bus) / base
    cost = QuadraticCost(get("cost_c2_usd_per_mw2h", d.c2).expand(batch, d.n_gen),
                         get("cost_c1_usd_per_mwh", d.c1).expand(batch, d.n_gen),
                         get("cost_c0_usd_per_h", d.c0).expand(batch, d.n_gen), base)
    branch = {k: theta.get(k) for k in ("r_pu", "x_pu", "g_pu", "b_pu")}
    if all(v is None for v in branch.values()):
        adm = {k: arr(v) for k, v in d.adm.items()}
    else:
        br = network.branch
        r, x, g, b = (getattr(br, k).detach().to(device=device, dtype=dtype) if v is None
                      else v.to(device=device, dtype=dtype) for k, v in branch.items())
        tap, shift = br.tap.detach().to(device=device, dtype=dtype), br.shift_rad.detach().to(device=device, dtype=dtype)
        adm = pi_admittance_parts(r, x, g, b, tap, shift, torch.cos, torch.sin)
    form = ACPolar.from_branches(adm, torch.as_tensor(d.from_bus), torch.as_tensor(d.to_bus),
                                 torch.as_tensor(d.gen_bus), arr(d.gs_pu), arr(d.bs_pu), convention.branch_limit,
                                 n_bus=d.n_bus, limited=torch.as_tensor(d.limited), rate_pu=arr(d.rate_pu),
                                 angle_branches=torch.as_tensor(d.angle_limited))
    form = dataclasses.replace(form, **{k: getattr(form, k).to(device) for k in
                                        ("here", "there", "gen_bus", "limited_ends", "angle_branches")})
    reactive = None if d.cq2 is None else QuadraticCost(arr(d.cq2), arr(d.cq1), arr(d.cq0), base)
    return Scenarios(pd, qd, cost, form, reactive)


@dataclass
class Evaluation:
    """The scaled NLP at B points: values and sparse derivatives (see the module docstring)."""

    f: Tensor  # (B,) scaled objective
    grad_f: Tensor  # (B, n)
    c: Tensor  # (B, n_eq) scaled equalities
    jc: Tensor  # (B, nnz_eq) values at (eq_rows, eq_cols)
    h: Tensor  # (B, n_ineq) scaled inequalities (<= 0)
    jh: Tensor  # (B, n_ineq, 4) values at ineq_cols
    ends: object = None  # ACPolar EndState, for the Hessian
    jac: object = None
    vm: Tensor | None = None

    def take(self, idx: Tensor) -> "Evaluation":
        """The scenarios ``idx`` (every field has the batch first; ACPolar's end terms too)."""
        def sel(v):
            return v[idx] if isinstance(v, Tensor) and v.dim() >= 1 else v

        def sel_all(obj):
            if obj is None:
                return None
            return type(obj)(*(tuple(sel(u) for u in v) if isinstance(v, tuple) else sel(v)
                               for v in (getattr(obj, k) for k in obj.__slots__)))

        return Evaluation(*(sel(getattr(self, k)) for k in ("f", "grad_f", "c", "jc", "h", "jh")),
                          sel_all(self.ends), sel_all(self.jac), sel(self.vm))

    @staticmethod
    def stack_rows(parts: list[tuple[Tensor, "Evaluation"]], batch: int) -> "Evaluation":
        """One evaluation of ``batch`` rows from values-only pieces ``(rows, evaluation of those rows)``."""
        if len(parts) == 1:
            return parts[0][1]
        order = torch.argsort(torch.cat([r for r, _ in parts]))

        def cat(vs):
            return torch.cat(vs)[order]

        evs = [e for _, e in parts]
        ends = type(evs[0].ends)(*(cat([getattr(e.ends, k) for e in evs]) for k in evs[0].ends.__slots__))
        return Evaluation(cat([e.f for e in evs]), None, cat([e.c for e in evs]), None, cat([e.h for e in evs]), None,
                          ends, None, cat([e.vm for e in evs]))


def to_z(st: Structure, x: Tensor) -> Tensor:
    """The full layout z (B, n_z) from the variables x (B, n) (the epigraph variables are not in z)."""
    return st.z_const.expand(x.shape[0], st.n_z).index_copy(1, st.free, x[:, : st.n_free])


def with_epigraph(st: Structure, x_free: Tensor) -> Tensor:
    """x (B, n) from the free entries of z (B, n_free): each epigraph variable at its generator's cost
    there (the largest of its segments), as `ACOPFArrays.pwl_start` starts Ipopt."""
    if not st.n_pwl:
        return x_free
    pg = to_z(st, x_free)[:, 2 * st.n_bus:][:, st.pwl_gen]
    seg = st.pwl_slope * pg + st.pwl_icpt
    y = seg.new_full((x_free.shape[0], st.n_pwl), -float("inf"))
    y = y.scatter_reduce(1, st.pwl_var.expand_as(seg), seg, "amax")
    return torch.cat([x_free, y / st.pwl_unit], 1)


def objective(st: Structure, sc: Scenarios, x: Tensor, pg: Tensor, qg: Tensor) -> Tensor:
    """(B,) generation cost, $/h: polynomial in pg, in qg where reactive power is priced, plus the epigraph
    variables (at a solution, each piecewise-linear cost)."""
    f = sc.cost.per_generator(pg).sum(-1)
    if sc.reactive_cost is not None:
        f = f + sc.reactive_cost.per_generator(qg).sum(-1)
    return f + st.pwl_unit * x[:, st.n_free :].sum(-1) if st.n_pwl else f


def scatter_cols(values: Tensor, cols: Tensor, n: int) -> Tensor:
    """Sum ``values[..., k]`` into column ``cols[k]`` of a (B, n) array (column n: dropped)."""
    out = torch.zeros(values.shape[0], n + 1, dtype=values.dtype, device=values.device)
    return out.index_add(1, cols.reshape(-1), values.reshape(values.shape[0], -1))[:, :n]


def evaluate(st: Structure, sc: Scenarios, x: Tensor, s_f: Tensor, s_c: Tensor, s_h: Tensor,
             derivatives: bool = True, values: Evaluation | None = None) -> Evaluation:
    """Objective, constraints and their Jacobians at ``x`` (B, n), scaled by ``s_f`` (B,), ``s_c``, ``s_h``.

    ``derivatives=False``: values only (``grad_f``, ``jc``, ``jh`` None), what a line-search trial needs.
    ``values``: such a values-only evaluation at this same ``x`` and scaling (the accepted trial
    point): only the derivatives are computed.
    """
    form = sc.form
    z = to_z(st, x)
    va, vm, pg, qg = form.split(z)
    if values is not None:
        return _derivatives(st, sc, x, pg, qg, values.ends, values.vm, s_f, s_c, s_h, values.f, values.c, values.h)
    ends = form.end_state(va, vm)
    f = objective(st, sc, x, pg, qg)
    c_p, c_q = form.balance(ends, vm, pg, qg, sc.pd_pu, sc.qd_pu)
    c = torch.cat([c_p, c_q], -1)
    h_form = torch.cat([form.limit_residual(ends), form.angle_difference(va)], -1).expand(x.shape[0], -1)
    h_form = h_form[:, st.form_rows] * st.form_sign - st.form_offset
    h_bound = st.bound_sign * (x[:, st.bound_cols] - st.bound_value)
    parts = [h_bound, h_form]
    if st.n_seg:
        parts.append(st.pwl_slope * pg[:, st.pwl_gen] + st.pwl_icpt - st.pwl_unit * x[:, st.n_free + st.pwl_var])
    h = torch.cat(parts, -1)
    if not derivatives:
        return Evaluation(f * s_f, None, c * s_c, None, h * s_h, None, ends, None, vm)
    return _derivatives(st, sc, x, pg, qg, ends, vm, s_f, s_c, s_h, f * s_f, c * s_c, h * s_h)


def objective_gradient(st: Structure, sc: Scenarios, x: Tensor, pg: Tensor, qg: Tensor) -> Tensor:
    """(B, n) d f / d x, unscaled, at x (dispatch pg, qg): the polynomial costs' derivatives, and
    `Structure.pwl_unit` for each epigraph variable."""
    parts = [sc.cost.gradient(pg)]
    if sc.reactive_cost is not None:
        parts.append(sc.reactive_cost.gradient(qg).expand_as(qg))
    if st.n_pwl:
        parts.append(torch.full_like(x[:, st.n_free :], st.pwl_unit))
    return scatter_cols(torch.cat(parts, -1) if len(parts) > 1 else parts[0], st.grad_cols, st.n)


def _derivatives(st: Structure, sc: Scenarios, x: Tensor, pg: Tensor, qg: Tensor, ends, vm: Tensor, s_f: Tensor, s_c: Tensor,
                 s_h: Tensor, f: Tensor, c: Tensor, h: Tensor) -> Evaluation:
    """`evaluate`'s Jacobians at the end state ``ends``, with the scaled values ``f``, ``c``, ``h``."""
    form = sc.form
    jac = form.end_jacobian(ends)
    grad_f = objective_gradient(st, sc, x, pg, qg)
    jv = form.jacobian_values(ends, jac, vm).expand(x.shape[0], -1)
    jc = jv[:, : st.eq_entries.numel()] if st.eq_prefix else jv[:, st.eq_entries]
    jv_pad = torch.cat([jv, torch.zeros_like(jv[:, :1])], -1)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (jv, s_h)):
        j_form = jv_pad[:, st.form_table_rows] * st.form_sign[:, None]
        jh = torch.cat([st.bound_jacobian.expand(x.shape[0], -1, -1), j_form,
                        st.pwl_jacobian.expand(x.shape[0], -1, -1)], 1) * s_h[..., None]
    else:  # the iteration's: the same products written into one buffer (no cat, no temporary)
        jh = torch.empty(x.shape[0], st.n_ineq, 4, dtype=jv.dtype, device=jv.device)
        n_b, n_p = st.n_bound, st.n_ineq - st.n_seg
        torch.mul(st.bound_jacobian, s_h[:, :n_b, None], out=jh[:, :n_b])
        torch.mul(jv_pad[:, st.form_table_rows], st.form_sign[:, None], out=jh[:, n_b:n_p])
        jh[:, n_b:n_p] *= s_h[:, n_b:n_p, None]
        torch.mul(st.pwl_jacobian, s_h[:, n_p:, None], out=jh[:, n_p:])
    return Evaluation(f, grad_f * s_f[:, None], c, jc * s_c[:, st.eq_rows], h, jh, ends, jac, vm)


def lagrangian_hessian(st: Structure, sc: Scenarios, ev: Evaluation, lam: Tensor, mu: Tensor, s_f: Tensor,
                       s_c: Tensor, s_h: Tensor, src: Tensor | None = None) -> Tensor:
    """Entries (B, len(hes_r)) of the scaled Lagrangian's Hessian at (hes_r, hes_c), both triangles.

    The bound and angle rows are linear (no Hessian); the flow limits' multipliers enter
    `ACPolar.hessian_values` in its layout ``(balances, flow limits, angle rows)``. The
    objective's diagonal in pg is appended by the caller (`objective_hessian_diagonal`).
    ``src``: which of them (default all of `Structure.hes_src`; the sparse KKT path asks only for those
    in its lower triangle, `kkt.KKTPattern.hes_src`).
    """
    form = sc.form
    mu_flow = (mu * s_h)[:, st.n_bound : st.n_bound + st.n_lim]
    lam_layout = torch.cat([lam * s_c, mu_flow, torch.zeros_like(lam[:, : form.n_ang])], -1)
    hv = form.hessian_values(ev.ends, ev.jac, lam_layout).expand(lam.shape[0], -1)
    return hv[:, st.hes_src if src is None else src]


def objective_hessian_diagonal(st: Structure, sc: Scenarios, s_f: Tensor) -> Tensor:
    """(B, len(obj_cols)) d2 (s_f f) / d pg2, then d2 (s_f f) / d qg2 where reactive power is priced
    (a constant pg or qg has column n: dropped; the epigraph variables enter f linearly)."""
    d2 = sc.cost.hessian_diagonal()
    if sc.reactive_cost is not None:
        d2 = torch.cat([d2, sc.reactive_cost.hessian_diagonal().expand_as(d2)], -1)
    return d2 * s_f[:, None]


def gradient_scaling(st: Structure, ev: Evaluation, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Ipopt's gradient-based scale factors (s_f, s_c, s_h) from an unscaled `Evaluation` at the start."""
    def factor(g):
        return torch.clamp(SCALING_MAX_GRADIENT / g.clamp_min(1e-300), SCALING_MIN_VALUE, 1.0)

    s_f = factor(ev.grad_f.abs().amax(-1))
    row_max = torch.zeros(batch, st.n_eq, dtype=ev.jc.dtype, device=ev.jc.device)
    row_max = row_max.scatter_reduce(1, st.eq_rows.expand(batch, -1), ev.jc.abs(), "amax")
    s_c = factor(row_max)
    s_h = factor(ev.jh.abs().amax(-1))
    return s_f, s_c, s_h
