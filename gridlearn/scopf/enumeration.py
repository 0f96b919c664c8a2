"""`enumerate_contingencies`: every N-k outage set, scored exactly, chunked over an executor.

DC: each chunk of outage sets is scored by `DCContingencyModel.score_sets`, i.e. one
PTDF product for the generator redispatch and the multi-outage LODF (Woodbury) update
for the branches: exact for the DC model whenever the set does not island; islanding
sets are found by the rank test plus graph check and reported, never scored.
AC: every set is a Newton power flow of the modified network (see `scopf.ac`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.grid.network import Network
from gridlearn.parallel import Executor, SerialExecutor, get_executor
from gridlearn.scopf.common import contingency_model, members_tensor, result_table, setup

log = logging.getLogger(__name__)


def _score_chunk(payload: tuple[Any, Tensor, np.ndarray]) -> tuple[np.ndarray, list[str], np.ndarray]:
    model, pg, members = payload  # model: a contingency model (`common.contingency_model`)
    # One thread per worker: the pool already fills the cores.
    torch.set_num_threads(1)
    with torch.no_grad():
        return model.score_sets(pg, members_tensor(members, pg.device))


def enumerate_contingencies(
    network: Network,
    dispatch: Any = None,
    k: int = 1,
    physics: str = "dc",
    *,
    elements: str = "all",
    executor: "str | Executor | None" = "serial",
    chunk_size: int = 4096,
    participation: Tensor | None = None,
    progress: bool = False,
    sets: "list[tuple[int, ...]] | None" = None,
) -> pd.DataFrame:
    """Score every set of exactly ``k`` attackable elements (or only ``sets``: k-tuples of
    indices into the element space, as `sample_contingencies` passes).

    Returns a DataFrame best first with columns ``outage`` (tuple of labels),
    ``violation_mw`` (exact; NaN when not scored), ``status`` ("ok", "islanded",
    "no_generation", "not_converged") and ``load_lost_mw`` (islanded sets). ``df.attrs``
    holds ``n_power_flows`` (sets scored) and ``wall_time_s``. ``executor``: "serial"
    (default), "local" (process pool), "ray", or an executor object (`gridlearn.parallel`).

    case9 with its ratings at 60 %: every single line outage, worst first.

    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> df = enumerate_contingencies(net, k=1, elements="branches")   # at the DC-OPF dispatch
    >>> df["outage"][0], round(float(df["violation_mw"][0]), 2), len(df), df.attrs["n_power_flows"]
    ((('line', 7),), 38.44, 9, 9)
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive int, got {chunk_size!r}")
    t0 = time.perf_counter()
    space, pg, model = setup(network, dispatch, k, physics, elements, participation)
    if sets is not None:
        sets = [tuple(int(i) for i in s) for s in sets]
        bad = [s for s in sets if len(s) != k or len(set(s)) != k or min(s) < 0 or max(s) >= space.size]
        if bad:
            raise ConfigError(f"sets must be k = {k} distinct indices in [0, {space.size}); got e.g. {bad[0]}")
    n_sets = math.comb(space.size, k) if sets is None else len(sets)
    log.info("enumerating %d N-%d sets of %d elements (%s)", n_sets, k, space.size, physics)
    model = contingency_model(network, space, physics, participation, model)
    chunk_size = min(chunk_size, model.score_batch)  # Newton batches are dense: keep memory modest
    fn = _score_chunk
    combos = itertools.combinations(range(space.size), k) if sets is None else iter(sets)
    chunks = []
    while True:
        block = list(itertools.islice(combos, chunk_size))
        if not block:
            break
        chunks.append((model, pg.detach(), np.asarray(block, dtype=np.int64)))
    ex = SerialExecutor(progress=progress) if len(chunks) == 1 else get_executor(executor, progress=progress)
    threads = torch.get_num_threads()
    try:
        results = ex.map(fn, chunks, desc=f"N-{k} {physics}")
    finally:
        torch.set_num_threads(threads)  # the serial executor runs the workers' set_num_threads here
    members = np.concatenate([c[2] for c in chunks])
    violation = np.concatenate([r[0] for r in results])
    status = [s for r in results for s in r[1]]
    lost = np.concatenate([r[2] for r in results])
    df = result_table(space, members.tolist(), violation, status, lost)
    df.attrs["n_power_flows"] = int(n_sets)
    df.attrs["wall_time_s"] = time.perf_counter() - t0
    return df


def sample_contingencies(
    network: Network,
    dispatch: Any = None,
    k: int = 1,
    physics: str = "dc",
    *,
    n_samples: int,
    seed: int = 0,
    elements: str = "all",
    executor: "str | Executor | None" = "serial",
    chunk_size: int = 4096,
    participation: Tensor | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score ``n_samples`` distinct k-sets drawn uniformly at random (without replacement
    among sets): the reference where enumerating all C(n, k) sets is too costly (AC N-3).
    Same table and attrs as `enumerate_contingencies`; ``attrs["n_sets_total"]`` = C(n, k)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive int, got {n_samples!r}")
    space, pg, _ = setup(network, dispatch, k, physics, elements, participation)
    total = math.comb(space.size, k)
    rng = np.random.default_rng(seed)
    picked: set[tuple[int, ...]] = set()
    want = min(n_samples, total)
    while len(picked) < want:
        draw = np.sort(np.argsort(rng.random((2 * (want - len(picked)), space.size)), axis=1)[:, :k], axis=1)
        for row in map(tuple, draw.tolist()):
            if len(picked) < want:
                picked.add(row)
    df = enumerate_contingencies(network, pg, k, physics, elements=elements, executor=executor,
                                 chunk_size=chunk_size, participation=participation, progress=progress,
                                 sets=sorted(picked))
    df.attrs["n_sets_total"] = total
    return df


__all__ = ["enumerate_contingencies", "sample_contingencies"]
