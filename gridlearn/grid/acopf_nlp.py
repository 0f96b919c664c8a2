"""The AC-OPF as an Ipopt NLP with vectorised numpy callbacks (analytic sparse derivatives).

The same problem as the Pyomo model in `acopf_model` (see its docstring; physics from
`acphysics.ACPolar`), posed directly to Ipopt through cyipopt. Why not Pyomo for every solve:
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

The constraint values, Jacobian and Hessian entries are `acphysics.ACPolar`'s (the
derivative formulas are in its module docstring); this class only maps them from the full
``z`` onto Ipopt's free variables (summing duplicates) and adds the objective's terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridlearn.grid.acopf_model import ACOPFArrays, polar_formulation
from gridlearn.grid.acphysics import EndJacobian, EndState
from gridlearn.grid.formulations import Convention


def _unique_pattern(rows: np.ndarray, cols: np.ndarray, keep: np.ndarray, n_cols: int):
    """Aggregate duplicate (row, col) entries: returns (rows, cols, inverse) for ``np.bincount``."""
    key = rows[keep].astype(np.int64) * n_cols + cols[keep]
    uniq, inverse = np.unique(key, return_inverse=True)
    return (uniq // n_cols).astype(np.int64), (uniq % n_cols).astype(np.int64), inverse


@dataclass
class _Point:
    """The formulation's branch-end quantities at one x (cached: Ipopt asks for g, J and H at the same x)."""

    x: np.ndarray
    z: np.ndarray
    ends: EndState
    jac: EndJacobian


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

        self.form = polar_formulation(d, convention)
        self.n_lim = self.form.n_lim
        self.ang = d.angle_limited.astype(np.int64)
        n_seg = d.pwl_gen.size
        self.m = self.form.n_constraints + n_seg  # epigraph rows last: slope pg - y + icpt <= 0
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

    def _build_jacobian_pattern(self) -> None:
        rows, cols = self.form.jacobian_pattern()
        self._jac_keep = ~self.fixed[cols]
        self.jac_rows, self.jac_cols, self._jac_inv = _unique_pattern(rows, self.pos[cols], self._jac_keep, self.n)

    def _build_hessian_pattern(self) -> None:
        nb, ng = self.nb, self.ng
        r, c = self.form.hessian_pattern()
        # ... then the objective's diagonal in pg.
        r = np.concatenate([r, 2 * nb + np.arange(ng)])
        c = np.concatenate([c, 2 * nb + np.arange(ng)])
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
        ends = self.form.end_state(z[:nb], z[nb : 2 * nb])
        self._pt = _Point(x.copy(), z, ends, self.form.end_jacobian(ends))
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
        d, form = self.d, self.form
        va, vm, pg, qg = form.split(pt.z)
        c_p, c_q = form.balance(pt.ends, vm, pg, qg, d.pd_pu, d.qd_pu)
        epi = d.pwl_slope * pg[d.pwl_gen] - x[self.n_free + d.pwl_var] + d.pwl_icpt
        return np.concatenate([c_p, c_q, form.limit_residual(pt.ends), form.angle_difference(va), epi])

    def jacobianstructure(self):
        return self.jac_rows, self.jac_cols

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        pt = self._point(x)
        vals = self.form.jacobian_values(pt.ends, pt.jac, pt.z[self.nb : 2 * self.nb])
        n_seg = self.d.pwl_gen.size
        out = np.bincount(self._jac_inv, vals[self._jac_keep], self.jac_rows.size - 2 * n_seg)
        return np.concatenate([out, self.d.pwl_slope, -np.ones(n_seg)]) if n_seg else out

    def hessianstructure(self):
        return self.hes_rows, self.hes_cols

    def hessian(self, x: np.ndarray, lagrange: np.ndarray, obj_factor: float) -> np.ndarray:
        pt = self._point(x)
        vals = np.concatenate([self.form.hessian_values(pt.ends, pt.jac, lagrange),
                               obj_factor * 2 * self.cost2 * np.ones(self.ng)])
        n_q = 0 if self.qcost2 is None else self.ng
        out = np.bincount(self._hes_inv, vals[self._hes_keep], self.hes_rows.size - n_q)
        return np.concatenate([out, obj_factor * 2 * self.qcost2]) if n_q else out
