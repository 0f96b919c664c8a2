"""SATNet, side by side with the reference extension (locuslab/SATNet), on CPU.

Cases (issue #21): the paper's Sudoku layer (n=729, m=600, aux=300, max_iter 40, eps 1e-4)
at batch 40 on 1 and 2 threads and batch 8 on 1 thread, and one step of the parity
chain (n=3: two input bits and their XOR, m=4, aux=1, as studies/satnet_parity.py) at batch
100. Each peer does forward
+ backward of a binary cross-entropy loss on the same inputs with the same S; the figure
is the minimum over ``--repeats`` passes, the peers taking turns within each pass. Peers:

- ``reference``: locuslab/SATNet's CPU (C++/SSE/OpenMP) extension, k = 32 (hard-coded there),
  prox_lam 1e-2; only when ``--reference DIR`` points at a checkout of it. Never vendored:

      git clone https://github.com/locuslab/SATNet /tmp/satnet/ref
      .venv/bin/python benchmarks/bench_satnet.py --reference /tmp/satnet/ref --build-reference

  (``--build-reference`` runs ``python setup.py build_ext --inplace`` there once.)
- ``numba_k32``: gridlearn's compiled kernels at the reference's k, for a like-for-like time;
- ``numba``: gridlearn's default (k = floor(sqrt(2N)) + 1 = 46 for Sudoku; backward by CG);
- ``numba_sweeps``: the same with the reference's backward, coordinate sweeps
  (``adjoint_solver="sweeps"``), the default before CG;
- ``torch``: gridlearn's pure-torch reference path (default k), the code before the kernels;
  slow, so only in the cases named by ``--torch-cases``.

Before any time: (1) the compiled and the torch path agree (float64, values and S
gradients) on a random instance; (2) gridlearn and the reference, both iterated to
convergence on a small instance with the same S (k = 32, no damping), agree on outputs and
S gradients. Writes benchmarks/results/satnet.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from gridlearn.implicit.satnet import MixingSettings, SATNet, satnet_solve
from gridlearn.logic.sudoku import generate_dataset, input_mask, one_hot

OUT = Path(__file__).resolve().parent / "results" / "satnet.json"
SUDOKU = dict(n=729, m=600, aux=300)
PARITY = dict(n=3, m=4, aux=1)  # one XOR step of the parity chain (studies/satnet_parity.py)
CASES = [("sudoku_b40_t1", "sudoku", 40, 1), ("sudoku_b40_t2", "sudoku", 40, 2),
         ("sudoku_b8_t1", "sudoku", 8, 1), ("parity_b100_t1", "parity", 100, 1)]


def load_reference(path: str | None, build: bool):
    if path is None:
        return None
    if build:
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=path, check=True,
                       stdout=subprocess.DEVNULL)
    sys.path.insert(0, str(Path(path).resolve()))
    import satnet  # the reference package

    return satnet


def _openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes loaded in this process (Linux: from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as fh:
            libs = {line.split()[-1] for line in fh if ".so" in line}
    except OSError:
        return []
    return sorted(p for p in libs if any(name in Path(p).name for name in ("libgomp", "libiomp", "libomp")))


def set_reference_threads(threads: int) -> int:
    """Set ``threads`` on every OpenMP runtime loaded here; returns the count they report.

    The reference extension needs libgomp.so.1, which the loader resolves to the one torch
    already loaded (same soname), so torch.set_num_threads reaches it (checked: batch 8 on 2
    threads takes half the wall time at the same CPU time). Setting it on each runtime
    anyway records, per case, how many threads the reference ran, rather than assuming it.
    """
    counts = []
    for path in _openmp_runtimes():
        lib = ctypes.CDLL(path)
        lib.omp_set_num_threads(ctypes.c_int(threads))
        counts.append(int(lib.omp_get_max_threads()))
    return min(counts) if counts else 1


def load_average() -> float:
    """1-minute load average (the machine is shared: a ratio is fair only under equal load)."""
    return round(os.getloadavg()[0], 2)


def check_backends_agree() -> dict:
    g = torch.Generator().manual_seed(0)
    B, n, m, aux = 4, 20, 16, 5
    S = torch.randn(m, n + 1 + aux, generator=g, dtype=torch.float64)
    z = torch.rand(B, n, generator=g, dtype=torch.float64)
    mask = torch.rand(B, n, generator=g) < 0.4
    w = torch.randn(B, n, generator=g, dtype=torch.float64)
    res = {}
    for be in ("torch", "numba"):
        # the kernels' adjoint sweeps: the CG backward is one torch code for both backends
        st = MixingSettings(aux=aux, k=6, max_iter=300, eps=1e-10, backend=be, on_failure="ignore",
                            adjoint_solver="sweeps")
        Sr = S.clone().requires_grad_(True)
        sol = satnet_solve(Sr, z, mask, st, torch.Generator().manual_seed(1))
        (sol.value * w).sum().backward()
        res[be] = (sol.value.detach(), Sr.grad)
    err = {"value_max_abs": float((res["torch"][0] - res["numba"][0]).abs().max()),
           "dS_max_abs": float((res["torch"][1] - res["numba"][1]).abs().max())}
    if max(err.values()) > 1e-10:
        raise SystemExit(f"compiled and torch paths disagree: {err}")
    return err


def check_reference_agrees(ref) -> dict:
    n, m, aux, B = 12, 8, 4, 3
    # the reference's backward algorithm (sweeps), float32 as the reference is
    # eps 1e-12 on our side: in float32 a relative decrease of 1e-14 is below round-off for
    # some random update orders (one element stalled at 3.7e-14); the reference runs all 3000
    net = SATNet(n, m, aux=aux, k=32, max_iter=3000, eps=1e-12, seed=0, adjoint_damping=0.0, adjoint_solver="sweeps",
                 on_failure="keep", generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    r = ref.SATNet(n, m, aux=aux, max_iter=3000, eps=1e-14, prox_lam=0.0)
    with torch.no_grad():
        r.S.copy_(net.S.t())
    g = torch.Generator().manual_seed(1)
    z = (torch.rand(B, n, generator=g) > 0.5).float()
    mask = torch.rand(B, n, generator=g) < 0.5
    w = torch.randn(B, n, generator=g)
    torch.manual_seed(0)
    a = r(z.clone(), mask.int())
    (a * w).sum().backward()
    sol = net.solve(z, mask)
    (sol.value * w).sum().backward()
    err = {"value_max_abs": float((a.detach() - sol.value.detach()).abs().max()),
           "dS_rel": float((r.S.grad.t() - net.S.grad).norm() / net.S.grad.norm())}
    if not sol.ok or err["value_max_abs"] > 1e-4 or err["dS_rel"] > 1e-3:
        raise SystemExit(f"gridlearn and the reference disagree at convergence: {err}")
    return err


def inputs(task: str, B: int, seed: int = 123):
    if task == "sudoku":
        ds = generate_dataset(B, seed=seed)
        return (torch.from_numpy(one_hot(ds.puzzles)), torch.from_numpy(input_mask(ds.puzzles)),
                torch.from_numpy(one_hot(ds.solutions)))
    g = torch.Generator().manual_seed(seed)
    bits = PARITY["n"] - 1
    x = (torch.rand(B, bits, generator=g) > 0.5).float()
    y = torch.cat([x, (x.sum(dim=1, keepdim=True) % 2)], dim=1)
    z = torch.cat([x, torch.zeros(B, 1)], dim=1)
    mask = torch.zeros(B, bits + 1, dtype=torch.bool)
    mask[:, :bits] = True
    return z, mask, y


def make_peer(name, task, ref):
    """A closure doing one forward + backward pass of peer ``name``; returns (output, Solution or None)."""
    cfg = SUDOKU if task == "sudoku" else PARITY
    S0 = SATNet(cfg["n"], cfg["m"], aux=cfg["aux"], generator=torch.Generator().manual_seed(0)).S.detach()
    if name == "reference":
        layer = ref.SATNet(cfg["n"], cfg["m"], aux=cfg["aux"], max_iter=40, eps=1e-4)
        with torch.no_grad():
            layer.S.copy_(S0.t())

        def solve(z, mask):
            return layer(z, mask.int()), None
    else:
        k = 32 if name == "numba_k32" else None
        backend = "torch" if name == "torch" else "numba"
        solver = "sweeps" if name == "numba_sweeps" else "cg"
        layer = SATNet(cfg["n"], cfg["m"], aux=cfg["aux"], max_iter=40, eps=1e-4, k=k, backend=backend, seed=0,
                       adjoint_solver=solver)
        with torch.no_grad():
            layer.S.copy_(S0)

        def solve(z, mask):
            sol = layer.solve(z, mask)
            return sol.value, sol
    return layer, solve


def time_case(peers, task, z, mask, y, ref, repeats):
    """Peers interleaved within each repeat (A B C A B C), so load changes hit them alike."""
    made = {p: make_peer(p, task, ref) for p in peers}
    rows = {p: {"s_all": [], "load_1min_before": [],
                "k": 32 if p in ("reference", "numba_k32") else made[p][0].k} for p in peers}
    for _ in range(repeats):
        for p, (layer, solve) in made.items():
            layer.zero_grad()
            rows[p]["load_1min_before"].append(load_average())
            t0 = time.perf_counter()
            out, sol = solve(z, mask)
            torch.nn.functional.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), y).backward()
            rows[p]["s_all"].append(time.perf_counter() - t0)
            if not (torch.isfinite(out).all() and torch.isfinite(layer.S.grad).all()):
                raise SystemExit(f"{p}: non-finite output or gradient")
            if sol is not None:
                rows[p].update(forward_converged=float(sol.converged.float().mean()),
                               gradient_given=float(sol.extras["adjoint"]["gradient_given"].float().mean()),
                               mean_forward_sweeps=float(sol.steps.float().mean()),
                               mean_backward_iterations=float(sol.extras["adjoint"]["steps"].float().mean()))
    for r in rows.values():
        r["s_min"] = min(r["s_all"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default=None, help="a locuslab/SATNet checkout (built with --build-reference)")
    ap.add_argument("--build-reference", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", default="numba_k32,numba,numba_sweeps",
                    help="gridlearn peers to time beside the reference (comma-separated)")
    ap.add_argument("--torch-cases", default="parity_b100_t1",
                    help="cases that also time the pure-torch path (comma-separated, or 'none')")
    ap.add_argument("--cases", default=",".join(c[0] for c in CASES))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    ref = load_reference(args.reference, args.build_reference)
    torch.set_num_threads(1)
    checks = {"numba_vs_torch_float64": check_backends_agree()}
    if ref is not None:
        checks["gridlearn_vs_reference_converged"] = check_reference_agrees(ref)
    # compile the kernels (float32; serial and parallel) before any time is taken
    z, mask, y = inputs("parity", 4)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        SATNet(PARITY["n"], PARITY["m"], aux=PARITY["aux"], seed=0).solve(z, mask).value.sum().backward()
    rows = {}
    ours = [p for p in args.peers.split(",") if p]
    for case, task, B, threads in CASES:
        if case not in args.cases.split(","):
            continue
        torch.set_num_threads(threads)
        ref_threads = set_reference_threads(threads) if ref is not None else None
        if ref is not None and ref_threads != threads:
            raise SystemExit(f"{case}: the reference's OpenMP runs {ref_threads} threads, not {threads}")
        z, mask, y = inputs(task, B)
        peers = (["reference"] if ref is not None else []) + ours
        if case in args.torch_cases.split(","):
            peers.append("torch")
        rows[case] = time_case(peers, task, z, mask, y, ref, args.repeats)
        rows[case]["threads"] = {"torch_and_numba": torch.get_num_threads(), "reference_openmp": ref_threads}
        line = "  ".join(f"{p} {r['s_min']:.4g} s" for p, r in rows[case].items() if p != "threads")
        print(f"{case}: {line}  (load {load_average()})", flush=True)
        if ref is not None:
            for p in ours:
                # this peer's time as a share of the reference's: the target is <= 0.5
                rows[case][p]["this_over_reference"] = rows[case][p]["s_min"] / rows[case]["reference"]["s_min"]
                rows[case][p]["reference_over_this"] = rows[case]["reference"]["s_min"] / rows[case][p]["s_min"]
    result = {
        "what": "SATNet forward + backward (BCE loss) per batch, CPU, seconds (min over repeats)",
        "settings": {"max_iter": 40, "eps": 1e-4, "dtype": "float32", "sudoku": SUDOKU, "parity": PARITY,
                     "gridlearn_adjoint_damping": 0.05, "reference_prox_lam": 1e-2},
        "checks": checks,
        "cases": rows,
        "note": "shared 2-core machine with other jobs running: compare peers within a case (same run, peers "
                "taking turns in each repeat), not absolute times; numba threads follow torch.set_num_threads, "
                "the reference's OpenMP threads are set on its runtime (set_reference_threads)",
        "command": " ".join(["python", "benchmarks/bench_satnet.py"] + sys.argv[1:]),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(checks), f"\nwrote {out}")


if __name__ == "__main__":
    main()
