"""The AC-OPF as an Ipopt NLP with vectorised numpy callbacks (analytic sparse derivatives).

The same problem as the Pyomo model in `acopf_model` (see its docstring; physics from
`formulations`), posed directly to Ipopt through cyipopt. Why not Pyomo for every solve:
on case118 Pyomo spent ~75% of an end-to-end solve building the expression tree and
writing the NL file (one Python object per term), against ~20% in Ipopt. Here the model
"build" is a few numpy index arrays and each callback is a handful of array operations
over all branches at once. The Pyomo model stays as the readable reference; the tests
check both give the same optimum and multipliers.

Variables ``x``: the free entries of ``z = (va, vm, pg, qg)`` (per unit, radians); the
reference angles and (pandapower convention) the ext_grid voltages are constants, as in
Pyomo, where fixed variables never reach Ipopt. Constraints ``g(x)``, in this order:
``p_balance`` (n_bus), ``q_balance`` (n_bus), ``flow_f`` and ``flow_t`` (one per branch
with a finite rate, ``<= 0``), ``angle`` (branches with an enforced angle limit).

Derivatives of one branch end (``formulations.branch_end_power``), with
``theta = va_here - va_there``, ``A = g_mut cos(theta) + b_mut sin(theta)``,
``B = g_mut sin(theta) - b_mut cos(theta)`` (so ``A' = -B``, ``B' = A``):

    P = g_self vh^2 + vh vo A      Q = -b_self vh^2 + vh vo B
    dP/d(theta, vh, vo) = (-vh vo B, 2 g_self vh + vo A, vh A)
    dQ/d(theta, vh, vo) = ( vh vo A, -2 b_self vh + vo B, vh B)
    d2P: tt -vh vo A, t-vh -vo B, t-vo -vh B, vh-vh 2 g_self, vh-vo A, vo-vo 0
    d2Q: tt -vh vo B, t-vh  vo A, t-vo  vh A, vh-vh -2 b_self, vh-vo B, vo-vo 0

and a flow limit ``h = P^2 + Q^2 - rate^2 [vh^2]`` has
``grad h = 2 P grad P + 2 Q grad Q [- 2 rate^2 vh e_vh]``,
``hess h = 2 (gP gP^T + P hess P + gQ gQ^T + Q hess Q) [- 2 rate^2 e_vh e_vh^T]``.
``d/dva_here = d/dtheta``, ``d/dva_there = -d/dtheta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridlearn.grid.acopf_model import ACOPFArrays
from gridlearn.grid.formulations import Convention


def _unique_pattern(rows: np.ndarray, cols: np.ndarray, keep: np.ndarray, n_cols: int):
    """Aggregate duplicate (row, col) entries: returns (rows, cols, inverse) for ``np.bincount``."""
    key = rows[keep].astype(np.int64) * n_cols + cols[keep]
    uniq, inverse = np.unique(key, return_inverse=True)
    return (uniq // n_cols).astype(np.int64), (uniq % n_cols).astype(np.int64), inverse


@dataclass
class _Point:
    """Branch-end quantities at one x (2 n_branch ends: from ends, then to ends)."""

    x: np.ndarray
    z: np.ndarray
    vh: np.ndarray
    vo: np.ndarray
    a: np.ndarray
    b: np.ndarray
    p: np.ndarray
    q: np.ndarray
    dp: tuple  # (d theta, d vh, d vo)
    dq: tuple


class ACOPFNLP:
    """cyipopt problem object for one AC-OPF (structure from `ACOPFArrays`, see module docstring).

    ``x_lb, x_ub, g_lb, g_ub``: bounds for Ipopt; ``to_x``/``to_z`` map between the full
    ``z`` and Ipopt's ``x``; ``jacobianstructure``/``hessianstructure`` are fixed at
    construction (lower triangle for the Hessian, duplicates summed in advance).
    """

    def __init__(self, d: ACOPFArrays, convention: Convention):
        self.d, self.conv = d, convention
        nb, ng, nl = d.n_bus, d.n_gen, d.n_branch
        self.nb, self.ng, self.nl = nb, ng, nl
        nz = 2 * nb + 2 * ng
        self.nz = nz
        self.base = d.base_mva
        fixed = np.zeros(nz, dtype=bool)
        self.z_const = np.zeros(nz)
        for i, v in d.va_fixed.items():
            fixed[i], self.z_const[i] = True, v
        for i, v in d.vm_fixed.items():
            fixed[nb + i], self.z_const[nb + i] = True, v
        self.fixed = fixed
        self.free = np.flatnonzero(~fixed)
        self.pos = np.full(nz, -1, dtype=np.int64)
        self.pos[self.free] = np.arange(self.free.size)
        # x = (free entries of z, then one epigraph variable per piecewise-linear cost).
        self.n_free = self.free.size
        self.n_pwl = d.n_pwl
        self.n = self.n_free + self.n_pwl
        lb = np.concatenate([np.full(nb, -np.inf), d.vmin, d.pmin, d.qmin])
        ub = np.concatenate([np.full(nb, np.inf), d.vmax, d.pmax, d.qmax])
        self.x_lb = np.concatenate([lb[self.free], np.full(self.n_pwl, -np.inf)])
        self.x_ub = np.concatenate([ub[self.free], np.full(self.n_pwl, np.inf)])

        # Branch ends: from ends (here = from bus) then to ends (here = to bus).
        y = d.adm
        self.h_bus = np.concatenate([d.from_bus, d.to_bus]).astype(np.int64)
        self.o_bus = np.concatenate([d.to_bus, d.from_bus]).astype(np.int64)
        self.g_self = np.concatenate([y["g_ff"], y["g_tt"]])
        self.b_self = np.concatenate([y["b_ff"], y["b_tt"]])
        self.g_mut = np.concatenate([y["g_ft"], y["g_tf"]])
        self.b_mut = np.concatenate([y["b_ft"], y["b_tf"]])
        self.lim_end = np.concatenate([d.limited, nl + d.limited]).astype(np.int64)
        rate = np.concatenate([d.rate_pu[d.limited], d.rate_pu[d.limited]])
        self.rate2 = rate * rate
        self.n_lim = self.lim_end.size
        self._rate2_end = np.zeros(2 * nl)
        self._rate2_end[self.lim_end] = self.rate2
        self.ang = d.angle_limited.astype(np.int64)
        n_seg = d.pwl_gen.size
        self.m = 2 * nb + self.n_lim + self.ang.size + n_seg  # epigraph rows last: slope pg - y + icpt <= 0
        self.g_lb = np.concatenate([np.zeros(2 * nb), np.full(self.n_lim, -np.inf), d.angmin[self.ang],
                                    np.full(n_seg, -np.inf)])
        self.g_ub = np.concatenate([np.zeros(2 * nb), np.zeros(self.n_lim), d.angmax[self.ang], np.zeros(n_seg)])
        self.gen_bus = d.gen_bus.astype(np.int64)
        self.cost2 = d.c2 * self.base * self.base  # $/h per pu^2
        self.cost1 = d.c1 * self.base
        self.qcost2 = None if d.cq2 is None else d.cq2 * self.base * self.base
        self.qcost1 = None if d.cq1 is None else d.cq1 * self.base
        self._build_jacobian_pattern()
        self._build_hessian_pattern()
        self._add_cost_patterns()
        self._pt: _Point | None = None

    # ------------------------------------------------------------------ index maps
    def to_x(self, z: np.ndarray) -> np.ndarray:
        """Ipopt's x at ``z``; the epigraph variables at the cost of z's dispatch."""
        if not self.n_pwl:
            return z[self.free]
        return np.concatenate([z[self.free], self.d.pwl_start(z[2 * self.nb : 2 * self.nb + self.ng])])

    def to_z(self, x: np.ndarray) -> np.ndarray:
        z = self.z_const.copy()
        z[self.free] = x[: self.n_free]
        return z

    def _add_cost_patterns(self) -> None:
        """Jacobian rows of the epigraph constraints, Hessian diagonal of the reactive cost (appended)."""
        nb, ng, d = self.nb, self.ng, self.d
        n_seg = d.pwl_gen.size
        if n_seg:
            rows = self.m - n_seg + np.arange(n_seg)
            pg_col = self.pos[2 * nb + d.pwl_gen]
            y_col = self.n_free + d.pwl_var
            self.jac_rows = np.concatenate([self.jac_rows, rows, rows]).astype(np.int64)
            self.jac_cols = np.concatenate([self.jac_cols, pg_col, y_col]).astype(np.int64)
        if self.qcost2 is not None:
            qpos = self.pos[2 * nb + ng + np.arange(ng)]
            self.hes_rows = np.concatenate([self.hes_rows, qpos]).astype(np.int64)
            self.hes_cols = np.concatenate([self.hes_cols, qpos]).astype(np.int64)

    def _end_vars(self):
        """Full-z indices (va_h, va_o, vm_h, vm_o) of every end, each (2 n_branch,)."""
        nb = self.nb
        return self.h_bus, self.o_bus, nb + self.h_bus, nb + self.o_bus

    def _build_jacobian_pattern(self) -> None:
        nb, ng = self.nb, self.ng
        gb = self.gen_bus
        vah, vao, vmh, vmo = self._end_vars()
        lim = self.lim_end
        flow_rows = 2 * nb + np.arange(self.n_lim)
        ang_rows = 2 * nb + self.n_lim + np.arange(self.ang.size)
        f, t = self.d.from_bus[self.ang], self.d.to_bus[self.ang]
        rows = [gb, nb + gb, np.arange(nb), nb + np.arange(nb),
                np.tile(self.h_bus, 4), np.tile(nb + self.h_bus, 4), np.tile(flow_rows, 4), ang_rows, ang_rows]
        cols = [2 * nb + np.arange(ng), 2 * nb + ng + np.arange(ng), nb + np.arange(nb), nb + np.arange(nb),
                np.concatenate([vah, vao, vmh, vmo]), np.concatenate([vah, vao, vmh, vmo]),
                np.concatenate([vah[lim], vao[lim], vmh[lim], vmo[lim]]), f, t]
        rows, cols = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
        self._jac_keep = ~self.fixed[cols]
        self.jac_rows, jc, self._jac_inv = _unique_pattern(rows, self.pos[cols], self._jac_keep, self.n)
        self.jac_cols = jc
        self._ang_vals = np.concatenate([np.ones(self.ang.size), -np.ones(self.ang.size)])

    def _build_hessian_pattern(self) -> None:
        nb, ng = self.nb, self.ng
        vah, vao, vmh, vmo = self._end_vars()
        # Per end, 10 entries: (vah,vah) (vao,vao) (vah,vao) (vah,vmh) (vao,vmh) (vah,vmo) (vao,vmo) (vmh,vmh) (vmh,vmo) (vmo,vmo)
        pairs = [(vah, vah), (vao, vao), (vah, vao), (vah, vmh), (vao, vmh), (vah, vmo), (vao, vmo), (vmh, vmh),
                 (vmh, vmo), (vmo, vmo)]
        r = np.concatenate([p[0] for p in pairs] + [nb + np.arange(nb), 2 * nb + np.arange(ng)]).astype(np.int64)
        c = np.concatenate([p[1] for p in pairs] + [nb + np.arange(nb), 2 * nb + np.arange(ng)]).astype(np.int64)
        keep = ~self.fixed[r] & ~self.fixed[c]
        pr, pc = self.pos[r], self.pos[c]
        lo, hi = np.minimum(pr, pc), np.maximum(pr, pc)
        self._hes_keep = keep
        self.hes_rows, self.hes_cols, self._hes_inv = _unique_pattern(hi, lo, keep, self.n)

    # ------------------------------------------------------------------ evaluation
    def _point(self, x: np.ndarray) -> _Point:
        pt = self._pt
        if pt is not None and np.array_equal(pt.x, x):
            return pt
        z = self.to_z(x)
        nb = self.nb
        va, vm = z[:nb], z[nb : 2 * nb]
        vh, vo = vm[self.h_bus], vm[self.o_bus]
        th = va[self.h_bus] - va[self.o_bus]
        c, s = np.cos(th), np.sin(th)
        a = self.g_mut * c + self.b_mut * s
        b = self.g_mut * s - self.b_mut * c
        vv = vh * vo
        p = self.g_self * vh * vh + vv * a
        q = -self.b_self * vh * vh + vv * b
        dp = (-vv * b, 2 * self.g_self * vh + vo * a, vh * a)
        dq = (vv * a, -2 * self.b_self * vh + vo * b, vh * b)
        self._pt = _Point(x.copy(), z, vh, vo, a, b, p, q, dp, dq)
        return self._pt

    def objective(self, x: np.ndarray) -> float:
        z = self.to_z(x)
        pg = z[2 * self.nb : 2 * self.nb + self.ng]
        f = float(np.sum((self.cost2 * pg + self.cost1) * pg + self.d.c0)) + float(np.sum(x[self.n_free :]))
        if self.qcost2 is not None:
            qg = z[2 * self.nb + self.ng :]
            f += float(np.sum((self.qcost2 * qg + self.qcost1) * qg + self.d.cq0))
        return f

    def gradient(self, x: np.ndarray) -> np.ndarray:
        z = self.to_z(x)
        g = np.zeros(self.nz)
        pg = z[2 * self.nb : 2 * self.nb + self.ng]
        g[2 * self.nb : 2 * self.nb + self.ng] = 2 * self.cost2 * pg + self.cost1
        if self.qcost2 is not None:
            g[2 * self.nb + self.ng :] = 2 * self.qcost2 * z[2 * self.nb + self.ng :] + self.qcost1
        return np.concatenate([g[self.free], np.ones(self.n_pwl)])

    def constraints(self, x: np.ndarray) -> np.ndarray:
        pt = self._point(x)
        nb, ng, d = self.nb, self.ng, self.d
        z = pt.z
        vm, pg, qg = z[nb : 2 * nb], z[2 * nb : 2 * nb + ng], z[2 * nb + ng :]
        vm2 = vm * vm
        c_p = np.bincount(self.gen_bus, pg, nb) - d.pd_pu - d.gs_pu * vm2 - np.bincount(self.h_bus, pt.p, nb)
        c_q = np.bincount(self.gen_bus, qg, nb) - d.qd_pu + d.bs_pu * vm2 - np.bincount(self.h_bus, pt.q, nb)
        lim = self.lim_end
        h = pt.p[lim] ** 2 + pt.q[lim] ** 2
        h = h - self.rate2 * pt.vh[lim] ** 2 if self.conv.branch_limit == "current" else h - self.rate2
        va = z[:nb]
        ang = va[d.from_bus[self.ang]] - va[d.to_bus[self.ang]]
        epi = d.pwl_slope * pg[d.pwl_gen] - x[self.n_free + d.pwl_var] + d.pwl_icpt
        return np.concatenate([c_p, c_q, h, ang, epi])

    def flow_gradients(self, pt: _Point):
        """d h / d(theta, vh, vo) of the limited ends."""
        lim = self.lim_end
        p, q = pt.p[lim], pt.q[lim]
        gt = 2 * (p * pt.dp[0][lim] + q * pt.dq[0][lim])
        gh = 2 * (p * pt.dp[1][lim] + q * pt.dq[1][lim])
        go = 2 * (p * pt.dp[2][lim] + q * pt.dq[2][lim])
        if self.conv.branch_limit == "current":
            gh = gh - 2 * self.rate2 * pt.vh[lim]
        return gt, gh, go

    def jacobianstructure(self):
        return self.jac_rows, self.jac_cols

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        pt = self._point(x)
        nb, d = self.nb, self.d
        vm = pt.z[nb : 2 * nb]
        gt, gh, go = self.flow_gradients(pt)
        vals = np.concatenate([
            np.ones(2 * self.ng), -2 * d.gs_pu * vm, 2 * d.bs_pu * vm,
            -pt.dp[0], pt.dp[0], -pt.dp[1], -pt.dp[2],
            -pt.dq[0], pt.dq[0], -pt.dq[1], -pt.dq[2],
            gt, -gt, gh, go, self._ang_vals,
        ])
        n_seg = d.pwl_gen.size
        out = np.bincount(self._jac_inv, vals[self._jac_keep], self.jac_rows.size - 2 * n_seg)
        return np.concatenate([out, d.pwl_slope, -np.ones(n_seg)]) if n_seg else out

    def hessianstructure(self):
        return self.hes_rows, self.hes_cols

    def hessian(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        pt = self._point(x)
        nb, ng, d = self.nb, self.ng, self.d
        lam_p, lam_q = lagrange[:nb], lagrange[nb : 2 * nb]
        # Weights of each end's P and Q in the Lagrangian: -lambda at its bus (+ 2 mu P for a limit).
        wp, wq = -lam_p[self.h_bus], -lam_q[self.h_bus]
        mu = np.zeros(2 * self.nl)
        mu[self.lim_end] = lagrange[2 * nb : 2 * nb + self.n_lim]
        wp = wp + 2 * mu * pt.p
        wq = wq + 2 * mu * pt.q
        vh, vo, a, b = pt.vh, pt.vo, pt.a, pt.b
        vv = vh * vo
        # Second derivatives in (theta, vh, vo): weighted Hessians of P and Q ...
        htt = wp * (-vv * a) + wq * (-vv * b)
        hth = wp * (-vo * b) + wq * (vo * a)
        hto = wp * (-vh * b) + wq * (vh * a)
        hhh = wp * (2 * self.g_self) + wq * (-2 * self.b_self)
        hho = wp * a + wq * b
        hoo = np.zeros_like(htt)
        # ... plus the Gauss-Newton part 2 mu (gP gP^T + gQ gQ^T) of the flow limits.
        dp, dq = pt.dp, pt.dq
        m2 = 2 * mu
        htt = htt + m2 * (dp[0] * dp[0] + dq[0] * dq[0])
        hth = hth + m2 * (dp[0] * dp[1] + dq[0] * dq[1])
        hto = hto + m2 * (dp[0] * dp[2] + dq[0] * dq[2])
        hhh = hhh + m2 * (dp[1] * dp[1] + dq[1] * dq[1])
        hho = hho + m2 * (dp[1] * dp[2] + dq[1] * dq[2])
        hoo = hoo + m2 * (dp[2] * dp[2] + dq[2] * dq[2])
        if self.conv.branch_limit == "current":
            hhh = hhh - m2 * self._rate2_end
        vals = np.concatenate([
            htt, htt, -htt, hth, -hth, hto, -hto, hhh, hho, hoo,
            -2 * d.gs_pu * lam_p + 2 * d.bs_pu * lam_q,
            obj_factor * 2 * self.cost2 * np.ones(ng),
        ])
        n_q = 0 if self.qcost2 is None else ng
        out = np.bincount(self._hes_inv, vals[self._hes_keep], self.hes_rows.size - n_q)
        return np.concatenate([out, obj_factor * 2 * self.qcost2]) if n_q else out
