"""Where benchmarks write: one JSON per benchmark in benchmarks/results/, with the environment."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(filename: str, benchmark: str, peer: str, note: str, **fields: Any) -> Path:
    """Write ``{benchmark, peer, torch, platform, threads, note, **fields}`` to results/filename."""
    out = {"benchmark": benchmark, "peer": peer, "torch": torch.__version__, "platform": platform.platform(),
           "threads": torch.get_num_threads(), "note": note, **fields}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / filename
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return path


def best_of(fn, reps: int) -> tuple[float, Any]:
    """(fastest wall time of ``reps`` calls of ``fn``, the last call's result)."""
    import time

    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
