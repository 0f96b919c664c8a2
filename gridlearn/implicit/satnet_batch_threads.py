"""Run a batched CPU torch computation as independent batch chunks, one Python thread each.

Why (issue #21, measured on the shared 2-core machine, `benchmarks/results/satnet.json`):
SATNet's CG backward is about 25 iterations of some 20 torch ops each, about 500 parallel
regions of torch's OpenMP pool per backward. When the machine is loaded, each region waits
until both of its threads have a core, and the idle one spins meanwhile. Under a load average
of 6, the CG on 2 intra-op threads took 11.5 s wall and 5.8 s CPU, against 2.6 s wall and
1.3 s CPU on 1 thread. Two Python threads, each running half the batch with one intra-op
thread, took 2.7 s wall and 1.4 s CPU. Nothing synchronises the halves until the end. torch
releases the GIL inside its kernels, so on a quiet machine the two halves run side by side.

The chunks must be independent batch elements, as the CG's are (each element stops on its
own, `satnet_adjoint_cg`): the result is the same as one batched call, bit for bit in the
tests, because each element's arithmetic does not depend on its neighbours.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gridlearn-satnet")
        return _POOL


def chunk_bounds(batch: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, nearly equal ``[a, b)`` ranges covering ``range(batch)``."""
    chunks = max(1, min(chunks, batch))
    q, r = divmod(batch, chunks)
    out, a = [], 0
    for c in range(chunks):
        b = a + q + (1 if c < r else 0)
        out.append((a, b))
        a = b
    return out


def run_chunks(fn, batch: int, threads: int | None = None) -> list:
    """``[fn(a, b) for each chunk]``, the chunks run in parallel on ``threads`` threads.

    ``threads`` defaults to ``torch.get_num_threads()``; with 1 (or a batch of 1) ``fn`` runs
    once over the whole batch on the calling thread, as before. Inside the workers torch
    runs one intra-op thread. torch keeps the intra-op count per thread, plus one
    process-wide value that threads started later copy. That value is 1 while the workers
    run and is put back before this returns.
    """
    threads = torch.get_num_threads() if threads is None else threads
    if threads <= 1 or batch <= 1:
        return [fn(0, batch)]
    bounds = chunk_bounds(batch, threads)

    def one(a, b):
        torch.set_num_threads(1)
        return fn(a, b)

    outer = torch.get_num_threads()
    try:
        futures = [_pool(len(bounds)).submit(one, a, b) for a, b in bounds]
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(outer)


__all__ = ["chunk_bounds", "run_chunks"]
