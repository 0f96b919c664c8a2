"""gridlearn.parallel: serial, local process pool and Ray give the same ordered results;
an exception raised in a chunk surfaces as ChunkFailure naming that chunk."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from gridlearn.errors import ConfigError, GridlearnError
from gridlearn.parallel import ChunkFailure, LocalPool, RayExecutor, SerialExecutor, get_executor, map_chunks


def _solve_chunk(seed: int) -> np.ndarray:
    """Some torch work whose result depends on the chunk: a seeded linear solve."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64) + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    return torch.linalg.solve(a, b).numpy()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad chunk value {x}")
    return x * x


@pytest.fixture(scope="module")
def pool():
    with LocalPool(2) as ex:
        yield ex


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    ex = RayExecutor(num_cpus=2)
    ex._ensure()  # one start-up (10-20 s) for the whole module
    yield ex
    ex.shutdown()


CHUNKS = [5, 1, 4, 2, 9, 0, 7]


@pytest.mark.slow  # spawns the pool's workers and Ray's (about 20 s on 2 cores)
def test_serial_pool_and_ray_agree_and_keep_order(pool, ray_executor):
    serial = SerialExecutor().map(_solve_chunk, CHUNKS)
    expected = [_solve_chunk(c) for c in CHUNKS]
    for backend in (pool, ray_executor):
        got = backend.map(_solve_chunk, CHUNKS)
        assert len(got) == len(CHUNKS)
        for g, s, e in zip(got, serial, expected):
            np.testing.assert_array_equal(g, s)
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("backend", ["serial", "pool", "ray"])
def test_exception_surfaces_with_its_chunk(backend, pool, ray_executor):
    ex = {"serial": SerialExecutor(), "pool": pool, "ray": ray_executor}[backend]
    with pytest.raises(ChunkFailure, match=r"chunk 2 \(3\) raised ValueError: bad chunk value 3") as info:
        ex.map(_fail_on_three, [1, 2, 3, 4])
    assert info.value.index == 2 and info.value.chunk == 3 and info.value.cause_type == "ValueError"
    assert "_fail_on_three" in info.value.worker_traceback
    assert isinstance(info.value, GridlearnError)


@pytest.mark.slow
def test_enumeration_identical_on_pool_and_ray(case30_net, pool, ray_executor):
    from gridlearn.scopf import enumerate_contingencies

    kw = dict(k=2, elements="branches", chunk_size=150)
    serial = enumerate_contingencies(case30_net, None, executor="serial", **kw)
    for ex in (pool, ray_executor):
        got = enumerate_contingencies(case30_net, None, executor=ex, **kw)
        pd.testing.assert_frame_equal(got, serial)


def test_get_executor_and_map_chunks():
    assert isinstance(get_executor(None), LocalPool)
    assert isinstance(get_executor("ray"), RayExecutor)
    assert map_chunks(_fail_on_three, [1, 2], executor="serial") == [1, 4]
    with pytest.raises(ConfigError, match="executor must be"):
        get_executor("dask")
    with pytest.raises(ConfigError, match="fork"):
        LocalPool(2, start_method="fork")


@pytest.fixture(scope="module")
def case30_net():
    from gridlearn.grid import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_case("case30")
