"""Network-aware task-based forecasting: bus-load forecasts trained through a multi-period DC-OPF.

This extends Donti, Amos & Kolter (2017) from one node to a grid (the paper has no
network). The model, per day (T = 24 hours, interval Δt = 1 h):

Day ahead. A forecaster maps features x to bus loads mu ``(T, n_load)`` MW. The operator
commits the dispatch z ``(T, n_gen)`` of the multi-period DC-OPF on the *forecast* loads
(`gridlearn.grid.DCOPFLayer`, PTDF form):

    z*(mu) = argmin_z  Σ_t Σ_g c2_g z_tg² + c1_g z_tg
             s.t.  Σ_g z_tg = Σ_i (mu_ti + gs_i)                      (balance)
                   |PTDF (C_g z_t − mu_t − gs) + shifts|_l ≤ rate_l     (line limits)
                   pmin ≤ z_t ≤ pmax,   |z_tg − z_(t−1)g| ≤ ramp_g Δt   (ramping)

Real time. The bus loads y ``(T, n_load)`` are realised; z is fixed. The system imbalance

    Δ_t = Σ_i (y_ti + gs_i) − Σ_g z_tg            (MW; > 0: under-scheduled)

is supplied (Δ > 0) or absorbed (Δ < 0) by the balancing unit at the reference bus, so
the real-time flows are f^rt_t = PTDF (C_g z_t − y_t − gs) + shifts (the PTDF's slack
column is zero: the reference bus takes up Δ_t). The realised cost of the day is

    L(z, y) = Σ_t Δt [ Σ_g c2 z_tg² + c1 z_tg + c0                       dispatch of z
                     + γ_under (Δ_t)_+ + γ_over (−Δ_t)_+ + ½ q Δ_t²      imbalance (paper's recourse)
                     + γ_overload Σ_l (|f^rt_tl| − rate_l)_+ ]           real-time overloads

and the task loss is its mean over days. Task training minimises it w.r.t. the
forecaster's weights θ:  dL/dθ = (∂L/∂z · dz*/dmu + ∂L/∂y-free terms) · dmu/dθ, where
dz*/dmu is the DC-OPF layer's implicit (KKT / OptNet) derivative. In the absence of
binding ramp limits ∂(dispatch cost)/∂mu_ti = LMP_ti (envelope theorem), so the gradient
tells the forecaster where on the network an extra forecast MW is cheap to schedule.

Why a system-wide imbalance, not per bus: a DC-OPF schedule balances Σ z = Σ mu exactly,
so per-bus imbalances y_i − mu_i would not depend on z at all: the network would drop out
of the recourse and task training would reduce to per-bus quantile regression. Real-time
balancing is settled per balancing area at one imbalance price, and the network enters
through (a) the dispatch cost (where a forecast MW is placed decides, under congestion,
which units run: the LMPs) and (b) the real-time flows of the balancing energy, whose
overloads on limited lines are priced at γ_overload.

Only mu enters the schedule (a deterministic DC-OPF; no σ-dependent reserve), so the
forecasters here are point forecasters; a Gaussian net's σ is carried but unused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from gridlearn.errors import ConfigError, DataError
from gridlearn.forecast.models import GaussianNet
from gridlearn.forecast.training import History, TrainSettings, _fit
from gridlearn.grid.dcopf import DCOPFLayer, DCOPFResult
from gridlearn.grid.dcopf_problem import DCStructure
from gridlearn.grid.network import Network
from gridlearn.implicit.qp import QPSettings
from gridlearn.implicit.solution import Solution

log = logging.getLogger(__name__)

# tol 1e-9 with room to iterate: at the layer's default 1e-11 / 60 iterations a few
# congested days (near-degenerate, c2 ≈ 0.01) stop at MAX_STEPS; 1e-9 needs ≤ 20 iterations.
DEFAULT_QP = QPSettings(tol=1e-9, max_iter=200)


@dataclass(frozen=True, kw_only=True)
class NetworkTaskParams:
    """Real-time settlement prices of the network-aware task (module docstring, L(z, y)).

    gamma_under_usd_per_mwh: price of energy bought in real time when under-scheduled
        (about 10x the case14 day-ahead LMPs of ~30 $/MWh).
    gamma_over_usd_per_mwh: price of disposing of over-scheduled energy (on top of its
        already paid dispatch cost).
    quad_usd_per_mw2h: q of the quadratic imbalance term ½ q Δ² (the paper's ½ (z − y)²).
    overload_usd_per_mwh: price per MWh of real-time flow beyond a line's rating.
    interval_h: length of one period.

    >>> NetworkTaskParams().gamma_under_usd_per_mwh, NetworkTaskParams(interval_h=0.25).interval_h
    (300.0, 0.25)
    >>> NetworkTaskParams(overload_usd_per_mwh=-1.0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: overload_usd_per_mwh must be a finite number >= 0, got -1.0
    """

    gamma_under_usd_per_mwh: float = 300.0
    gamma_over_usd_per_mwh: float = 15.0
    quad_usd_per_mw2h: float = 1.0
    overload_usd_per_mwh: float = 100.0
    interval_h: float = 1.0

    def __post_init__(self):
        for name in ("gamma_under_usd_per_mwh", "gamma_over_usd_per_mwh", "quad_usd_per_mw2h", "overload_usd_per_mwh"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.interval_h, (int, float)) and self.interval_h > 0):
            raise ConfigError(f"interval_h must be > 0, got {self.interval_h!r}")


class NetworkScheduler(nn.Module):
    """Day-ahead dispatch z*(mu) of a multi-period DC-OPF on forecast bus loads; differentiable.

    Args:
        network: the grid (its line ratings are the day-ahead and real-time limits).
        load_bus: ``(n_load,)`` positions of the forecast buses in ``network``; other buses
            keep zero forecast load.
        ramp_mw_per_h: ``(n_gen,)`` ramp limits (inf: none), or None for no ramping rows.
        settings: the interior point's `QPSettings`.

    ``solve(mu)`` returns the layer's `Solution` (per-day status, never raises);
    ``forward(mu)`` returns a `DCOPFResult` with (B, T, ·) tensors, raising
    `InfeasibleError` / `SolverFailure` naming the days that failed.

    Two 24-hour days on case9's three load buses, 60 % to 130 % of their nominal load:
    every hour is balanced, and ramp limits of 10 MW/h per unit bind (the load ramps by up
    to 28.8 MW/h, so at least one unit moves at its limit):

    >>> import math, torch
    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> shape = 0.6 + 0.7 * torch.sin(math.pi * torch.arange(24.0, dtype=torch.float64) / 24)   # peak at noon
    >>> mu = torch.stack([shape, 0.9 * shape])[:, :, None] * torch.tensor([90.0, 100.0, 125.0], dtype=torch.float64)
    >>> sch = NetworkScheduler(net, [4, 6, 8], ramp_mw_per_h=torch.full((3,), 10.0, dtype=torch.float64))
    >>> [s.name for s in sch.solve(mu).statuses]
    ['CONVERGED', 'CONVERGED']
    >>> res = sch(mu)
    >>> tuple(res.pg_mw.shape), bool(torch.allclose(res.pg_mw.sum(-1), mu.sum(-1), atol=1e-6))
    ((2, 24, 3), True)
    >>> round(float(res.pg_mw.diff(dim=1).abs().max()), 4), [round(float(c)) for c in res.cost_usd_per_h.sum(-1)]
    (10.0, [137389, 117782])
    """

    def __init__(self, network: Network, load_bus, ramp_mw_per_h: Tensor | None = None,
                 settings: QPSettings = DEFAULT_QP):
        super().__init__()
        if not isinstance(network, Network):
            raise TypeError(f"network must be a gridlearn Network, got {type(network).__name__}")
        load_bus = torch.as_tensor(np.asarray(load_bus), dtype=torch.long, device=network.device)
        if load_bus.dim() != 1 or len(load_bus) == 0 or int(load_bus.min()) < 0 or int(load_bus.max()) >= network.n_bus:
            raise ConfigError(f"load_bus must list bus positions in 0..{network.n_bus - 1}")
        if len(torch.unique(load_bus)) != len(load_bus):
            raise ConfigError("load_bus lists a bus twice")
        self.network = network
        self.load_bus = load_bus
        self.ramp_mw_per_h = ramp_mw_per_h
        self.layer = DCOPFLayer(settings=settings, multi_period=True)

    @property
    def n_load(self) -> int:
        return len(self.load_bus)

    def bus_loads(self, mu_mw: Tensor) -> Tensor:
        """``(B, T, n_load)`` -> ``(B, T, n_bus)``, zero at buses without a forecast."""
        if mu_mw.dim() != 3 or mu_mw.shape[-1] != self.n_load:
            raise ValueError(f"loads must be (B, T, {self.n_load}), got {tuple(mu_mw.shape)}")
        full = mu_mw.new_zeros(*mu_mw.shape[:-1], self.network.n_bus)
        return full.index_copy(-1, self.load_bus.to(mu_mw.device), mu_mw)

    def solve(self, mu_mw: Tensor) -> Solution:
        return self.layer.solve(self.network, self.bus_loads(mu_mw), ramp_mw_per_h=self._ramp(mu_mw))

    def forward(self, mu_mw: Tensor) -> DCOPFResult:
        """Schedule for forecast loads ``mu_mw`` ``(B, T, n_load)``."""
        return self.layer(self.network, self.bus_loads(mu_mw), ramp_mw_per_h=self._ramp(mu_mw))

    def settle(self, mu_mw: Tensor, y_mw: Tensor, params: "NetworkTaskParams"
               ) -> tuple[DCOPFResult, dict[str, Tensor], Tensor]:
        """Schedule z*(mu) and its realised cost terms when loads are y (`realised_cost`).

        Returns (schedule, cost terms ``(B_ok, T)``, ``(B,)`` bool mask of the days they
        cover). The DC schedule covers every day (a failed day raises); the AC scheduler
        (`gridlearn.forecast.ac_scheduler`) leaves failed days out, so callers average
        over the mask's days.
        """
        sched = self(mu_mw)
        cost = realised_cost(self.network, sched, self.bus_loads(y_mw), params)
        return sched, cost, torch.ones(len(mu_mw), dtype=torch.bool, device=mu_mw.device)

    def _ramp(self, like: Tensor) -> Tensor | None:
        if self.ramp_mw_per_h is None:
            return None
        return torch.as_tensor(self.ramp_mw_per_h, dtype=like.dtype, device=like.device)


def realised_flows_mw(network: Network, pg_mw: Tensor, y_bus_mw: Tensor) -> Tensor:
    """Real-time branch flows ``(B, T, n_branch)`` for dispatch ``pg_mw`` ``(B, T, n_gen)`` and
    realised bus loads ``y_bus_mw`` ``(B, T, n_bus)``; the reference bus absorbs the imbalance.

    f = base · [PTDF ((C_g pg − y − gs)/base − P_shift) + P_f,shift], the same expression as
    the DC-OPF's read-out (`gridlearn.grid.dcopf_problem.read_out`), without its balance.
    """
    st = DCStructure.build(network)
    base = network.base_mva
    inj = (pg_mw @ st.cg.T - y_bus_mw - network.bus.gs_mw) / base - st.p_bus_shift
    return (inj @ st.ptdf.T + st.p_f_shift) * base


def realised_cost(network: Network, schedule: DCOPFResult, y_bus_mw: Tensor, params: NetworkTaskParams) -> dict[str, Tensor]:
    """The day's realised cost L(z, y), per hour ``(B, T)`` in $, split into its terms.

    Returns {"dispatch", "imbalance", "overload", "total", "imbalance_mw"} (the last is
    Δ_t in MW, not a cost). ``schedule`` is the DC-OPF's result on the forecast loads.
    """
    pg = schedule.pg_mw
    delta = (y_bus_mw + network.bus.gs_mw).sum(-1) - pg.sum(-1)
    return settlement(network, schedule.cost_usd_per_h, delta, realised_flows_mw(network, pg, y_bus_mw), params)


def settlement(network: Network, cost_usd_per_h: Tensor, delta_mw: Tensor, flows_mw: Tensor,
               params: NetworkTaskParams) -> dict[str, Tensor]:
    """L's three terms per hour ``(B, T)`` in $ from the schedule's dispatch cost, the system
    imbalance Δ (MW) and the real-time branch flows ``(B, T, n_branch)`` (MW): the one
    settlement rule of both the DC and the AC variant (`gridlearn.forecast.ac_scheduler`)."""
    dt = params.interval_h
    imbalance = (params.gamma_under_usd_per_mwh * torch.clamp(delta_mw, min=0)
                 + params.gamma_over_usd_per_mwh * torch.clamp(-delta_mw, min=0)
                 + 0.5 * params.quad_usd_per_mw2h * delta_mw**2) * dt
    rate = network.branch.rate_a_mva
    limited = torch.isfinite(rate.detach()).nonzero().flatten()
    flows = flows_mw[..., limited]
    overload = params.overload_usd_per_mwh * torch.clamp(flows.abs() - rate[limited], min=0).sum(-1) * dt
    dispatch = cost_usd_per_h * dt
    return {"dispatch": dispatch, "imbalance": imbalance, "overload": overload,
            "total": dispatch + imbalance + overload, "imbalance_mw": delta_mw}


def task_loss(scheduler: NetworkScheduler, mu_mw: Tensor, y_mw: Tensor, params: NetworkTaskParams) -> Tensor:
    """Mean over days of the realised daily cost of the schedule z*(mu) when loads are y.

    mu_mw, y_mw: ``(B, T, n_load)``. Differentiable w.r.t. mu through the DC-OPF layer.

    When the scheduler leaves single hours out (the AC scheduler's training path: its cost
    terms carry ``"hour_kept"`` ``(B_ok, T)``, zero cost at the others), the loss is
    T × the mean cost of a kept day-hour: Σ_kept cost / n_kept · T. It is the mean daily
    cost when every hour is kept, and each kept hour weighs the same whatever its day lost
    (not a per-day rescaling, which would weigh a day's remaining hours up)."""
    if y_mw.shape != mu_mw.shape:
        raise ValueError(f"y_mw must have the shape of mu_mw {tuple(mu_mw.shape)}, got {tuple(y_mw.shape)}")
    _, cost, _ = scheduler.settle(mu_mw, y_mw, params)
    total, kept = cost["total"], cost.get("hour_kept")
    if kept is None or bool(kept.all()):
        return total.sum(-1).mean()
    return total.sum() * total.shape[-1] / kept.sum()


def tighten_busiest_lines(network: Network, loads_mw: Tensor, load_bus, n_lines: int, factor: float,
                          ramp_mw_per_h: Tensor | None = None) -> tuple[Network, Tensor]:
    """A copy of ``network`` where the ``n_lines`` branches with the largest |flow| in the
    multi-period DC-OPF without line limits over ``loads_mw`` ``(B, T, n_load)``
    (training days only) get rating ``factor`` × that largest flow; the rest keep theirs.

    Why the busiest lines only: tightening every branch also tightens branches whose
    flow no redispatch can change (radial feeders), which makes days infeasible instead
    of congested. Returns (network, indices of the tightened branches).
    """
    if not (0 < factor <= 1.0) or n_lines < 0:
        raise ConfigError(f"need 0 < factor <= 1 and n_lines >= 0, got {factor}, {n_lines}")
    free = network.with_(rate_a_mva=torch.full_like(network.branch.rate_a_mva, float("inf")))
    with torch.no_grad():
        res = NetworkScheduler(free, load_bus, ramp_mw_per_h)(loads_mw)
    fmax = res.p_from_mw.abs().flatten(0, 1).amax(0)
    top = torch.argsort(fmax, descending=True)[:n_lines]
    rate = network.branch.rate_a_mva.clone()
    rate[top] = fmax[top] * factor
    log.info("tightened branches %s to %s MW", top.tolist(), [round(float(r), 1) for r in rate[top]])
    return network.with_(rate_a_mva=rate), top


class BusLoadForecaster(nn.Module):
    """mu_mw = base_mw · r(x), with r a `GaussianNet` on loads relative to each bus's base.

    Working in relative units keeps the least-squares init and the MLP well scaled for
    buses of very different size. Input ``(B, n_features)``; returns (mu, sigma), each
    ``(B, 24·n_load)`` hour-major (index h·n_load + j), in MW, like the single-node nets,
    so `gridlearn.forecast.training.train_rmse` trains it unchanged (MSE in MW²).

    Args:
        x_train: ``(n, n_features)``; y_train_mw: ``(n, 24, n_load)``; base_mw: ``(n_load,)``.

    Buses of 1 MW and 100 MW: the least-squares start (the MLP's output layer zeroed here)
    fits 6 days of 5 features to rounding, in MW, at both scales:

    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(6, 5)); base = np.array([1.0, 100.0])
    >>> y = base * (1 + 0.1 * np.einsum("nk,kth->nth", x, rng.normal(size=(5, 24, 2))))
    >>> model = BusLoadForecaster(x, y, base, hidden=(8,)).double().eval()
    >>> _ = torch.nn.init.zeros_(model.net.head.weight); _ = torch.nn.init.zeros_(model.net.head.bias)
    >>> with torch.no_grad():
    ...     mu = model.loads(torch.as_tensor(x))
    >>> tuple(model(torch.as_tensor(x))[0].shape), tuple(mu.shape), bool(np.allclose(mu.numpy(), y, atol=1e-6))
    ((6, 48), (6, 24, 2), True)
    """

    def __init__(self, x_train: np.ndarray, y_train_mw: np.ndarray, base_mw: np.ndarray,
                 hidden: tuple[int, ...] = (128,), dropout: float = 0.2):
        super().__init__()
        base_mw = np.asarray(base_mw, dtype=np.float64)
        if y_train_mw.ndim != 3 or y_train_mw.shape[-1] != len(base_mw) or not (base_mw > 0).all():
            raise DataError(f"y_train_mw must be (n, T, {len(base_mw)}) and base_mw > 0")
        self.n_hours, self.n_load = y_train_mw.shape[1:]
        rel = (y_train_mw / base_mw).reshape(len(y_train_mw), -1)
        self.net = GaussianNet(x_train, rel, hidden=hidden, dropout=dropout)
        self.register_buffer("scale_mw", torch.as_tensor(np.tile(base_mw, self.n_hours), dtype=torch.float32).unsqueeze(0))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, sigma = self.net(x)
        return mu * self.scale_mw, sigma * self.scale_mw

    def loads(self, x: Tensor) -> Tensor:
        """mu as ``(B, 24, n_load)`` MW."""
        return self(x)[0].reshape(len(x), self.n_hours, self.n_load)

    @torch.no_grad()
    def set_sigma_from_residuals(self, x: Tensor, y: Tensor) -> None:
        self.net.set_sigma_from_residuals(x, y.reshape(len(y), -1) / self.scale_mw)


def _flat(y: Tensor) -> Tensor:
    return y.reshape(len(y), -1)


def train_rmse_bus(model: BusLoadForecaster, x_tr, y_tr, x_val, y_val, settings: TrainSettings) -> History:
    """MSE training in MW (``y`` ``(n, 24, n_load)``); `train_rmse` on the flattened targets."""
    from gridlearn.forecast.training import train_rmse

    return train_rmse(model, x_tr, _flat(y_tr), x_val, _flat(y_val), settings)


def train_task_network(model: BusLoadForecaster, scheduler: NetworkScheduler, params: NetworkTaskParams,
                       x_tr: Tensor, y_tr: Tensor, x_val: Tensor, y_val: Tensor, settings: TrainSettings,
                       batch_days: int | None = None, seed: int = 0) -> History:
    """Minimise the network task loss through the DC-OPF (Adam, early stopping on hold-out cost).

    Each epoch is one step on ``batch_days`` training days drawn without replacement
    (all days when None); the draw uses its own ``torch.Generator(seed)``. The hold-out
    loss is the mean daily realised cost on (x_val, y_val), in eval mode.

    SimBench bus loads on case9 (20 days fit, the next 4 held out): an RMSE net, then 4
    task steps on batches of 8 days. The hold-out cost falls, and the forecaster learns to
    over-forecast the system load (under-scheduling costs 20x over-scheduling):

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> from gridlearn.forecast import bus_load_data
    >>> from gridlearn.forecast.network_aware import train_rmse_bus
    >>> net = load_case("case9")
    >>> data = bus_load_data(net.bus.pd_mw.numpy())
    >>> t = lambda a: torch.as_tensor(a)
    >>> x, y, x_val, y_val = t(data.x_train[:20]), t(data.y_train[:20]), t(data.x_train[20:24]), t(data.y_train[20:24])
    >>> _ = torch.manual_seed(0)
    >>> model = BusLoadForecaster(data.x_train[:20], data.y_train[:20], data.base_mw, hidden=(8,)).double()
    >>> settings = TrainSettings(rmse_epochs=50, rmse_lr=1e-2, task_epochs=4, task_lr=1e-3, eval_every=2)
    >>> _ = train_rmse_bus(model, x, y, x_val, y_val, settings)
    >>> sch, params = NetworkScheduler(net, data.load_bus), NetworkTaskParams()
    >>> bias = lambda: round(evaluate_network(model, sch, params, x_val, y_val)["system_bias_mw"], 1)
    >>> before = bias()
    >>> hist = train_task_network(model, sch, params, x, y, x_val, y_val, settings, batch_days=8)
    >>> [(epoch, round(cost / 1000, 1)) for epoch, cost in hist.val], (before, bias())   # k$ per day; MW
    ([(0, 199.7), (2, 188.3), (4, 184.3)], (11.9, 39.6))
    """
    n = len(x_tr)
    if batch_days is not None and not 2 <= batch_days:
        raise ConfigError(f"batch_days must be >= 2 (BatchNorm needs two days), got {batch_days}")
    gen = torch.Generator().manual_seed(seed)

    def train_loss() -> Tensor:
        if batch_days is None or batch_days >= n:
            xb, yb = x_tr, y_tr
        else:
            idx = torch.randperm(n, generator=gen)[:batch_days].to(x_tr.device)
            xb, yb = x_tr[idx], y_tr[idx]
        return task_loss(scheduler, model.loads(xb), yb, params)

    @torch.no_grad()
    def val_loss() -> float:
        return float(task_loss(scheduler, model.loads(x_val), y_val, params))

    return _fit(model, settings.task_epochs, settings.task_lr, train_loss, val_loss, settings, "network task",
                settings.patience)


@torch.no_grad()
def evaluate_network(model: BusLoadForecaster, scheduler: NetworkScheduler, params: NetworkTaskParams,
                     x: Tensor, y: Tensor) -> dict[str, Tensor | float]:
    """Test metrics of a forecaster: mu ``(n, 24, n_load)``, dispatch pg_mw ``(n, 24, n_gen)``,
    rmse_mw (over all day-hour-buses), task_cost (mean daily $), per_hour_cost ``(24,)``,
    dispatch/imbalance/overload (mean daily $ of each term), system_bias_mw (mean of
    Σ mu − Σ y over day-hours), ok ``(n,)`` the days the costs cover (all, for DC; the
    AC scheduler leaves out days with a failed hour) and n_failed_days. pg_mw and daily_cost ($
    per day) cover the ok days.

    A forecaster exact on the days it is scored on (the least-squares start, its MLP's
    output layer zeroed) pays the dispatch only: no overload, and an imbalance of cents
    (the float32 least-squares start is exact to ~1e-6 MW):

    >>> import numpy as np, torch
    >>> from gridlearn.grid import load_case
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(3, 5)); base = np.array([90.0, 100.0, 125.0])
    >>> y = base * (1 + 0.1 * np.einsum("nk,kth->nth", x, rng.normal(size=(5, 24, 3))))
    >>> model = BusLoadForecaster(x, y, base, hidden=(8,)).double()
    >>> _ = torch.nn.init.zeros_(model.net.head.weight); _ = torch.nn.init.zeros_(model.net.head.bias)
    >>> m = evaluate_network(model, NetworkScheduler(load_case("case9"), [4, 6, 8]), NetworkTaskParams(),
    ...                      torch.as_tensor(x), torch.as_tensor(y))
    >>> tuple(m["pg_mw"].shape), round(m["rmse_mw"], 4), round(m["imbalance"], 1), m["overload"]
    ((3, 24, 3), 0.0, 0.0, 0.0)
    >>> round(m["task_cost"] / 1000, 2), round(m["dispatch"] / 1000, 2)   # k$ per day
    (127.99, 127.99)
    """
    model.eval()
    mu = model.loads(x)
    sched, cost, ok = scheduler.settle(mu, y, params)
    out: dict[str, Tensor | float] = {
        "mu": mu, "pg_mw": sched.pg_mw, "ok": ok, "n_failed_days": int((~ok).sum()),
        "rmse_mw": float(((mu - y) ** 2).mean().sqrt()),
        "task_cost": float(cost["total"].sum(-1).mean()),
        "per_hour_cost": cost["total"].mean(0), "daily_cost": cost["total"].sum(-1),
        "system_bias_mw": float((mu.sum(-1) - y.sum(-1)).mean()),
    }
    for term in ("dispatch", "imbalance", "overload"):
        out[term] = float(cost[term].sum(-1).mean())
    return out


__all__ = ["NetworkTaskParams", "NetworkScheduler", "BusLoadForecaster", "realised_flows_mw", "realised_cost", "settlement",
           "task_loss", "tighten_busiest_lines", "train_rmse_bus", "train_task_network", "evaluate_network",
           "DEFAULT_QP"]
