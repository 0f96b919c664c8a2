"""The AC-OPF variant of the network-aware task (`network_aware`): each hour dispatched by AC-OPF.

What changes against the DC variant (`NetworkScheduler`, stated there):

Day ahead. Every hour (day d, hour t) is one AC-OPF scenario of
`gridlearn.grid.ACOPFLayer(backend="torch")`; all days × 24 hours go through one batched
interior point. The AC-OPF is *single-period*: the DC variant's ramp rows
``|z_tg − z_(t−1)g| ≤ ramp_g`` are dropped (the layer has no inter-scenario coupling), so
the AC schedule may ramp faster than the DC one allows. Line ratings limit the apparent
power |S| at both branch ends (the AC-OPF's own limit), voltages and reactive outputs are
bounded as in the case.

Reactive demand: each forecast bus keeps its case power factor, qd_i = mu_i · qd_i⁰ / pd_i⁰
(signed, so a bus with negative case qd stays capacitive); buses without a forecast carry
no load, as in the DC variant. Shunts are the case's (their consumption gs·vm² is part of
what the generators cover).

Real time. The AC schedule's generation covers the forecast demand *plus* the network's
losses (and shunt consumption): Σ_g pg_tg = Σ_i mu_ti + loss_t. The imbalance settled at
the recourse prices is the demand the schedule did not plan for,

    Δ_t = Σ_i y_ti − (Σ_g pg_tg − loss_t),   loss_t = Σ_g pg_tg − Σ_i mu_ti   (= Σ y − Σ mu),

i.e. the scheduled losses are real consumption, not over-scheduling (the DC formula
Σ (y + gs) − Σ pg would charge every hour's ~2% losses at gamma_over). Neglected: the change
of losses with the imbalance itself (∂loss/∂P · Δ, a loss factor of a few % of Δ). The
real-time flows are the scheduled AC real-power flows plus the linear (PTDF) flows of the
per-bus deviations y − mu taken up at the reference bus, f^rt = p_from(mu) − PTDF (y − mu),
priced like the DC variant's above rate_a (real power against the MVA rating: the AC-OPF
itself limits |S|). Dispatch cost is the AC-OPF objective. So L(z, y) has the DC variant's
three terms with these two substitutions; the physics is the grid layer's (AC-OPF,
`DCStructure.ptdf`), not rewritten.

Failures. The layer marks each hour CONVERGED or not. What is left out depends on the path:

* Training (mu requires grad): an hour that did not converge, or converged with a weakly
  active constraint (no derivative there), is left out *alone*: the AC-OPF is single-period,
  so the other hours of its day have their own, valid schedules and derivatives (the DC
  variant must drop the whole day: its ramp rows couple the hours). `ACSchedule.hour_ok`
  marks the kept day-hours; `realised_cost_ac` zeroes the cost terms of the others
  (`torch.where`, so their cotangent is exactly zero) and returns the mask as
  ``"hour_kept"``; `network_aware.task_loss` then divides by the hours kept (T × mean
  cost of a kept day-hour). A day is in ``ok`` while one of its hours is kept.
* Evaluation (no gradient): a day with a non-converged hour is left out whole (a daily cost
  needs all its hours); weak activity does not matter without a derivative.

Every left-out hour or day is logged (a warning with the count) and counted in
``hours_left_out`` (training path); nothing kept raises `SolverFailure`. Gradients of the
left-out hours are cut before they reach mu (`_KeepRows`), so no implicit gradient leaves
a sample that has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.forecast.network_aware import NetworkScheduler, NetworkTaskParams, settlement
from gridlearn.grid.acopf_ipm import IPMOptions
from gridlearn.grid.acopf_layer import ACOPFLayer
from gridlearn.grid.dcopf_problem import DCStructure
from gridlearn.grid.network import Network
from gridlearn.implicit.solution import Solution, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ACSchedule:
    """AC schedules of the days in ``ok`` (B_ok = ok.sum() leading), hours second.

    status: ``(B, T)`` `Status` codes of every day-hour (also the dropped days');
    hour_ok: the kept hours of those days (all of them outside training); the tensors'
    entries of the other hours are placeholders (zeros for a hour that did not converge),
    never to be read as schedules;
    losses_mw: Σ pg − Σ mu per hour (network losses plus shunt consumption);
    s_max_mva: max(|S_from|, |S_to|) per branch, the quantity the ratings limit.
    """

    pg_mw: Tensor  # (B_ok, T, n_gen)
    cost_usd_per_h: Tensor  # (B_ok, T)
    losses_mw: Tensor  # (B_ok, T)
    p_from_mw: Tensor  # (B_ok, T, n_branch)
    s_max_mva: Tensor  # (B_ok, T, n_branch)
    ok: Tensor  # (B,) bool
    status: Tensor  # (B, T) long
    hour_ok: Tensor  # (B_ok, T) bool: the day-hours whose costs (and gradients) count


class _KeepRows(torch.autograd.Function):
    """Identity forward; backward zeroes the rows not in ``keep[0]`` (set after the solve).

    Why: the torch interior point's backward gives NaN gradients for the rows of a
    non-converged or weakly active scenario even when their cotangent is zero; a NaN times
    zero would still reach mu. `torch.where` picks zeros there instead.
    """

    @staticmethod
    def forward(ctx, x: Tensor, keep: list):
        ctx.keep = keep
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        rows = ctx.keep[0].to(g.device)
        return torch.where(rows[:, None], g, torch.zeros_like(g)), None


class ACNetworkScheduler(NetworkScheduler):
    """Hourly AC-OPF dispatch on forecast bus loads, batched over days × hours; differentiable.

    Args:
        network: the grid (ratings limit |S| day ahead; rate_a prices real-time overloads).
        load_bus: ``(n_load,)`` positions of the forecast buses.
        ipm_options: the torch interior point's `IPMOptions`.

    ``solve(mu)`` returns the layer's per-hour `Solution` (flat over days × hours, never
    raises); ``forward(mu, skip_failed=False)`` returns an `ACSchedule`, raising
    `SolverFailure` naming the failed day-hours unless ``skip_failed``.

    case9, one day of two hours: the case's own loads (MATPOWER's optimum, 5296.69 $/h) and
    1.2 × them. AC generation covers the losses too, and costs more than the lossless DC dispatch:

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> mu = torch.tensor([[[90.0, 100.0, 125.0], [108.0, 120.0, 150.0]]], dtype=torch.float64)
    >>> s = ACNetworkScheduler(net, [4, 6, 8])(mu)
    >>> tuple(s.pg_mw.shape), s.ok.tolist(), [round(float(v), 1) for v in s.cost_usd_per_h[0]]
    ((1, 2, 3), [True], [5296.7, 7006.0])
    >>> [round(float(v), 2) for v in s.losses_mw[0]]                  # MW
    [3.31, 4.8]
    >>> [round(float(v), 1) for v in NetworkScheduler(net, [4, 6, 8])(mu).cost_usd_per_h[0]]   # DC
    [5216.0, 6867.6]
    """

    def __init__(self, network: Network, load_bus, ipm_options: IPMOptions | None = None):
        super().__init__(network, load_bus, ramp_mw_per_h=None)
        self.layer = ACOPFLayer(network, backend="torch", ipm_options=ipm_options)
        pd0, qd0 = network.bus.pd_mw, network.bus.qd_mvar
        ratio = torch.where(pd0 > 0, qd0 / torch.where(pd0 > 0, pd0, torch.ones_like(pd0)), torch.zeros_like(pd0))
        self.q_per_p = ratio  # (n_bus,) Mvar per MW of forecast load: the case's power factor
        self.ptdf = DCStructure.build(network).ptdf  # (n_branch, n_bus), zero reference column
        # day-hours of the training path (mu requires grad) left out of their loss, cumulative:
        # why a study can report the share of training signal lost
        self.hours_left_out = {"failed": 0, "weakly_active": 0, "seen": 0}

    def _scenarios(self, mu_mw: Tensor) -> tuple[Tensor, Tensor]:
        pd = self.bus_loads(mu_mw).reshape(-1, self.network.n_bus)
        return pd, pd * self.q_per_p.to(pd)

    def solve(self, mu_mw: Tensor) -> Solution:
        return self.layer.solve(*self._scenarios(mu_mw))

    def forward(self, mu_mw: Tensor, skip_failed: bool = False) -> ACSchedule:
        """Schedule for forecast loads ``mu_mw`` ``(B, T, n_load)``.

        With ``skip_failed``, non-converged hours are left out (their day outside training);
        when mu requires grad, so are weakly active hours (module docstring, Failures)."""
        n_days, n_hours = mu_mw.shape[:2]
        n = n_days * n_hours
        per_hour = mu_mw.requires_grad  # training: drop hours; evaluation: drop whole days
        keep = [torch.ones(n, dtype=torch.bool)]
        pd, qd = self._scenarios(_KeepRows.apply(mu_mw.reshape(n, -1), keep).view_as(mu_mw))
        rows = torch.arange(n)  # the flat day-hours solved (d·T + t)
        try:
            out, sol = self.layer.forward_with_solution(pd, qd)
            status = sol.status_code.view(n_days, n_hours)
        except SolverFailure as e:
            if not skip_failed:
                raise
            status = torch.full((n,), Status.CONVERGED.code, dtype=torch.long)
            status[list(e.indices)] = torch.tensor([s.code for s in e.statuses], dtype=torch.long)
            status = status.view(n_days, n_hours)
            converged = status == Status.CONVERGED.code
            if not per_hour:
                converged = converged.all(-1, keepdim=True).expand(n_days, n_hours)
            rows = converged.flatten().nonzero().flatten()
            self._warn(per_hour, n_days, n_hours, rows, n - len(rows), "did not converge", e.statuses)
            if len(rows) == 0:
                raise
            # a second solve on the kept hours only (the layer raises on any failure)
            out, sol = self.layer.forward_with_solution(pd[rows], qd[rows])
        res = sol.extras["results"]
        left_out = {"failed": n - len(rows), "weakly_active": 0}
        if per_hour and bool(res.weakly_active.any()):
            weak = res.weakly_active.flatten().to(rows.device)
            left_out["weakly_active"] = int(weak.sum())
            self._warn(per_hour, n_days, n_hours, rows[~weak], left_out["weakly_active"],
                       "had a weakly active constraint (no derivative)", [Status.NUMERICAL])
            if bool(weak.all()):
                raise SolverFailure("AC scheduling: every hour has a weakly active constraint or failed",
                                    indices=rows.tolist(), statuses=[Status.NUMERICAL] * len(rows))
            kept = rows[~weak]
        else:
            kept = rows
        if per_hour:
            self.hours_left_out["failed"] += left_out["failed"]
            self.hours_left_out["weakly_active"] += left_out["weakly_active"]
            self.hours_left_out["seen"] += n
        hour_kept = torch.zeros(n, dtype=torch.bool)
        hour_kept[kept] = True
        keep[0] = hour_kept
        hour_kept = hour_kept.view(n_days, n_hours)
        ok = hour_kept.any(-1)

        def per_day(t: Tensor) -> Tensor:
            """Solved rows -> (B_ok, T, ...), zeros at the hours not solved (differentiable in t)."""
            full = t.new_zeros(n, *t.shape[1:]).index_copy(0, rows.to(t.device), t)
            return full.view(n_days, n_hours, *t.shape[1:])[ok.to(t.device)]

        pg = per_day(out.pg_mw)
        mu_ok = mu_mw[ok.to(mu_mw.device)]
        s_from = torch.hypot(res.p_from_mw, res.q_from_mvar)
        s_to = torch.hypot(res.p_to_mw, res.q_to_mvar)
        return ACSchedule(pg_mw=pg, cost_usd_per_h=per_day(out.cost_usd_per_h),
                          losses_mw=pg.sum(-1) - mu_ok.sum(-1), p_from_mw=per_day(res.p_from_mw.to(pg)),
                          s_max_mva=per_day(torch.maximum(s_from, s_to).to(pg)), ok=ok, status=status,
                          hour_ok=hour_kept[ok].to(pg.device))

    @staticmethod
    def _warn(per_hour: bool, n_days: int, n_hours: int, kept: Tensor, n_out: int, why: str, statuses) -> None:
        """Log what is left out: ``n_out`` day-hours (training) or the days without all hours in ``kept``."""
        names = sorted({s.name for s in statuses})
        if per_hour:
            log.warning("AC scheduling: %d of %d day-hours left out of the loss (%d kept): the hour %s (%s)",
                        n_out, n_days * n_hours, len(kept), why, names)
        else:
            n_kept = len(torch.unique(kept // n_hours))
            log.warning("AC scheduling: %d of %d days left out: an hour %s (%s)", n_days - n_kept, n_days, why, names)

    def settle(self, mu_mw: Tensor, y_mw: Tensor, params: NetworkTaskParams
               ) -> tuple[ACSchedule, dict[str, Tensor], Tensor]:
        """As `NetworkScheduler.settle`; failed hours (training) or their days (evaluation) are
        left out, logged; the cost terms carry ``"hour_kept"`` (module docstring, Failures)."""
        sched = self(mu_mw, skip_failed=True)
        ok = sched.ok.to(mu_mw.device)
        return sched, realised_cost_ac(self, sched, mu_mw[ok], y_mw[ok], params), sched.ok


def realised_cost_ac(scheduler: ACNetworkScheduler, schedule: ACSchedule, mu_mw: Tensor, y_mw: Tensor,
                     params: NetworkTaskParams) -> dict[str, Tensor]:
    """L(z, y) of AC schedules per hour ``(B_ok, T)`` in $ (module docstring), split into its terms.

    mu_mw, y_mw: forecast and realised loads ``(B_ok, T, n_load)`` of the schedule's days.
    Returns {"dispatch", "imbalance", "overload", "total", "imbalance_mw", "losses_mw",
    "hour_kept"}; the four cost terms are exactly 0 at the hours not in ``hour_kept``
    (`torch.where`: their placeholders get a zero cotangent, never NaN · 0).
    """
    planned = schedule.pg_mw.sum(-1) - schedule.losses_mw  # the demand the schedule covers
    delta = y_mw.sum(-1) - planned
    dev = scheduler.bus_loads(y_mw) - scheduler.bus_loads(mu_mw)
    flows = schedule.p_from_mw - dev @ scheduler.ptdf.to(dev).T
    cost = settlement(scheduler.network, schedule.cost_usd_per_h, delta, flows, params)
    kept = schedule.hour_ok.to(delta.device)
    for term in ("dispatch", "imbalance", "overload", "total"):
        cost[term] = torch.where(kept, cost[term], torch.zeros_like(cost[term]))
    return {**cost, "losses_mw": schedule.losses_mw, "hour_kept": kept}


__all__ = ["ACNetworkScheduler", "ACSchedule", "realised_cost_ac"]
