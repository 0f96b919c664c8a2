"""The torch backend of `InverseProblem`: every sample's AC-OPF in one batched solve, and its derivatives.

``InverseSolver(backend="torch")`` evaluates the loss at a parameter vector with one
`ACOPFLayer(backend="torch")` call over all S samples (`acopf_ipm.solve_acopf_batched`),
warm-started from the last accepted iterate's `BatchedACOPFResult`. The S samples get their
own copy of the unknowns, ``theta_s`` (S, P), all equal to ``theta``: sample s's outputs depend
on its row alone, so the loss gradient is the sum of the rows of one reverse pass.

The Jacobian (Levenberg-Marquardt, the identifiability report), ``InverseSolver.torch_jacobian``:

- ``"kkt"`` (default): the torch solutions as per-sample `ACOPFResult` (`per_sample_results`)
  read by the Ipopt path's forward-mode sparse KKT sensitivity (`sensitivity`), one sparse LU
  per sample for all P unknowns; no autograd graph is built for it.
- ``"reverse"``: one reverse pass of the layer's implicit-function backward per residual column,
  with the cotangent ``e_j`` on column j of every sample (m passes for the (S, m, P) Jacobian).

Measured at 20 samples (`benchmarks/bench_inverse_backends.py` -> results/inverse_backends.json and
inverse_backends_case118.json), "kkt" vs "reverse": case14 (19 columns) 0.04 vs 0.06 s, case30 (36)
0.05 vs 0.19 s, PGLib case57 (64) 0.06 vs 0.42 s, PGLib case118 (172) 0.15 vs 2.6 s. Against the
Ipopt path's Jacobian (max difference over its largest entry) both agree to the digits shown:
1.4e-8, 3.2e-6 (case30: the Ipopt solutions' own tolerance), 2.9e-8, 1.9e-8. Samples left out on
case118: the Ipopt path and "kkt" 5 of 20 (its weak-activity test), "reverse" 1 (the layer's).

Failures, as the Ipopt path's (`recovery`): a sample that does not converge makes the solve
raise `SolverFailure` (the trial point is rejected); a sample without a derivative raises
`SolverFailure` from the loss gradient (the layer's own error for a weakly active constraint;
NaN rows, a backward solve the layer does not trust, otherwise) and gets NaN rows in the
Jacobian (left out of that Levenberg-Marquardt step and of the identifiability report, as
`observation_jacobian`'s ``skip_failed``): "kkt" by the Ipopt path's active-set test,
"reverse" by ``BatchedACOPFResult.weakly_active`` and the layer's NaN.

Threads: the interior point's CPU kernels (`acopf_ipm.sparse_kkt`, numba ``parallel=True``)
use numba's pool, set by ``NUMBA_NUM_THREADS`` before numba loads (``numba.set_num_threads``
later does not help). Measured on a 2-core machine shared with other jobs, ``OMP_NUM_THREADS=1``:
case9, 3 samples, one `recover` took 2.5 s with the default pool under numba's "omp" threading
layer (each kernel call ~7 ms), 0.25 s with ``NUMBA_THREADING_LAYER=workqueue`` and 0.19 s with
``NUMBA_NUM_THREADS=1`` (the Ipopt backend: 0.13-0.25 s). Run single-threaded work with
``NUMBA_NUM_THREADS=1``, as `benchmarks/bench_inverse_backends.py` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.inverse.params import Unknown

log = logging.getLogger(__name__)


def per_sample_fields(network, unknowns: Sequence[Unknown], theta_s: Tensor) -> dict[str, Tensor]:
    """``{field: (S, n)}``: the network's values of every field an unknown lives in, with unknown k
    of sample s set to ``theta_s[s, k]`` (keeps the autograd history of ``theta_s``)."""
    out: dict[str, Tensor] = {}
    n_samples = theta_s.shape[0]
    for k, u in enumerate(unknowns):
        if u.field not in out:
            table = network.gen if u.is_cost else network.branch
            base = getattr(table, u.field).detach().to(dtype=theta_s.dtype, device=theta_s.device)
            out[u.field] = base.expand(n_samples, -1)
        onehot = torch.zeros(out[u.field].shape[-1], dtype=theta_s.dtype, device=theta_s.device)
        onehot[u.position] = 1.0
        out[u.field] = out[u.field] * (1 - onehot) + theta_s[:, k : k + 1] * onehot
    return out


@dataclass
class BatchedPoint:
    """One evaluated parameter vector: the layer's result (the next warm start), the weighted
    residuals with their autograd graph back to ``theta_s``, and ``theta_s`` itself."""

    solution: object  # BatchedACOPFResult
    residuals: Tensor  # (S, m), attached to the graph
    theta_s: Tensor  # (S, P) leaf

    @property
    def weakly_active(self) -> Tensor:
        weak = getattr(self.solution, "weakly_active", None)
        return torch.zeros(self.theta_s.shape[0], dtype=torch.bool) if weak is None else weak.detach().cpu().bool()


def evaluate(layer, network, observations, unknowns: Sequence[Unknown], theta: Tensor, warm, residuals_of,
             graph: bool = True) -> BatchedPoint:
    """Solve every sample at ``theta`` in one batched call (raises `SolverFailure` naming the samples
    that did not converge); ``residuals_of(pg_mw, lmp_usd_per_mwh) -> (S, m)``. ``graph=False``: no
    autograd graph (and no factorisation kept for a backward): for `loss_gradient` and the
    reverse-pass `jacobian` it must be True."""
    n_samples = observations.n_samples
    theta_s = theta.detach().double().expand(n_samples, -1).clone().requires_grad_(graph)
    fields = per_sample_fields(network, unknowns, theta_s)
    if graph:
        out, sol = layer.forward_with_solution(observations.pd_mw, observations.qd_mvar, warm_start=warm, **fields)
    else:
        sol = layer.solve(observations.pd_mw, observations.qd_mvar, warm_start=warm, **fields)
        sol.raise_on_failure(f"AC-OPF ({layer.convention.name} convention, torch interior point)")
        out = sol.value
    return BatchedPoint(sol.extras["results"], residuals_of(out.pg_mw, out.lmp_usd_per_mwh), theta_s)


def per_sample_results(network, convention, solution) -> list:
    """The `BatchedACOPFResult` ``solution`` as one `ACOPFResult` per sample (None where not converged),
    built by the Ipopt path's own packing (`acopf._pack`: flows, slacks, fixed variables, angle
    bounds), so the Ipopt path's KKT sensitivity (`sensitivity.observation_jacobian`) reads it.

    ``network``: at the parameters the solution is for (branch parameters enter the flows)."""
    import numpy as np

    from gridlearn.grid.acopf import _pack
    from gridlearn.grid.acopf_model import acopf_arrays
    from gridlearn.grid.formulations import get_convention
    from gridlearn.implicit.solution import Status

    conv = get_convention(convention)
    d = acopf_arrays(network.to("cpu", torch.float64), conv)
    base, nb = float(d.base_mva), d.n_bus
    sol = solution
    f64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    z_all = f64(torch.cat([sol.va_rad, sol.vm_pu, sol.pg_mw / base, sol.qg_mvar / base], dim=1))
    duals = {k: f64(v) for k, v in sol.duals.items()}
    no_va = np.zeros((z_all.shape[0], nb))  # the interior point bounds no angle (the reference bus is fixed)
    zl = np.concatenate([no_va, duals["vm_lower"], duals["pg_lower"], duals["qg_lower"]], axis=1)
    zu = np.concatenate([no_va, duals["vm_upper"], duals["pg_upper"], duals["qg_upper"]], axis=1)
    cost = f64(sol.cost_usd_per_h)
    out = []
    for s, status in enumerate(sol.status):
        if status is not Status.CONVERGED:
            out.append(None)
            continue
        cons = {k: duals[k][s] for k in ("p_balance", "q_balance", "flow_f", "flow_t", "angle")}
        out.append(_pack(d, conv, "torch interior point", float(cost[s]), 0.0, z_all[s], cons, zl[s], zu[s]))
    return out


def _no_derivative(rows: Tensor, what: str) -> SolverFailure:
    bad = rows.nonzero().flatten().tolist()
    return SolverFailure(f"AC-OPF samples {bad}: {what}; no implicit gradient there", indices=bad)


def loss_gradient(point: BatchedPoint, loss: Tensor) -> Tensor:
    """(P,) d loss / d theta (the sum of the per-sample rows). Raises `SolverFailure` when a sample
    has no derivative (the layer's own error for a weakly active constraint; NaN rows otherwise)."""
    (g_s,) = torch.autograd.grad(loss, point.theta_s, retain_graph=True)
    bad = ~torch.isfinite(g_s).all(dim=1)
    if bool(bad.any()):
        raise _no_derivative(bad, "the backward solve at the solution is not accurate enough to trust")
    return g_s.sum(dim=0)


def reverse_jacobian(point: BatchedPoint, column_weights: Tensor) -> Tensor:
    """(S, m, P) Jacobian of the weighted residuals by the layer's backward, NaN rows for the samples
    without a derivative (``InverseSolver.torch_jacobian="reverse"``).

    One reverse pass per residual column with a nonzero weight (a zero-weight column's residual
    is identically zero); weakly active samples get a zero cotangent (the layer would refuse them)
    and NaN rows."""
    r, th = point.residuals, point.theta_s
    n_samples, m = r.shape
    weak = point.weakly_active
    jac = torch.zeros(n_samples, m, th.shape[1], dtype=torch.float64)
    keep = (~weak).to(r.dtype)[:, None]
    for j in range(m):
        if float(column_weights[j]) == 0.0:
            continue
        v = torch.zeros_like(r)
        v[:, j] = 1.0
        (g,) = torch.autograd.grad(r, th, grad_outputs=v * keep, retain_graph=True)
        jac[:, j, :] = g.detach()
    bad = weak | ~torch.isfinite(jac).all(dim=(1, 2))
    for s in bad.nonzero().flatten().tolist():
        why = "a constraint is weakly active" if bool(weak[s]) else "the backward solve is not accurate enough"
        log.warning("sensitivity of sample %d left out (NaN rows): %s at the solution", s, why)
    jac[bad] = float("nan")
    return jac
