"""A shortened reference-protocol seed on PJM: where the time goes (cProfile), or its test metrics.

    .venv/bin/python benchmarks/profile_task_reference.py profile              # 100/10/10 steps, ~1-4 min
    .venv/bin/python benchmarks/profile_task_reference.py metrics --root DIR   # 60 RMSE steps, 2x3 weighted, 8 task steps

`profile` prints CPU seconds per phase (RMSE net, cost-weighted RMSE, task pre-training, task
steps) and the cProfile tables. `metrics` prints JSON test metrics of the three methods and
the task net's hold-out curve, importing gridlearn from ``--root`` (a checkout), so that two
code trees can be compared on the same shortened run (studies/README.md, "Where a PJM
seed's time goes"). One torch thread; seed 0.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=("profile", "metrics"))
ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
args = ap.parse_args()
sys.path.insert(0, args.root)

import torch  # noqa: E402

from gridlearn.data import load_pjm  # noqa: E402
from gridlearn.forecast import reference_protocol as ref  # noqa: E402
from gridlearn.forecast.models import GaussianNet  # noqa: E402
from gridlearn.forecast.scheduling import SQP, SchedulingParams, StochasticScheduler  # noqa: E402
from gridlearn.forecast.training import evaluate  # noqa: E402

torch.set_num_threads(1)
data = ref.whole_data_standardised(load_pjm())
sch = StochasticScheduler(SchedulingParams(), SQP())
t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
x, y = t(data.x_train), t(data.y_train)
if args.mode == "profile":
    s = ref.ReferenceSettings(rmse_steps=100, weighted_rounds=1, weighted_epochs=10, task_steps=10, stop_window=1000)
else:
    s = ref.ReferenceSettings(rmse_steps=60, weighted_rounds=2, weighted_epochs=3, task_steps=8, stop_window=1000)
make = lambda idx=slice(None): GaussianNet(data.x_train[idx], data.y_train[idx]).double()  # noqa: E731
torch.manual_seed(0)
cpu, nets = {}, {}


def phase(name, fn):
    t0 = time.process_time()
    out = fn()
    cpu[name] = time.process_time() - t0
    return out


prof = cProfile.Profile()
if args.mode == "profile":
    prof.enable()
nets["rmse"] = make()
phase("rmse", lambda: ref.train_rmse_fixed(nets["rmse"], x, y, s))
nets["weighted_rmse"] = phase("weighted_rmse", lambda: ref.train_weighted_rmse_reference(make, sch, x, y, s))
fit, hold = ref.random_holdout(len(x), s.holdout_fraction, 0)
nets["task"] = make(fit)
phase("task_pretrain", lambda: ref.train_rmse_fixed(nets["task"], x[fit], y[fit], s))
hist = phase("task", lambda: ref.train_task_reference(nets["task"], sch, x[fit], y[fit], x[hold], y[hold], s))
prof.disable()
if args.mode == "profile":
    print("CPU seconds per phase:", {k: round(v, 2) for k, v in cpu.items()})
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(45)
    st.sort_stats("tottime").print_stats(25)
else:
    xt, yt = t(data.x_test), t(data.y_test)
    res = {k: {m: v for m, v in evaluate(net, sch, xt, yt).items() if m in ("rmse", "rmse_hourly", "task_cost")}
           for k, net in nets.items()}
    print(json.dumps({"test": res, "task_holdout_curve": [v for _, v in hist.val], "cpu_s": cpu}, indent=1))
