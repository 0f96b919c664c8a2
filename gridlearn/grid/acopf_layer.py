"""`ACOPFLayer`: AC-OPF dispatch and LMPs as differentiable functions of loads, costs and branch parameters.

Forward: one Ipopt solve per batch element (`solve_acopf_nlp`, warm-started from the
given ``warm_start`` result of that element, else from the previous element; each solve builds its `ACOPFNLP` from that element's parameters, which
costs about a millisecond, so new costs/branch parameters every call need no cache to
invalidate). Backward: the implicit function theorem on the KKT conditions at each optimum
(`acopf_kkt`): K assembled from the same NLP's analytic derivatives, one sparse LU per
element; closed-form parameter derivatives for loads and costs, torch.func for branch
parameters only when one of them needs a gradient; the objective's gradient is the
envelope theorem. Built for inverse OPF: ``layer(pd_mw, qd_mvar, cost_c1_usd_per_mwh=c1,
x_pu=x)`` gives ``pg_mw`` and ``lmp_usd_per_mwh`` per load scenario; an outer loop passes
``warm_start=`` the previous iterate's per-sample results (`forward_with_solution`).

Ipopt tolerance: the default is ``tol=1e-9``. At 1e-10 Ipopt ended 1 of 40 case30 load
scenarios with "Solved_To_Acceptable_Level" (1e-9: 0 of 40; the same optimum to 1e-8);
an acceptable-level stop is *not* treated as converged (it maps to NUMERICAL and the
sample fails loudly, after one cold restart when it had been warm-started), because the
point's KKT residual is then only known to be below Ipopt's ``acceptable_tol`` (1e-6),
too coarse for the active-set test and the implicit gradient.

``backend="torch"``: the forward is one batched torch interior point over all samples
(`acopf_ipm.solve_acopf_batched`) and the backward its implicit-function VJP on the final
KKT factorisation; ``backend="ipopt"`` (default) stays the reference. Same outputs and
failure behaviour (`SolverFailure`/`InfeasibleError` naming the samples); its warm start is
the previous call's ``solution.extras["results"]`` (one `BatchedACOPFResult`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from gridlearn._deprecation import renamed_attribute
from gridlearn.errors import ConfigError
from gridlearn.grid.acopf import ACOPFResult, solve_acopf_nlp
from gridlearn.grid.checks import check_costs
from gridlearn.grid.acopf_kkt import (ACTIVE_TOL, BRANCH_FIELDS, THETA_FIELDS, KKTSystem, active_set, bus_gen_envelope,
                                      bus_gen_vjp, kkt_matrix, solve_kkt)
from gridlearn.grid.acopf_ipm import BatchedACOPFResult, IPMOptions, solve_acopf_batched
from gridlearn.grid.acopf_nlp import ACOPFNLP
from gridlearn.grid.formulations import get_convention
from gridlearn.implicit.solution import Solution


#: Ipopt options added for a sample started from an explicit ``warm_start`` result: a small
#: initial barrier parameter and bound push keep Ipopt from first pushing the (already
#: optimal-looking) point back into the interior. Measured (Ipopt iterations, 5 scenarios,
#: costs moved 2%): case118 cold 36-41, warm start alone 16-19, with these 10-14; case30
#: 18-22, 17-21, 8-12. A failed warm-started solve is retried cold, so they cannot cost a sample.
WARM_IPOPT_OPTIONS: dict[str, Any] = {"mu_init": 1e-5, "bound_push": 1e-6, "bound_frac": 1e-6}


class ACOPFOutput(NamedTuple):
    """Per-sample AC-OPF outputs, each with the batch as leading dimension."""

    pg_mw: Tensor  # (batch, n_gen)
    qg_mvar: Tensor  # (batch, n_gen)
    vm_pu: Tensor  # (batch, n_bus)
    va_rad: Tensor  # (batch, n_bus)
    lmp_usd_per_mwh: Tensor  # (batch, n_bus)
    cost_usd_per_h: Tensor  # (batch,) the objective: generation cost

    objective_usd_per_h = renamed_attribute("ACOPFOutput", "objective_usd_per_h", "cost_usd_per_h")


class ACOPFLayer(torch.nn.Module):
    """Differentiable AC-OPF over a batch of scenarios of one network.

    Args:
        network: the base `Network`; parameters not passed to `forward` come from it.
        convention: ``"matpower"`` or ``"pandapower"`` (see `formulations`).
        ipopt_options: passed to Ipopt; default ``tol=1e-9`` (why: module docstring).
        warm_ipopt_options: added to ``ipopt_options`` for samples given a ``warm_start``
            result (default `WARM_IPOPT_OPTIONS`; ``{}`` for none).
        active_tol: floor of the scale-aware active-set test (`acopf_kkt.active_set`):
            multipliers are divided by the objective gradient's size, slacks are per unit; a
            constraint whose two are within a factor 10 of each other, or both below
            ``active_tol``, is weakly active and its sample raises `SolverFailure` in
            backward (no gradient exists there).
        backend: ``"ipopt"`` (default, the reference: one Ipopt solve per sample, sparse KKT
            backward per sample) or ``"torch"`` (all samples in one batched torch interior point,
            `acopf_ipm`; ``ipm_options`` are its `IPMOptions`).

    ``forward(pd_mw, qd_mvar=None, **params)``: ``pd_mw``/``qd_mvar`` are ``(batch, n_bus)``;
    ``params`` are any of ``cost_c2_usd_per_mw2h, cost_c1_usd_per_mwh, cost_c0_usd_per_h``
    ``(n_gen,)`` or ``(batch, n_gen)`` and ``r_pu, x_pu, g_pu, b_pu`` ``(n_branch,)`` or
    ``(batch, n_branch)``; ``warm_start``: optional list (one per batch element) of
    `ACOPFResult` or None to start Ipopt from. Returns `ACOPFOutput`; raises
    `SolverFailure`/`InfeasibleError` naming the failed samples. Gradients flow to every
    tensor argument. `forward_with_solution` also returns the per-sample results.

    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> c1 = net.gen.cost_c1_usd_per_mwh.clone().requires_grad_()
    >>> out = ACOPFLayer(net)(net.bus.pd_mw.unsqueeze(0), cost_c1_usd_per_mwh=c1)
    >>> out.cost_usd_per_h.sum().backward()   # envelope theorem: d cost / d c1 = dispatch (MW)
    >>> bool(torch.allclose(c1.grad, out.pg_mw[0], atol=1e-4))
    True
    """

    def __init__(self, network, convention: str = "matpower", ipopt_options: dict[str, Any] | None = None,
                 active_tol: float = ACTIVE_TOL, warm_ipopt_options: dict[str, Any] | None = None,
                 backend: str = "ipopt", ipm_options: IPMOptions | None = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.ipm_options = ipm_options or IPMOptions()
        # The Ipopt layer's KKT backward has no epigraph or reactive-cost terms: it refuses such costs
        # (ConfigError); the torch interior point models both.
        if backend == "ipopt" and (getattr(network, "pwl_cost", None) is not None
                                   or getattr(network, "reactive_cost", None) is not None):
            check_costs(network, convex=True)  # raises the ConfigError that names them
        self.network = network
        self.convention = get_convention(convention)
        self.ipopt_options = {"tol": 1e-9, **(ipopt_options or {})}
        self.warm_ipopt_options = dict(WARM_IPOPT_OPTIONS if warm_ipopt_options is None else warm_ipopt_options)
        if active_tol <= 0:
            raise ConfigError(f"active_tol must be positive, got {active_tol}")
        self.active_tol = active_tol

    # ------------------------------------------------------------------ helpers
    def _thetas(self, pd_mw: Tensor, qd_mvar: Tensor | None, params: dict[str, Tensor | None]) -> list[Tensor]:
        if pd_mw.dim() != 2 or pd_mw.shape[-1] != self.network.n_bus:
            raise ValueError(f"pd_mw must be (batch, {self.network.n_bus}), got {tuple(pd_mw.shape)}")
        batch = pd_mw.shape[0]
        net = self.network
        owners = {"qd_mvar": net.bus, "cost_c2_usd_per_mw2h": net.gen, "cost_c1_usd_per_mwh": net.gen,
                  "cost_c0_usd_per_h": net.gen, "r_pu": net.branch, "x_pu": net.branch, "g_pu": net.branch,
                  "b_pu": net.branch}
        extra = set(params) - set(THETA_FIELDS)
        if extra:
            raise TypeError(f"unexpected parameters {sorted(extra)}; the layer takes {list(THETA_FIELDS[2:])}")
        values = {"pd_mw": pd_mw, "qd_mvar": qd_mvar, **params}
        out = []
        for name in THETA_FIELDS:
            v = values.get(name)
            if v is None:
                v = getattr(owners[name], name).to(device=pd_mw.device, dtype=pd_mw.dtype)
            if v.shape[-1] != (net.n_bus if name in ("pd_mw", "qd_mvar") else getattr(owners[name], name).shape[-1]):
                raise ValueError(f"{name}: wrong last dimension {tuple(v.shape)}")
            out.append(v.expand(batch, v.shape[-1]))
        return out

    def _network(self, thetas: list[Tensor], b: int):
        return self.network.with_(**{n: t[b].detach().cpu().double() for n, t in zip(THETA_FIELDS, thetas)})

    def solve_batch(self, thetas: list[Tensor], warm_start: Sequence[ACOPFResult | None] | None = None
                    ) -> tuple[Solution, list[ACOPFResult | None]]:
        sol, results, _ = self._solve_batch(thetas, warm_start)
        return sol, results

    def _solve_batch(self, thetas: list[Tensor], warm_start: Sequence[ACOPFResult | None] | None = None
                     ) -> tuple[Solution, list[ACOPFResult | None], list[ACOPFNLP]]:
        batch = thetas[0].shape[0]
        if warm_start is not None and len(warm_start) != batch:
            raise ValueError(f"warm_start has {len(warm_start)} entries, the batch has {batch}")
        results: list[ACOPFResult | None] = []
        nlps: list[ACOPFNLP] = []
        codes = []
        prev = None
        opts = self.ipopt_options
        for b in range(batch):
            net = self._network(thetas, b)
            given = warm_start is not None and warm_start[b] is not None
            start = warm_start[b] if given else prev
            status, _, res, nlp = solve_acopf_nlp(net, self.convention, start,
                                                  {**opts, **self.warm_ipopt_options} if given else opts)
            if res is None and start is not None:  # a bad warm start must not fail a solvable sample
                status, _, res, nlp = solve_acopf_nlp(net, self.convention, None, opts)
            results.append(res)
            nlps.append(nlp)
            codes.append(status.code)
            prev = res or prev
        like = thetas[0]
        value = _stack(results, self.network, like)
        sol = Solution(
            value=value,
            status_code=torch.tensor(codes, dtype=torch.long),
            residual=torch.zeros(len(codes), dtype=like.dtype),
            steps=torch.zeros(len(codes), dtype=torch.long),
            extras={"results": results},
        )
        return sol, results, nlps

    # ------------------------------------------------------------------ public
    def solve(self, pd_mw: Tensor, qd_mvar: Tensor | None = None, *,
              warm_start: Sequence[ACOPFResult | None] | None = None, **params: Tensor) -> Solution:
        """Solve without gradients; never raises on solver failure (per-sample `Status`).

        ``sol.extras["results"]``: the per-sample `ACOPFResult` (None where failed), usable as
        the next call's ``warm_start``.
        """
        with torch.no_grad():
            thetas = self._thetas(pd_mw, qd_mvar, params)
            if self.backend == "torch":
                return self._torch_solve(thetas, warm_start)[1]
            return self.solve_batch(thetas, warm_start)[0]

    def forward(self, pd_mw: Tensor, qd_mvar: Tensor | None = None, *, cost_c2_usd_per_mw2h: Tensor | None = None,
                cost_c1_usd_per_mwh: Tensor | None = None, cost_c0_usd_per_h: Tensor | None = None,
                r_pu: Tensor | None = None, x_pu: Tensor | None = None, g_pu: Tensor | None = None,
                b_pu: Tensor | None = None, warm_start: Sequence[ACOPFResult | None] | None = None) -> ACOPFOutput:
        params = {"cost_c2_usd_per_mw2h": cost_c2_usd_per_mw2h, "cost_c1_usd_per_mwh": cost_c1_usd_per_mwh,
                  "cost_c0_usd_per_h": cost_c0_usd_per_h, "r_pu": r_pu, "x_pu": x_pu, "g_pu": g_pu, "b_pu": b_pu}
        return self.forward_with_solution(pd_mw, qd_mvar, warm_start=warm_start, **params)[0]

    def forward_with_solution(self, pd_mw: Tensor, qd_mvar: Tensor | None = None, *,
                              warm_start: Sequence[ACOPFResult | None] | None = None,
                              **params: Tensor | None) -> tuple[ACOPFOutput, Solution]:
        """`forward` (differentiable, raises on failure) plus the `Solution` it came from.

        ``solution.extras["results"]`` holds each sample's `ACOPFResult`: pass it as the next
        call's ``warm_start`` (what `gridlearn.inverse.recover` does between outer iterations).
        """
        thetas = self._thetas(pd_mw, qd_mvar, params)
        if self.backend == "torch":
            out, sol = self._torch_solve(thetas, warm_start)
            sol.raise_on_failure(f"AC-OPF ({self.convention.name} convention, torch interior point)")
            return out, sol
        box: list[Solution] = []
        out = ACOPFOutput(*_ACOPFFunction.apply(self, warm_start, box, *thetas))
        return out, box[0]


    def _torch_solve(self, thetas: list[Tensor], warm_start) -> tuple[ACOPFOutput, Solution]:
        """All samples in one `solve_acopf_batched` (differentiable); never raises on a sample's failure."""
        if warm_start is not None and not isinstance(warm_start, BatchedACOPFResult):
            raise ConfigError("backend='torch' warm-starts from the previous call's solution.extras['results'] "
                              f"(a BatchedACOPFResult), got {type(warm_start).__name__}")
        params = {n: t for n, t in zip(THETA_FIELDS, thetas)}
        res = solve_acopf_batched(self.network, params.pop("pd_mw"), params.pop("qd_mvar"),
                                  convention=self.convention, options=self.ipm_options, warm_start=warm_start,
                                  strict_gradients=True, **params)
        like = thetas[0]
        out = ACOPFOutput(*(t.to(like.dtype) for t in (res.pg_mw, res.qg_mvar, res.vm_pu, res.va_rad,
                                                        res.lmp_usd_per_mwh, res.cost_usd_per_h)))
        sol = Solution(value=out, status_code=torch.tensor([s.code for s in res.status], dtype=torch.long),
                       residual=res.residuals["error"].detach().cpu(), steps=res.iterations.detach().cpu(),
                       extras={"results": res})
        return out, sol


BACKENDS = ("ipopt", "torch")


def _stack(results: list[ACOPFResult | None], network, like: Tensor) -> ACOPFOutput:
    def col(get, n):
        rows = [get(r) if r is not None else torch.full((n,), float("nan"), dtype=torch.float64) for r in results]
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)

    nb, ng = network.n_bus, network.n_gen
    obj = torch.tensor([r.cost_usd_per_h if r is not None else float("nan") for r in results], device=like.device,
                       dtype=like.dtype)
    return ACOPFOutput(col(lambda r: r.pg_mw, ng), col(lambda r: r.qg_mvar, ng), col(lambda r: r.vm_pu, nb),
                       col(lambda r: r.va_rad, nb), col(lambda r: r.lmp_usd_per_mwh, nb), obj)


class _ACOPFFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layer: ACOPFLayer, warm_start, box: list, *thetas: Tensor):
        sol, results, nlps = layer._solve_batch([t.detach() for t in thetas], warm_start)
        sol.raise_on_failure(f"AC-OPF ({layer.convention.name} convention)")
        box.append(sol)
        ctx.layer, ctx.results, ctx.nlps = layer, results, nlps
        ctx.save_for_backward(*thetas)
        return tuple(sol.value)

    @staticmethod
    def backward(ctx, g_pg, g_qg, g_vm, g_va, g_lmp, g_obj):
        layer: ACOPFLayer = ctx.layer
        thetas = ctx.saved_tensors
        net = layer.network
        base = float(net.base_mva)
        nb, ng = net.n_bus, net.n_gen
        need = dict(zip(THETA_FIELDS, ctx.needs_input_grad[3:]))
        need_branch = any(need[n] for n in BRANCH_FIELDS)
        grads = [torch.zeros_like(t) if need[n] else None for n, t in zip(THETA_FIELDS, thetas)]
        f64 = torch.float64
        for b, (res, nlp) in enumerate(zip(ctx.results, ctx.nlps)):
            z0 = torch.cat([res.va_rad, res.vm_pu, res.pg_mw / base, res.qg_mvar / base])
            act = active_set(res, nb, ng, layer.active_tol, sample=b, nlp=nlp)
            d = res.duals
            lam = torch.cat([d["p_balance"], d["q_balance"]])
            mu = torch.cat([d["flow_f"][act.flow_f], d["flow_t"][act.flow_t], d["angle"][act.angle]])
            v_z = torch.cat([g_va[b], g_vm[b], g_pg[b] * base, g_qg[b] * base]).detach().cpu().to(f64)
            v_lam = torch.cat([-g_lmp[b].detach().cpu().to(f64) / base, torch.zeros(nb, dtype=f64)])
            v = torch.cat([v_z[act.free], v_lam, torch.zeros(mu.numel(), dtype=f64)]).numpy()
            z0n, lamn = z0.numpy(), lam.numpy()
            g = {n: np.zeros(t.shape[-1]) for n, t in zip(THETA_FIELDS, thetas)}
            kkt = None
            if need_branch:
                th = {n: t[b].detach().cpu().to(f64) for n, t in zip(THETA_FIELDS, thetas)}
                kkt = KKTSystem(net.with_(**th).to("cpu", f64), layer.convention, z0, act, res.angle_bound_rad)
                y = torch.cat([z0[act.free], lam, mu])
            if np.abs(v).max(initial=0.0) > 0:
                w = solve_kkt(kkt_matrix(nlp, z0n, lamn, mu.numpy(), act), v, sample=b)
                g.update(bus_gen_vjp(w, z0n, act, nb, ng, base))
                if kkt is not None:
                    tg = kkt.theta_vjp(y, th, torch.as_tensor(w))
                    g.update({n: tg[n].numpy() for n in BRANCH_FIELDS})
            if g_obj[b] != 0:
                scale = float(g_obj[b])
                env = bus_gen_envelope(lamn, z0n, nb, ng, base)
                if kkt is not None:
                    tenv = kkt.envelope((z0[act.free], lam, mu), th)
                    env.update({n: tenv[n].numpy() for n in BRANCH_FIELDS})
                for n, e in env.items():
                    g[n] = g[n] + scale * e
            for i, name in enumerate(THETA_FIELDS):
                if grads[i] is not None:
                    grads[i][b] = torch.as_tensor(g[name], dtype=grads[i].dtype, device=grads[i].device)
        return (None, None, None, *grads)
