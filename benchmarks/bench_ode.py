"""Neural ODE: gridlearn (dopri5, per-element steps, adjoint) vs torchdiffeq odeint_adjoint dopri5.

Run: .venv/bin/python benchmarks/bench_ode.py [--quick]

Cases (same vector field module, same y0, same rtol/atol, loss = Σ w ⊙ y(t₁)):
- Lorenz (σ, ρ, β as parameters), a batch of initial conditions;
- a small MLP vector field (d=16, hidden 64);
- a mixed-stiffness Van der Pol batch (μ from 0.1 to 20): per-element steps vs a shared step.

For each: error of y(t₁) and of the gradients against a tight reference (torchdiffeq at
rtol = atol = 1e-12), batched function evaluations forward and backward, and wall time
(median; forward + backward). torchdiffeq is run with adjoint_options norm="seminorm" so
that, like gridlearn, parameter adjoints do not enter the error control. One intra-op
thread for both (torch.set_num_threads(1)). Writes benchmarks/results/ode.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from _results import write_result

from gridlearn.implicit.ode import odeint_solve

DT = torch.float64


class Counted(nn.Module):
    """Counts batched evaluations; ignores t (all fields here are autonomous)."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.field(y)


class Lorenz(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([10.0, 28.0, 8.0 / 3.0], dtype=DT))

    def forward(self, y):
        x, yy, z = y.unbind(-1)
        s, r, b = self.p.unbind(-1)
        return torch.stack([s * (yy - x), x * (r - z) - yy, x * yy - b * z], dim=-1)


class MLP(nn.Module):
    def __init__(self, d=16, hidden=64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d, hidden).to(DT)
        self.l2 = nn.Linear(hidden, d).to(DT)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=DT) / p.shape[-1] ** 0.5)

    def forward(self, y):
        return self.l2(torch.tanh(self.l1(y)))


class VanDerPol(nn.Module):
    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.mu = nn.Parameter(mu)

    def forward(self, y):
        x, v = y.unbind(-1)
        return torch.stack([v, self.mu * (1 - x**2) * v - x], dim=-1)


def median_time(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_ours(field: Counted, y0, t, w, rtol, atol):
    field.calls = 0
    y0r = y0.clone().requires_grad_(True)
    sol = odeint_solve(field, y0r, t, rtol=rtol, atol=atol, gradient="adjoint", on_failure="raise")
    assert sol.ok, sol.statuses
    fwd_calls = field.calls
    grads = torch.autograd.grad((sol.value[-1] * w).sum(), [y0r, *field.parameters()])
    return sol.value[-1].detach(), grads, fwd_calls, field.calls - fwd_calls, sol


def run_theirs(field: Counted, y0, t, w, rtol, atol, adjoint=True):
    from torchdiffeq import odeint, odeint_adjoint

    field.calls = 0
    y0r = y0.clone().requires_grad_(True)
    if adjoint:
        ys = odeint_adjoint(field, y0r, t, rtol=rtol, atol=atol, method="dopri5", adjoint_options=dict(norm="seminorm"))
    else:
        ys = odeint(field, y0r, t, rtol=rtol, atol=atol, method="dopri5")
    fwd_calls = field.calls
    grads = torch.autograd.grad((ys[-1] * w).sum(), [y0r, *field.parameters()])
    return ys[-1].detach(), grads, fwd_calls, field.calls - fwd_calls


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def compare(name, field_fn, y0, t, tols, reps):
    w = torch.randn(y0.shape, generator=torch.Generator().manual_seed(5), dtype=DT)
    ref_y, ref_g, _, _ = run_theirs(Counted(field_fn()), y0, t, w, 1e-12, 1e-12)
    rows = []
    for tol in tols:
        fo, ft = Counted(field_fn()), Counted(field_fn())
        y_o, g_o, fc_o, bc_o, sol = run_ours(fo, y0, t, w, tol, tol)
        y_t, g_t, fc_t, bc_t = run_theirs(ft, y0, t, w, tol, tol)
        err = {
            "gridlearn": {"y": rel_err(y_o, ref_y), "grad": max(rel_err(a, b) for a, b in zip(g_o, ref_g))},
            "torchdiffeq": {"y": rel_err(y_t, ref_y), "grad": max(rel_err(a, b) for a, b in zip(g_t, ref_g))},
        }
        # agreement before timing: both within a generous multiple of the tolerance of the reference
        bound = max(1e3 * tol, 1e-6)
        if max(err["gridlearn"]["y"], err["torchdiffeq"]["y"]) > bound:
            raise SystemExit(f"{name} tol={tol}: y errors {err} exceed {bound}")
        t_o = median_time(lambda: run_ours(fo, y0, t, w, tol, tol), reps)
        t_t = median_time(lambda: run_theirs(ft, y0, t, w, tol, tol), reps)
        rows.append({
            "tol": tol,
            "rel_error_vs_reference": err,
            "batched_evaluations": {"gridlearn": {"forward": fc_o, "backward": bc_o}, "torchdiffeq": {"forward": fc_t, "backward": bc_t}},
            "gridlearn_per_element_forward_nfev_sum": int(sol.extras["nfev"].sum()),
            "wall_s_forward_backward": {"gridlearn": t_o, "torchdiffeq": t_t, "ratio": t_o / t_t},
            "target_1.1x_met": t_o <= 1.1 * t_t,
        })
        r = rows[-1]
        print(
            f"{name:8s} tol={tol:.0e}: err y {err['gridlearn']['y']:.1e}/{err['torchdiffeq']['y']:.1e} "
            f"grad {err['gridlearn']['grad']:.1e}/{err['torchdiffeq']['grad']:.1e}; evals fwd {fc_o}/{fc_t} bwd {bc_o}/{bc_t}; "
            f"time {t_o*1e3:.0f}/{t_t*1e3:.0f} ms (ratio {t_o/t_t:.2f})   [gridlearn/torchdiffeq]"
        )
    return {"case": name, "batch": y0.shape[0], "state_dim": y0.shape[-1], "t1": float(t[-1]), "rows": rows}


def mixed_stiffness(reps, batch=16, t1=5.0, tol=1e-6):
    """Forward only: per-element evaluations vs the shared step of one big system."""
    from torchdiffeq import odeint

    mu = torch.linspace(0.1, 20.0, batch, dtype=DT)
    y0 = torch.tensor([2.0, 0.0], dtype=DT).expand(batch, 2).clone()
    t = torch.tensor([0.0, t1], dtype=DT)
    ref = odeint(Counted(VanDerPol(mu)), y0, t, rtol=1e-12, atol=1e-12, method="dopri5")[-1]
    fo, ft = Counted(VanDerPol(mu)), Counted(VanDerPol(mu))
    with torch.no_grad():
        sol = odeint_solve(fo, y0, t, rtol=tol, atol=tol)
        calls_o = fo.calls
        y_t = odeint(ft, y0, t, rtol=tol, atol=tol, method="dopri5")[-1]
        calls_t = ft.calls
    err_o = ((sol.value[-1] - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()
    err_t = ((y_t - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item()
    per_elem = sol.extras["nfev"]
    with torch.no_grad():
        t_o = median_time(lambda: odeint_solve(fo, y0, t, rtol=tol, atol=tol), reps)
        t_t = median_time(lambda: odeint(ft, y0, t, rtol=tol, atol=tol, method="dopri5"), reps)
    out = {
        "case": "van_der_pol_mixed", "mu": [float(mu[0]), float(mu[-1])], "batch": batch, "t1": t1, "tol": tol,
        "max_rel_error_per_element": {"gridlearn": err_o, "torchdiffeq": err_t},
        "total_element_evaluations": {"gridlearn_per_element_steps": int(per_elem.sum()), "shared_step": calls_t * batch,
                                      "ratio": int(per_elem.sum()) / (calls_t * batch)},
        "per_element_nfev_min_max": [int(per_elem.min()), int(per_elem.max())],
        "batched_calls": {"gridlearn": calls_o, "torchdiffeq": calls_t},
        "wall_s_forward": {"gridlearn": t_o, "torchdiffeq": t_t, "ratio": t_o / t_t},
    }
    print(
        f"VdP mixed μ∈[0.1, 20] x{batch}: element evaluations {int(per_elem.sum())} (per-element steps) vs "
        f"{calls_t * batch} (shared step) = {out['total_element_evaluations']['ratio']:.2f}x; batched calls {calls_o} vs {calls_t}; "
        f"max element error {err_o:.1e} vs {err_t:.1e}; time {t_o*1e3:.0f} vs {t_t*1e3:.0f} ms"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reps = 3 if args.quick else 5
    g = torch.Generator().manual_seed(0)
    lorenz_y0 = torch.tensor([1.0, 1.0, 20.0], dtype=DT) + torch.randn(16, 3, generator=g, dtype=DT)
    mlp_y0 = torch.randn(64, 16, generator=g, dtype=DT)
    cases = [
        compare("lorenz", Lorenz, lorenz_y0, torch.tensor([0.0, 0.5], dtype=DT), [1e-6, 1e-8], reps),
        compare("mlp", lambda: MLP(seed=1), mlp_y0, torch.tensor([0.0, 1.0], dtype=DT), [1e-6, 1e-8], reps),
    ]
    cases.append(mixed_stiffness(reps))
    import torchdiffeq

    write_result("ode.json", "ode", f"torchdiffeq {torchdiffeq.__version__} odeint_adjoint dopri5 (adjoint norm=seminorm)",
                 "torch.set_num_threads(1); float64; rtol=atol=tol for both; errors are relative to torchdiffeq at 1e-12; "
                 "median wall time of forward+backward; evaluations are batched vector-field calls.",
                 cases=cases)


if __name__ == "__main__":
    main()
