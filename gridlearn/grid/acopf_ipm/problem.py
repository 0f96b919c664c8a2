"""The AC-OPF of one network under B scenarios as one batched NLP in torch, evaluated from `ACPolar`.

Variables ``x`` (B, n): the free entries of the layout ``z = (va, vm, pg, qg)``, as in
`acopf_nlp.ACOPFNLP`: reference angles (and, pandapower convention, ext_grid voltages) are
constants; so is any variable whose two bounds are equal (a unit with pmin = pmax). Then

    min  s_f f(x)                                    (f: `QuadraticCost`, $/h)
    s.t. s_c c(x) = 0                                (c: p and q balances, 2 n_bus rows)
         s_h h(x) <= 0                               (h: variable bounds, flow limits, angle limits)

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
    n = free.size
    pos = np.full(nz, n, dtype=np.int64)
    pos[free] = np.arange(n)

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
    ineq_cols = np.concatenate([bound_tab, form_cols[form_rows]])

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
        n_ineq=n_bound + form_rows.size, n_bound=n_bound, bound_cols=t(bound_cols), bound_sign=t(bound_sign, dtype),
        bound_value=t(bound_value, dtype), form_table=t(table), form_cols=t(form_cols), form_rows=t(form_rows),
        form_sign=t(form_sign, dtype), form_offset=t(form_offset, dtype), n_lim=form.n_lim, ineq_cols=t(ineq_cols),
        hes_r=t(hes_r), hes_c=t(hes_c), hes_src=t(hes_src), pg_cols=t(pos[2 * nb + np.arange(ng)]),
        form_table_rows=t(table[form_rows]), eq_prefix=bool(np.array_equal(eq, np.arange(eq.size))),
        eq_rows_np=np.ascontiguousarray(rows[eq]), eq_cols_np=np.ascontiguousarray(pos[cols[eq]]),
        ineq_cols_np=np.ascontiguousarray(ineq_cols),
        bound_jacobian=t(np.pad(bound_sign[:, None], ((0, 0), (0, 3))), dtype),
    )


@dataclass(frozen=True)
class Scenarios:
    """The per-scenario data of B scenarios (torch, leading dimension B; branch parts may be 1-D)."""

    pd_pu: Tensor  # (B, n_bus)
    qd_pu: Tensor
    cost: QuadraticCost  # coefficients (B, n_gen)
    form: ACPolar  # torch; admittances (n_end,) or (B, n_end)

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
        return Scenarios(sel(self.pd_pu), sel(self.qd_pu), cost, form)


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
    return Scenarios(pd, qd, cost, form)


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
    """The full layout z (B, n_z) from the free variables x (B, n)."""
    return st.z_const.expand(x.shape[0], st.n_z).index_copy(1, st.free, x)


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
        return _derivatives(st, sc, x, pg, values.ends, values.vm, s_f, s_c, s_h,
                            values.f, values.c, values.h)
    ends = form.end_state(va, vm)
    f = sc.cost.per_generator(pg).sum(-1)
    c_p, c_q = form.balance(ends, vm, pg, qg, sc.pd_pu, sc.qd_pu)
    c = torch.cat([c_p, c_q], -1)
    h_form = torch.cat([form.limit_residual(ends), form.angle_difference(va)], -1).expand(x.shape[0], -1)
    h_form = h_form[:, st.form_rows] * st.form_sign - st.form_offset
    h_bound = st.bound_sign * (x[:, st.bound_cols] - st.bound_value)
    h = torch.cat([h_bound, h_form], -1)
    if not derivatives:
        return Evaluation(f * s_f, None, c * s_c, None, h * s_h, None, ends, None, vm)
    return _derivatives(st, sc, x, pg, ends, vm, s_f, s_c, s_h, f * s_f, c * s_c, h * s_h)


def _derivatives(st: Structure, sc: Scenarios, x: Tensor, pg: Tensor, ends, vm: Tensor, s_f: Tensor, s_c: Tensor,
                 s_h: Tensor, f: Tensor, c: Tensor, h: Tensor) -> Evaluation:
    """`evaluate`'s Jacobians at the end state ``ends``, with the scaled values ``f``, ``c``, ``h``."""
    form = sc.form
    jac = form.end_jacobian(ends)
    grad_f = scatter_cols(sc.cost.gradient(pg), st.pg_cols, st.n)
    jv = form.jacobian_values(ends, jac, vm).expand(x.shape[0], -1)
    jc = jv[:, : st.eq_entries.numel()] if st.eq_prefix else jv[:, st.eq_entries]
    jv_pad = torch.cat([jv, torch.zeros_like(jv[:, :1])], -1)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (jv, s_h)):
        j_form = jv_pad[:, st.form_table_rows] * st.form_sign[:, None]
        jh = torch.cat([st.bound_jacobian.expand(x.shape[0], -1, -1), j_form], 1) * s_h[..., None]
    else:  # the iteration's: the same products written into one buffer (no cat, no temporary)
        jh = torch.empty(x.shape[0], st.n_ineq, 4, dtype=jv.dtype, device=jv.device)
        n_b = st.n_bound
        torch.mul(st.bound_jacobian, s_h[:, :n_b, None], out=jh[:, :n_b])
        torch.mul(jv_pad[:, st.form_table_rows], st.form_sign[:, None], out=jh[:, n_b:])
        jh[:, n_b:] *= s_h[:, n_b:, None]
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
    """(B, n_gen) d2 (s_f f) / d pg2 (a generator whose pg is constant has column n: dropped)."""
    return sc.cost.hessian_diagonal() * s_f[:, None]


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
