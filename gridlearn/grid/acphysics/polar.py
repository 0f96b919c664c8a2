"""The AC polar formulation: power balance, branch flows, flow limits and angle differences,
with their analytic first and second derivatives, written once for every backend.

Source: MATPOWER manual (Zimmerman & Murillo-Sanchez), sections 3.2 (branch pi model) and
6.1 (AC-OPF); pandapower's OPF for the current-limit convention. Per unit and radians.

Branches are evaluated by **end**: the ``2 n_branch`` ends are the from ends, then the to
ends; an end has a bus ``here``, the bus at the other end ``there``, a self admittance
(``Y_ff`` / ``Y_tt``) and a mutual one (``Y_ft`` / ``Y_tf``). With
``theta = va_here - va_there``, ``A = g_mut cos(theta) + b_mut sin(theta)``,
``B = g_mut sin(theta) - b_mut cos(theta)`` (so ``A' = -B``, ``B' = A``), the power leaving
an end, ``S = conj(Y_self) vh^2 + conj(Y_mut) vh vo e^{j theta}``, is

    P = g_self vh^2 + vh vo A      Q = -b_self vh^2 + vh vo B
    dP/d(theta, vh, vo) = (-vh vo B, 2 g_self vh + vo A, vh A)
    dQ/d(theta, vh, vo) = ( vh vo A, -2 b_self vh + vo B, vh B)
    d2P: tt -vh vo A, t-vh -vo B, t-vo -vh B, vh-vh 2 g_self, vh-vo A, vo-vo 0
    d2Q: tt -vh vo B, t-vh  vo A, t-vo  vh A, vh-vh -2 b_self, vh-vo B, vo-vo 0

(``d/dva_here = d/dtheta``, ``d/dva_there = -d/dtheta``). The power balances are

    c_p = sum_{g at i} pg - pd_i - gs_i vm_i^2 - sum_{ends at i} P = 0
    c_q = sum_{g at i} qg - qd_i + bs_i vm_i^2 - sum_{ends at i} Q = 0

and a flow limit is the `BranchLimit` strategy's ``h(P, Q, vh) <= 0`` at each limited end.

**Layout.** Variables ``z = (va, vm, pg, qg)`` (``2 n_bus + 2 n_gen``); constraints
``(c_p, c_q, h at limited_ends, va_f - va_t of angle_branches)``. `jacobian_pattern` /
`jacobian_values` and `hessian_pattern` / `hessian_values` give the sparse derivatives in
that layout (duplicates to be summed; a Hessian entry ``(r, c)`` with ``r != c`` stands
for both triangles). A backend maps them onto its own variables (Ipopt: the free ones).

**Arrays.** Every method uses only arithmetic, ``x[..., idx]`` and `namespace.ArrayOps`, so
the same code evaluates numpy arrays (direct Ipopt callbacks), numpy object arrays of Pyomo
variables (the Pyomo model's expressions) and torch tensors. Any leading batch dimensions
broadcast: admittances ``(B, n_end)``, loads ``(B, n_bus)``, multipliers ``(B, m)`` give B
scenarios at once (the batched interior point's case); index arrays stay 1-D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gridlearn.grid.acphysics.limits import BranchLimit
from gridlearn.grid.acphysics.namespace import NUMPY, TORCH, ArrayOps, ops_for


@dataclass(slots=True)  # not frozen: built at every Ipopt iterate, and a frozen __init__ is slower
class EndState:
    """Branch-end quantities at one (va, vm), each ``(..., n_end)``; see the module docstring."""

    theta: Any
    vh: Any
    vo: Any
    vv: Any  # vh * vo
    a: Any
    b: Any
    p: Any  # active power leaving the end, per unit
    q: Any


@dataclass(slots=True)
class EndJacobian:
    """``dp``, ``dq``: (d/dtheta, d/dvh, d/dvo) of each end's P and Q, each ``(..., n_end)``."""

    dp: tuple
    dq: tuple


def _take(x, idx):
    """``x[..., idx]``; plain ``x[idx]`` for 1-D ``x`` (numpy's Ellipsis fancy indexing costs ~4x)."""
    return x[idx] if x.ndim == 1 else x[..., idx]


def _zeros_like(x):
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


def _ones(like, n: int):
    if isinstance(like, torch.Tensor):
        return torch.ones(n, dtype=like.dtype, device=like.device)
    return np.ones(n)


@dataclass(frozen=True, eq=False)
class ACPolar:
    """The AC polar physics of one network (or a batch of its scenarios); see the module docstring.

    Build with `from_branches`. Data arrays are numpy or torch (the variables' type decides
    the namespace of each call); ``here``/``there``/``gen_bus``/``limited_ends``/
    ``angle_branches`` are 1-D index arrays of the same library.
    """

    n_bus: int
    n_gen: int
    here: Any  # (n_end,) bus of each end: from buses, then to buses
    there: Any  # (n_end,) bus at the other end
    g_self: Any  # (..., n_end) Re Y_ff / Y_tt
    b_self: Any
    g_mut: Any  # (..., n_end) Re Y_ft / Y_tf
    b_mut: Any
    gen_bus: Any  # (n_gen,)
    gs_pu: Any  # (..., n_bus) shunt conductance
    bs_pu: Any
    limit: BranchLimit
    limited_ends: Any  # (n_lim,) ends with a flow limit
    rate_pu: Any  # (..., n_lim) their rates
    angle_branches: Any  # (n_ang,) branches with an angle-difference constraint

    @classmethod
    def from_branches(cls, adm: dict[str, Any], from_bus, to_bus, gen_bus, gs_pu, bs_pu, limit: BranchLimit, *,
                      n_bus: int, limited=None, rate_pu=None, angle_branches=None) -> "ACPolar":
        """From `pi_admittance_parts` ``adm`` (each ``(..., n_branch)``) and branch/gen/bus data.

        ``limited``: branches whose two ends are limited at ``rate_pu[..., limited]`` (a
        per-branch rate); ``angle_branches``: branches with an angle constraint (default none).
        """
        like = adm["g_ff"]
        ops: ArrayOps = TORCH if isinstance(like, torch.Tensor) else NUMPY

        def idx(v):
            return ops.index(np.zeros(0, dtype=np.int64) if v is None else v, like)

        f, t = idx(from_bus), idx(to_bus)
        nl = f.shape[0]
        lim = idx(limited)
        rates = _take(rate_pu, lim) if lim.shape[0] else like[..., :0]
        return cls(
            n_bus=int(n_bus), n_gen=int(idx(gen_bus).shape[0]),
            here=ops.cat([f, t]), there=ops.cat([t, f]),
            g_self=ops.cat([adm["g_ff"], adm["g_tt"]]), b_self=ops.cat([adm["b_ff"], adm["b_tt"]]),
            g_mut=ops.cat([adm["g_ft"], adm["g_tf"]]), b_mut=ops.cat([adm["b_ft"], adm["b_tf"]]),
            gen_bus=idx(gen_bus), gs_pu=gs_pu, bs_pu=bs_pu, limit=limit,
            limited_ends=ops.cat([lim, nl + lim]), rate_pu=ops.cat([rates, rates]), angle_branches=idx(angle_branches),
        )

    # ------------------------------------------------------------------ sizes and layout
    @property
    def n_branch(self) -> int:
        return int(self.here.shape[0]) // 2

    @property
    def n_end(self) -> int:
        return int(self.here.shape[0])

    @property
    def n_z(self) -> int:
        return 2 * self.n_bus + 2 * self.n_gen

    @property
    def n_lim(self) -> int:
        return int(self.limited_ends.shape[0])

    @property
    def n_ang(self) -> int:
        return int(self.angle_branches.shape[0])

    @property
    def n_constraints(self) -> int:
        return 2 * self.n_bus + self.n_lim + self.n_ang

    def split(self, z):
        """``(va, vm, pg, qg)`` of ``z`` (..., n_z)."""
        nb, ng = self.n_bus, self.n_gen
        if z.ndim == 1:
            return z[:nb], z[nb : 2 * nb], z[2 * nb : 2 * nb + ng], z[2 * nb + ng :]
        return z[..., :nb], z[..., nb : 2 * nb], z[..., 2 * nb : 2 * nb + ng], z[..., 2 * nb + ng :]

    # ------------------------------------------------------------------ values
    def end_state(self, va, vm) -> EndState:
        """P, Q and the intermediate terms at every branch end (``va``, ``vm``: (..., n_bus))."""
        ops = ops_for(vm)
        vh, vo = _take(vm, self.here), _take(vm, self.there)
        theta = _take(va, self.here) - _take(va, self.there)
        c, s = ops.cos(theta), ops.sin(theta)
        a = self.g_mut * c + self.b_mut * s
        b = self.g_mut * s - self.b_mut * c
        vv = vh * vo
        p = self.g_self * vh * vh + vv * a
        q = -self.b_self * vh * vh + vv * b
        return EndState(theta, vh, vo, vv, a, b, p, q)

    def flows(self, s: EndState):
        """``(p_from, q_from, p_to, q_to)`` per unit, each (..., n_branch)."""
        nl = self.n_branch
        return s.p[..., :nl], s.q[..., :nl], s.p[..., nl:], s.q[..., nl:]

    def balance(self, s: EndState, vm, pg, qg, pd_pu, qd_pu):
        """``(c_p, c_q)``, each (..., n_bus): generation - load - shunt - power leaving by branches."""
        ops = ops_for(vm)
        nb = self.n_bus
        vm2 = vm * vm
        # Pyomo sums each bus's branch terms branch by branch (from end, then to end), as the
        # model did before this object: the same NL expressions, so Ipopt takes the same path.
        here, p, q = self.here, s.p, s.q
        if ops.name == "pyomo":
            e = np.argsort(np.arange(self.n_end) % max(self.n_branch, 1), kind="stable")
            here, p, q = here[e], p[e], q[e]
        c_p = ops.scatter_add(pg, self.gen_bus, nb) - pd_pu - self.gs_pu * vm2 - ops.scatter_add(p, here, nb)
        c_q = ops.scatter_add(qg, self.gen_bus, nb) - qd_pu + self.bs_pu * vm2 - ops.scatter_add(q, here, nb)
        return c_p, c_q

    def limit_residual(self, s: EndState, ends=None, rate_pu=None):
        """The flow limits' ``h <= 0`` at ``ends`` (default: `limited_ends` at `rate_pu`)."""
        ends, rate_pu = (self.limited_ends, self.rate_pu) if ends is None else (ends, rate_pu)
        return self.limit.residual(_take(s.p, ends), _take(s.q, ends), _take(s.vh, ends), rate_pu)

    def angle_difference(self, va, branches=None):
        """``va_from - va_to`` of ``branches`` (default: `angle_branches`)."""
        br = self.angle_branches if branches is None else branches
        return _take(va, self.here[br]) - _take(va, self.there[br])

    def constraints(self, z, pd_pu, qd_pu):
        """All constraints in the layout's order (..., n_constraints), numpy or torch."""
        va, vm, pg, qg = self.split(z)
        s = self.end_state(va, vm)
        c_p, c_q = self.balance(s, vm, pg, qg, pd_pu, qd_pu)
        return ops_for(z).cat([c_p, c_q, self.limit_residual(s), self.angle_difference(va)])

    # ------------------------------------------------------------------ first derivatives
    def end_jacobian(self, s: EndState) -> EndJacobian:
        """dP, dQ by (theta, vh, vo) at every end (module docstring)."""
        dp = (-s.vv * s.b, 2 * self.g_self * s.vh + s.vo * s.a, s.vh * s.a)
        dq = (s.vv * s.a, -2 * self.b_self * s.vh + s.vo * s.b, s.vh * s.b)
        return EndJacobian(dp, dq)

    def limit_jacobian(self, s: EndState, jac: EndJacobian):
        """``dh/d(theta, vh, vo)`` of the limited ends, each (..., n_lim)."""
        e = self.limited_ends
        return self.limit.gradient(_take(s.p, e), _take(s.q, e), tuple(_take(d, e) for d in jac.dp),
                                   tuple(_take(d, e) for d in jac.dq), _take(s.vh, e), self.rate_pu)

    def _end_vars(self):
        """Indices in z of (va_here, va_there, vm_here, vm_there) of every end (numpy)."""
        nb = self.n_bus
        h, o = np.asarray(_cpu(self.here)), np.asarray(_cpu(self.there))
        return h, o, nb + h, nb + o

    def jacobian_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the constraint Jacobian's entries in `jacobian_values` order (numpy, duplicates)."""
        nb, ng = self.n_bus, self.n_gen
        gb = np.asarray(_cpu(self.gen_bus))
        h = np.asarray(_cpu(self.here))
        vah, vao, vmh, vmo = self._end_vars()
        lim = np.asarray(_cpu(self.limited_ends))
        br = np.asarray(_cpu(self.angle_branches))
        flow_rows = 2 * nb + np.arange(lim.size)
        ang_rows = 2 * nb + lim.size + np.arange(br.size)
        rows = [gb, nb + gb, np.arange(nb), nb + np.arange(nb), np.tile(h, 4), np.tile(nb + h, 4),
                np.tile(flow_rows, 4), ang_rows, ang_rows]
        cols = [2 * nb + np.arange(ng), 2 * nb + ng + np.arange(ng), nb + np.arange(nb), nb + np.arange(nb),
                np.concatenate([vah, vao, vmh, vmo]), np.concatenate([vah, vao, vmh, vmo]),
                np.concatenate([vah[lim], vao[lim], vmh[lim], vmo[lim]]), vah[br], vao[br]]
        return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)

    def jacobian_values(self, s: EndState, jac: EndJacobian, vm):
        """The constraint Jacobian's entries (..., nnz) in `jacobian_pattern` order."""
        ops = ops_for(vm)
        gt, gh, go = self.limit_jacobian(s, jac)
        dp, dq = jac.dp, jac.dq
        one_g, one_a = _ones(vm, 2 * self.n_gen), _ones(vm, self.n_ang)
        return ops.cat([
            one_g, -2 * self.gs_pu * vm, 2 * self.bs_pu * vm,
            -dp[0], dp[0], -dp[1], -dp[2],
            -dq[0], dq[0], -dq[1], -dq[2],
            gt, -gt, gh, go, one_a, -one_a,
        ])

    # ------------------------------------------------------------------ second derivatives
    def weighted_end_hessian(self, s: EndState, wp, wq):
        """Hessian of ``wp P + wq Q`` per end in (theta, vh, vo): ``(tt, th, to, hh, ho, oo)``."""
        htt = wp * (-s.vv * s.a) + wq * (-s.vv * s.b)
        hth = wp * (-s.vo * s.b) + wq * (s.vo * s.a)
        hto = wp * (-s.vh * s.b) + wq * (s.vh * s.a)
        hhh = wp * (2 * self.g_self) + wq * (-2 * self.b_self)
        hho = wp * s.a + wq * s.b
        return htt, hth, hto, hhh, hho, _zeros_like(htt)

    def hessian_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the constraints' Lagrangian Hessian entries in `hessian_values` order.

        Per end 10 entries, (va_h, va_h) (va_o, va_o) (va_h, va_o) (va_h, vm_h) (va_o, vm_h)
        (va_h, vm_o) (va_o, vm_o) (vm_h, vm_h) (vm_h, vm_o) (vm_o, vm_o), then (vm_i, vm_i) per bus.
        """
        nb = self.n_bus
        vah, vao, vmh, vmo = self._end_vars()
        pairs = [(vah, vah), (vao, vao), (vah, vao), (vah, vmh), (vao, vmh), (vah, vmo), (vao, vmo), (vmh, vmh),
                 (vmh, vmo), (vmo, vmo)]
        r = np.concatenate([p[0] for p in pairs] + [nb + np.arange(nb)]).astype(np.int64)
        c = np.concatenate([p[1] for p in pairs] + [nb + np.arange(nb)]).astype(np.int64)
        return r, c

    def hessian_values(self, s: EndState, jac: EndJacobian, lam):
        """Entries of ``hess_z (lam^T constraints)`` (..., nnz) in `hessian_pattern` order.

        ``lam`` (..., n_constraints): multipliers in the layout's order. A flow limit with
        multiplier mu adds ``2 mu (P hess P + Q hess Q)`` (as weights ``2 mu P``, ``2 mu Q``),
        the Gauss-Newton part ``2 mu (gP gP^T + gQ gQ^T)`` and the strategy's curvature.
        """
        ops = ops_for(s.vh)
        nb, ne, e = self.n_bus, self.n_end, self.limited_ends
        lam_p, lam_q = lam[..., :nb], lam[..., nb : 2 * nb]
        mu_lim = lam[..., 2 * nb : 2 * nb + self.n_lim]
        mu = ops.scatter_add(mu_lim, e, ne)
        wp = -_take(lam_p, self.here) + 2 * mu * s.p
        wq = -_take(lam_q, self.here) + 2 * mu * s.q
        htt, hth, hto, hhh, hho, hoo = self.weighted_end_hessian(s, wp, wq)
        dp, dq = jac.dp, jac.dq
        m2 = 2 * mu
        htt = htt + m2 * (dp[0] * dp[0] + dq[0] * dq[0])
        hth = hth + m2 * (dp[0] * dp[1] + dq[0] * dq[1])
        hto = hto + m2 * (dp[0] * dp[2] + dq[0] * dq[2])
        hhh = hhh + m2 * (dp[1] * dp[1] + dq[1] * dq[1])
        hho = hho + m2 * (dp[1] * dp[2] + dq[1] * dq[2])
        hoo = hoo + m2 * (dp[2] * dp[2] + dq[2] * dq[2])
        curvature = self.limit.curvature(_take(s.vh, e), self.rate_pu)
        if curvature is not None:
            hhh = hhh + ops.scatter_add(mu_lim * curvature, e, ne)
        return ops.cat([htt, htt, -htt, hth, -hth, hto, -hto, hhh, hho, hoo,
                        -2 * self.gs_pu * lam_p + 2 * self.bs_pu * lam_q])


def _cpu(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
