"""`PowerFlowLayer`: batched, differentiable AC power flow on a `Network`.

Forward: `pf_newton.newton_raphson` (polar Newton–Raphson with the analytic Jacobian,
dense and batched over scenarios), with the bus types and setpoints of pandapower's
``runpp`` at default settings: PV buses hold |V| at their generators' ``vg_pu``, the
reference bus(es) hold |V| and angle and absorb the mismatch, reactive limits are not
enforced. Backward: the implicit function theorem on the mismatch equations g(y, θ) = 0
(`gridlearn.implicit.implicit_root_grad` with the same analytic Jacobian):

    ∂y*/∂θ = −(∂g/∂y)⁻¹ ∂g/∂θ,   so   ∂L/∂θ = −vᵀ ∂g/∂θ  with  (∂g/∂y)ᵀ v = ∂L/∂y*,

for θ any of: loads ``pd_mw``/``qd_mvar``, generator setpoints ``pg_mw``/``vg_pu``,
branch parameters (through ``network.with_(x_pu=...)``) and the per-branch admittance
``scale``. Flows and injections are explicit functions of the voltages and are
differentiated by autograd on top.

Above ``NewtonRaphson.sparse_min_bus`` buses (``backend="auto"``; or always with
``backend="sparse"``) the forward and backward run on `gridlearn.grid.pf_sparse` instead:
the same equations with a sparse Jacobian, SuperLU factorisations sharing one ordering,
and an IFT backward by transposed solves with the forward's factors; no n_bus² tensor.

A scenario that does not converge is never returned as a solution: `solve` marks it
(MAX_STEPS, DIVERGED, NONFINITE, NUMERICAL) and fills its outputs with NaN, `forward`
raises `SolverFailure` naming the scenarios.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gridlearn.errors import ConfigError, DataError
from gridlearn.grid import matrices
from gridlearn.grid.checks import check_inputs
from gridlearn.grid.network import Network
from gridlearn.grid.pf_newton import NewtonRaphson, PFLayout, PFProblem, jacobian, newton_raphson, residual, voltages
from gridlearn.grid.pf_sparse import solve_sparse
from gridlearn.grid.sparse_matrices import SparseYbus, sparse_ybus
from gridlearn.implicit.adjoint import ImplicitAdjoint, PhantomAdjoint
from gridlearn.implicit.root import implicit_root_grad
from gridlearn.implicit.solution import Solution


@dataclass(frozen=True)
class PowerFlowResult:
    """Power flow solution; leading batch dim B when any input was batched.

    vm_pu, va_rad: (B, n_bus). p_from_mw, q_from_mvar, p_to_mw, q_to_mvar: (B, n_branch),
    power entering each branch at its from/to end. pg_mw, qg_mvar: (B, n_gen) generator
    output (the first generator at a reference bus takes the slack; reactive output is
    shared equally among the generators of a bus; with a distributed slack every
    generator g gives pg_set + participation_g · slack_mw). slack_mw: (B,) the
    distributed slack (zero without one).
    """

    vm_pu: Tensor
    va_rad: Tensor
    p_from_mw: Tensor
    q_from_mvar: Tensor
    p_to_mw: Tensor
    q_to_mvar: Tensor
    pg_mw: Tensor
    qg_mvar: Tensor
    slack_mw: Tensor

    def _map(self, fn) -> "PowerFlowResult":
        return PowerFlowResult(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class _Inputs:
    """The per-scenario inputs (B, ·) the outputs are computed from."""

    pd_mw: Tensor
    qd_mvar: Tensor
    pg_mw: Tensor
    participation: Tensor | None


def _matvec(mat: Tensor, v: Tensor) -> Tensor:
    """mat (m, n) shared or (B, m, n) batched, times v (B, n) -> (B, m)."""
    return v @ mat.transpose(-1, -2) if mat.dim() == 2 else torch.einsum("bij,bj->bi", mat, v)


def _batched(name: str, value: Tensor, n: int, bsz: int) -> Tensor:
    if value.shape[-1] != n or value.dim() > 2:
        raise DataError(f"{name}: expected shape ({n},) or (batch, {n}), got {tuple(value.shape)}")
    return value.expand(bsz, n)


# Units at one voltage-controlled bus must agree on |V|: MATPOWER's runpf silently keeps the
# last unit's VG and pandapower refuses the net, so any silent choice would be somebody's wrong answer.
VG_CONFLICT_TOL_PU = 1e-9


def _check_one_setpoint_per_bus(network: Network, vg: Tensor, first: dict[int, int], at_pq: Tensor) -> None:
    gen_bus = network.gen.bus
    lead = torch.tensor([first.get(b, -1) for b in gen_bus.tolist()], dtype=torch.long, device=vg.device)
    shares = (lead >= 0) & ~at_pq.to(vg.device) & (lead != torch.arange(len(lead), device=vg.device))
    if not bool(shares.any()):
        return
    idx = shares.nonzero().flatten()
    gap = (vg.detach()[:, idx] - vg.detach()[:, lead[idx]]).abs()
    bad = gap > VG_CONFLICT_TOL_PU
    if bool(bad.any()):
        s, k = (int(t[0]) for t in bad.nonzero(as_tuple=True))
        j, i = int(idx[k]), int(lead[idx[k]])
        b = int(gen_bus[j])
        where = f" (scenario {s})" if vg.shape[0] > 1 else ""
        raise DataError(
            f"bus {network.bus.labels[b]}: generators {network.gen.labels[i]} and {network.gen.labels[j]} "
            f"hold different voltage set-points vg_pu {float(vg[s, i]):.6g} and {float(vg[s, j]):.6g}{where}; "
            "units at one voltage-controlled bus must share one |V| set-point")


class PowerFlowLayer(nn.Module):
    """Differentiable AC power flow: ``result = PowerFlowLayer()(network, pd_mw=...)``.

    Args:
        solver: `NewtonRaphson` settings.
        adjoint: `ImplicitAdjoint` (exact, default) or `PhantomAdjoint`.

    Call ``layer(network, pd_mw=None, qd_mvar=None, pg_mw=None, vg_pu=None, scale=None,
    participation=None)``; every tensor argument is optional (default: the network's
    own values), shared ``(n,)`` or batched ``(B, n)``:

        pd_mw, qd_mvar: (B, n_bus) demand; pg_mw, vg_pu: (B, n_gen) generator setpoints;
        scale: (B, n_branch) multiplier of each branch's pi model (1 − α: fractional
        outage; 0 removes it); participation: (n_gen,) or (B, n_gen), ≥ 0, distributed
        slack shares (normalised to sum 1; needs exactly one reference bus).

    Network parameters may also be batched ``(B, n)`` through ``network.with_``.

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> pd = (net.bus.pd_mw * torch.tensor([[1.0], [1.1]], dtype=torch.float64)).requires_grad_()
    >>> res = PowerFlowLayer()(net, pd_mw=pd)          # two load scenarios, batched
    >>> tuple(res.vm_pu.shape), bool(res.vm_pu.min() > 0.9)
    ((2, 9), True)
    >>> res.vm_pu.sum().backward(); pd.grad.shape      # dV/dP by the implicit function theorem
    torch.Size([2, 9])
    """

    def __init__(self, *, solver: NewtonRaphson = NewtonRaphson(),
                 adjoint: ImplicitAdjoint | PhantomAdjoint = ImplicitAdjoint()):
        super().__init__()
        if not isinstance(solver, NewtonRaphson):
            raise ConfigError(f"PowerFlowLayer: solver must be NewtonRaphson, got {type(solver).__name__}")
        if not isinstance(adjoint, (ImplicitAdjoint, PhantomAdjoint)):
            raise ConfigError(f"PowerFlowLayer: adjoint must be ImplicitAdjoint or PhantomAdjoint, got {type(adjoint).__name__}")
        self.solver = solver
        self.adjoint = adjoint

    def extra_repr(self) -> str:
        return f"solver={self.solver}, adjoint={self.adjoint}"

    # ------------------------------------------------------------------ public
    def forward(self, network: Network, pd_mw: Tensor | None = None, qd_mvar: Tensor | None = None,
                pg_mw: Tensor | None = None, vg_pu: Tensor | None = None, scale: Tensor | None = None,
                participation: Tensor | None = None) -> PowerFlowResult:
        sol = self.solve(network, pd_mw, qd_mvar, pg_mw, vg_pu, scale, participation, _on_failure="raise")
        sol.raise_on_failure("PowerFlowLayer (AC power flow)" + _no_solution_note(sol))
        return sol.value

    def solve(self, network: Network, pd_mw: Tensor | None = None, qd_mvar: Tensor | None = None,
              pg_mw: Tensor | None = None, vg_pu: Tensor | None = None, scale: Tensor | None = None,
              participation: Tensor | None = None, _on_failure: str = "nan") -> Solution:
        """Like `forward` but never raises on non-convergence: a `Solution` whose value is a
        `PowerFlowResult` (NaN for scenarios that failed), per-scenario status, residual
        (largest mismatch, MVA) and Newton steps. extras["state"]: the raw final iterate;
        extras["full_newton"]: scenarios that needed their own Jacobian; extras["backend"]:
        "dense" or "sparse", the path that solved it. With ``solver.retry`` (default), for
        scenarios plain Newton did not solve (`gridlearn.grid.pf_robust`):
        extras["retried"] (bool, (B,)); extras["rescued_from"]: per scenario the start that
        solved it ("case", "flat", "dc", "continuation") or None; extras["loadability"]:
        λ*, the largest fraction of the specified injections with a solution on the branch
        from no load (1 when solved, NaN when not assessed): a scenario with λ* < 1 is
        INFEASIBLE, the set-points have no power flow solution there; extras["sigma_ratio"]:
        σ_min of the Jacobian at λ* over its value at no load (→ 0 at the fold)."""
        if not isinstance(network, Network):
            raise TypeError(f"network must be a gridlearn Network, got {type(network).__name__}")
        sparse = self.solver.use_sparse(network.n_bus)
        pr, layout, batched, inputs = self._problem(network, pd_mw, qd_mvar, pg_mw, vg_pu, scale, participation, sparse)
        if sparse:
            sol, y = solve_sparse(network, layout, pr, self.solver, self.adjoint, _on_failure)
        else:
            sol = newton_raphson(layout, pr, self.solver, network.base_mva, self._b_red_lu(network, layout))

            def g(y, ybus, p_inj, q_inj, vm_set, va_ref, alpha):
                return residual(y, layout, PFProblem(ybus, p_inj, q_inj, vm_set, va_ref, alpha))

            def jac(y, ybus, p_inj, q_inj, vm_set, va_ref, alpha):
                return jacobian(y, layout, PFProblem(ybus, p_inj, q_inj, vm_set, va_ref, alpha))

            args = (pr.ybus, pr.p_inj, pr.q_inj, pr.vm_set, pr.va_ref, pr.alpha)
            y = implicit_root_grad(g, sol.value, *args, jacobian=jac, adjoint=self.adjoint,
                                   converged=sol.converged, on_failure=_on_failure)
        result = _outputs(network, layout, pr, inputs, y, scale)
        bad = ~sol.converged
        if bool(bad.any()):
            result = result._map(lambda t: torch.where(bad.view(-1, *([1] * (t.dim() - 1))), torch.full_like(t, float("nan")), t))
        if not batched:
            result = result._map(lambda t: t[0])
        extras = {"state": sol.value, "backend": "sparse" if sparse else "dense"}
        extras.update({k: v for k, v in sol.extras.items() if k != "state"})
        return Solution(value=result, status_code=sol.status_code, residual=sol.residual, steps=sol.steps,
                        extras=extras)

    # ------------------------------------------------------------------ assembly
    def _problem(self, network, pd_mw, qd_mvar, pg_mw, vg_pu, scale, participation, sparse=False):
        nb, ng, nl = network.n_bus, network.n_gen, network.n_branch
        bus, gen = network.bus, network.gen
        pd_mw = bus.pd_mw if pd_mw is None else pd_mw
        qd_mvar = bus.qd_mvar if qd_mvar is None else qd_mvar
        pg_mw = gen.p_mw if pg_mw is None else pg_mw
        vg_pu = gen.vg_pu if vg_pu is None else vg_pu
        named = check_inputs({"pd_mw": pd_mw, "qd_mvar": qd_mvar, "pg_mw": pg_mw, "vg_pu": vg_pu, "scale": scale,
                              "participation": participation})
        # Anything in the network with a leading dim is batched too (e.g. x_pu via with_).
        sizes = {t.shape[0] for t in named.values() if t.dim() == 2}
        sizes |= {t.shape[0] for tbl in (bus, gen, network.branch) for f in dataclasses.fields(tbl)
                  if isinstance(t := getattr(tbl, f.name), Tensor) and t.dim() == 2}
        batched = bool(sizes)
        sizes.discard(1)
        if len(sizes) > 1:
            raise DataError(f"batch sizes do not broadcast: {sorted(sizes)}")
        bsz = sizes.pop() if sizes else 1

        kind = bus.kind
        # A unit at a PQ bus holds no voltage: MATPOWER's runpf treats it as a fixed injection
        # (PG, QG), so its reactive setpoint enters the bus balance and its vg is unused.
        at_pq = kind[gen.bus] == 1
        distributed = participation is not None
        if distributed:
            if len(network.ref_buses) != 1:
                raise ConfigError("a distributed slack needs exactly one reference bus (it fixes the angle only)")
            part = _batched("participation", participation, ng, bsz)
            if bool((part.detach() < 0).any()):
                raise DataError("participation factors must be >= 0")
            total = part.sum(-1, keepdim=True)
            if bool((total.detach() <= 0).any()):
                raise DataError("participation factors must not all be zero")
            part = part / total
        base = network.base_mva
        pd = _batched("pd_mw", pd_mw, nb, bsz)
        qd = _batched("qd_mvar", qd_mvar, nb, bsz)
        pg = _batched("pg_mw", pg_mw, ng, bsz)
        vg = _batched("vg_pu", vg_pu, ng, bsz)
        if scale is not None:
            scale = _batched("scale", scale, nl, bsz) if scale.dim() == 2 else scale
            if scale.shape[-1] != nl:
                raise DataError(f"scale: expected last dimension {nl}, got {tuple(scale.shape)}")
        if sparse:  # O(n_bus + n_branch): no dense Ybus, no dense generator incidence
            ybus = sparse_ybus(network, scale)
            if ybus.values.dim() == 2 and ybus.values.shape[0] != bsz:
                ybus = dataclasses.replace(ybus, values=ybus.values.expand(bsz, -1))
            p_inj = (torch.zeros_like(pd).index_add(-1, gen.bus, pg) - pd) / base
        else:
            cg = network.gen_incidence()
            ybus = matrices.ybus(network, scale)
            if ybus.dim() == 3 and ybus.shape[0] != bsz:
                ybus = ybus.expand(bsz, nb, nb)
            p_inj = (pg @ cg.T - pd) / base
        q_inj = -qd / base
        if bool(at_pq.any()):
            q_fixed = torch.where(at_pq, gen.q_mvar.to(qd.dtype), torch.zeros_like(gen.q_mvar, dtype=qd.dtype))
            q_inj = q_inj + torch.zeros_like(qd).index_add(-1, gen.bus, q_fixed.expand(bsz, -1)) / base
        # |V| setpoint per bus from its generators (pandapower: gen.vm_pu); PQ entries unused.
        # (a unit at a PQ bus sets nothing: vm_set keeps the case's |V| there)
        first: dict[int, int] = {}
        for j, (b, pq) in enumerate(zip(gen.bus.tolist(), at_pq.tolist())):
            if not pq:
                first.setdefault(b, j)
        _check_one_setpoint_per_bus(network, vg, first, at_pq)
        gen_buses = torch.tensor(list(first), dtype=torch.long, device=pd.device)
        first_gen = torch.tensor(list(first.values()), dtype=torch.long, device=pd.device)
        # At PQ buses vm_set holds the case's |V| (only the "case" start reads it; the
        # equations overwrite those entries with the unknowns).
        vm0 = bus.vm0_pu.detach().to(dtype=pd.dtype, device=pd.device).expand(bsz, nb)
        vm_set = vm0.index_copy(-1, gen_buses, vg[:, first_gen])
        va_ref = bus.va0_rad.expand(bsz, nb)
        alpha = part.new_zeros(bsz, nb).index_add(-1, gen.bus, part) if distributed else None
        pr = PFProblem(ybus=ybus, p_inj=p_inj, q_inj=q_inj, vm_set=vm_set, va_ref=va_ref, alpha=alpha)
        inputs = _Inputs(pd_mw=pd, qd_mvar=qd, pg_mw=pg, participation=part if distributed else None)
        return pr, PFLayout.build(kind, distributed), batched, inputs

    @staticmethod
    def _b_red_lu(network: Network, layout: PFLayout):
        if len(layout.va_buses) == 0:
            return None
        with torch.no_grad():
            b = network.dc_matrices().b_bus.detach()
            if b.dim() == 3:  # batched admittances: a shared DC start is good enough
                b = b[0]
            red = b[layout.va_buses][:, layout.va_buses]
            lu, piv, info = torch.linalg.lu_factor_ex(red)
        return (lu, piv) if int(info) == 0 else None


def _no_solution_note(sol: Solution) -> str:
    """What the continuation found for INFEASIBLE scenarios (the true cause, with the number)."""
    lam = sol.extras.get("loadability")
    if lam is None:
        return ""
    bad = [i for i in sol.failed_indices() if sol.statuses[i].name == "INFEASIBLE"]
    if not bad:
        return ""
    shown = ", ".join(f"#{i}: λ* = {float(lam[i]):.4g} (σ_min ratio {float(sol.extras['sigma_ratio'][i]):.2g})"
                      for i in bad[:10])
    return (f" [no power flow solution: the set-points are beyond the loadability limit; the injections "
            f"can be scaled only to λ* of their values on the branch of solutions from no load, where the "
            f"Jacobian becomes singular: {shown}]")


def _outputs(network: Network, layout: PFLayout, pr: PFProblem, c: "_Inputs", y: Tensor, scale: Tensor | None) -> PowerFlowResult:
    """Voltages, branch flows and generator outputs (differentiable) from the state y."""
    base = network.base_mva
    vm, va = voltages(y, layout, pr.vm_set, pr.va_ref)
    v = torch.polar(vm, va)
    f, t = network.branch.from_bus, network.branch.to_bus
    if isinstance(pr.ybus, SparseYbus):  # branch currents from the two end voltages, O(n_branch)
        yff, yft, ytf, ytt = matrices.branch_admittances(network, scale)
        vf, vt = v[:, f], v[:, t]
        sf = vf * (yff * vf + yft * vt).conj() * base
        st = vt * (ytf * vf + ytt * vt).conj() * base
        s_bus = v * pr.ybus.matvec(v).conj()
    else:
        yf, yt = matrices.yf_yt(network, scale)

        def flow(ymat, end):
            return v[:, end] * _matvec(ymat, v).conj() * base

        sf, st = flow(yf, f), flow(yt, t)
        s_bus = v * _matvec(pr.ybus, v).conj()
    p_gen_bus = s_bus.real * base + c.pd_mw  # generation needed at each bus
    q_gen_bus = s_bus.imag * base + c.qd_mvar
    gen = network.gen
    count = torch.zeros(network.n_bus, dtype=vm.dtype, device=vm.device).index_add_(
        0, gen.bus, torch.ones(network.n_gen, dtype=vm.dtype, device=vm.device)
    )
    qg = q_gen_bus[:, gen.bus] / count[gen.bus]
    pg = c.pg_mw
    if layout.distributed:
        slack_pu = y[:, -1]
        pg = pg + c.participation * slack_pu[:, None] * base
        slack_mw = slack_pu * base
    else:
        slack_mw = torch.zeros_like(vm[:, 0])
        ref_gens = torch.nonzero(network.bus.kind[gen.bus] == 3).flatten().tolist()
        seen: set[int] = set()
        for j in ref_gens:  # the first generator at each reference bus takes the slack
            bus_j = int(gen.bus[j])
            if bus_j in seen:
                continue
            seen.add(bus_j)
            others = [k for k in torch.nonzero(gen.bus == bus_j).flatten().tolist() if k != j]
            p_j = p_gen_bus[:, bus_j] - (pg[:, others].sum(-1) if others else 0.0)
            pg = pg.index_copy(-1, torch.tensor([j], device=pg.device), p_j[:, None])
    return PowerFlowResult(
        vm_pu=vm, va_rad=va, p_from_mw=sf.real, q_from_mvar=sf.imag, p_to_mw=st.real, q_to_mvar=st.imag,
        pg_mw=pg, qg_mvar=qg, slack_mw=slack_mw,
    )


__all__ = ["PowerFlowLayer", "PowerFlowResult", "NewtonRaphson"]
