"""`map_chunks`: map a function over chunks of work, locally or on Ray, results in order.

A small executor interface, no scheduler of our own:

- `SerialExecutor`: in this process (debugging, tiny jobs, already-parallel torch code);
- `LocalPool` (the default): ``concurrent.futures.ProcessPoolExecutor`` with the
  ``spawn`` context (torch and ``fork`` do not mix: a forked child inherits the parent's
  OpenMP/BLAS thread pools in an undefined state); workers default to the CPU count;
- `RayExecutor` (``executor="ray"``): connects to ``$RAY_ADDRESS`` when set, otherwise
  starts a local Ray instance with ``num_cpus``.

Every backend returns results in chunk order, shows a tqdm progress bar when asked, and
turns an exception raised inside a chunk into `ChunkFailure` naming the chunk (its index
and a short repr) with the worker's traceback text. The mapped function must be
importable by module path (a top-level function), since workers run in other processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
import traceback
from typing import Any, Callable, Iterable, Protocol, Sequence

from gridlearn.errors import ConfigError, GridlearnError

log = logging.getLogger(__name__)

_START_METHODS = ("spawn", "forkserver")


class ChunkFailure(GridlearnError, RuntimeError):
    """A chunk raised in a worker. ``index``: its position; ``chunk``: the chunk itself;
    ``cause_type`` / ``worker_traceback``: what was raised there, as text."""

    def __init__(self, index: int, chunk: Any, cause_type: str, message: str, worker_traceback: str = ""):
        self.index = index
        self.chunk = chunk
        self.cause_type = cause_type
        self.worker_traceback = worker_traceback
        shown = repr(chunk)
        shown = shown if len(shown) <= 200 else shown[:197] + "..."
        super().__init__(f"chunk {index} ({shown}) raised {cause_type}: {message}")


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], chunks: Sequence[Any], *, desc: str = "") -> list[Any]: ...


def _call(fn: Callable[[Any], Any], index: int, chunk: Any) -> tuple[bool, Any]:
    """Run one chunk; an exception comes back as data so the parent can name the chunk.

    Why not let the exception propagate: some exception types do not pickle, and the
    parent would then see a pickling error instead of the user's error.
    """
    try:
        return True, fn(chunk)
    except Exception as exc:  # noqa: BLE001 - carried back and re-raised as ChunkFailure
        return False, (type(exc).__name__, str(exc), traceback.format_exc())


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc or "chunks", disable=not enabled, leave=False)


def _unwrap(results: list[tuple[bool, Any]], chunks: Sequence[Any]) -> list[Any]:
    out = []
    for i, (ok, value) in enumerate(results):
        if not ok:
            name, msg, tb = value
            raise ChunkFailure(i, chunks[i], name, msg, tb)
        out.append(value)
    return out


class SerialExecutor:
    """Runs the chunks one after another in this process."""

    def __init__(self, *, progress: bool = False):
        self.progress = progress

    def map(self, fn: Callable[[Any], Any], chunks: Sequence[Any], *, desc: str = "") -> list[Any]:
        chunks = list(chunks)
        results = []
        with _progress(len(chunks), desc, self.progress) as bar:
            for i, chunk in enumerate(chunks):
                results.append(_call(fn, i, chunk))
                bar.update(1)
                if not results[-1][0]:
                    break  # stop at the first failure, as the pools do
        return _unwrap(results, chunks)

    def __repr__(self) -> str:
        return "SerialExecutor()"


class LocalPool:
    """A local process pool (``spawn`` or ``forkserver``). Use it as a context manager to
    keep the workers alive across several ``map`` calls; otherwise each call starts and
    stops its own pool (worker start-up imports torch: about a second per worker)."""

    def __init__(self, max_workers: int | None = None, *, start_method: str = "spawn", progress: bool = False):
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ConfigError(f"max_workers must be a positive int or None, got {max_workers!r}")
        if start_method not in _START_METHODS:
            raise ConfigError(f"start_method must be one of {_START_METHODS} (fork is unsafe with torch), got {start_method!r}")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.start_method = start_method
        self.progress = progress
        self._pool: cf.ProcessPoolExecutor | None = None

    def _make_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.max_workers, mp_context=multiprocessing.get_context(self.start_method))

    def __enter__(self) -> "LocalPool":
        self._pool = self._make_pool()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[[Any], Any], chunks: Sequence[Any], *, desc: str = "") -> list[Any]:
        chunks = list(chunks)
        own = self._pool is None
        pool = self._make_pool() if own else self._pool
        try:
            futures = [pool.submit(_call, fn, i, c) for i, c in enumerate(chunks)]
            index = {f: i for i, f in enumerate(futures)}
            results: list[Any] = [None] * len(chunks)
            with _progress(len(chunks), desc, self.progress) as bar:
                for fut in cf.as_completed(futures):
                    i = index[fut]
                    results[i] = fut.result()
                    bar.update(1)
                    if not results[i][0]:
                        for other in futures:
                            other.cancel()
                        name, msg, tb = results[i][1]
                        raise ChunkFailure(i, chunks[i], name, msg, tb)
            return _unwrap(results, chunks)
        finally:
            if own:
                pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"LocalPool(max_workers={self.max_workers}, start_method={self.start_method!r})"


class RayExecutor:
    """Ray tasks, one per chunk. Connects to ``address`` (default ``$RAY_ADDRESS``) or,
    when neither is set, starts a local instance with ``num_cpus`` (default: CPU count).
    An instance started here is shut down by `shutdown` (or at interpreter exit)."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, progress: bool = False):
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
            raise ConfigError(f"num_cpus must be a positive int or None, got {num_cpus!r}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.progress = progress
        self.started_here = False

    def _ensure(self):
        try:
            import ray
        except ImportError as exc:
            from gridlearn.errors import SolverUnavailable

            raise SolverUnavailable("executor='ray' needs the ray package: pip install 'gridlearn[ray]'") from exc
        if not ray.is_initialized():
            if self.address:
                log.info("connecting to Ray at %s", self.address)
                ray.init(address=self.address, log_to_driver=False)
            else:
                # Workers must import the mapped function by module path: give them our sys.path.
                path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
                ray.init(
                    num_cpus=self.num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
                self.started_here = True
        return ray

    def shutdown(self) -> None:
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False

    def map(self, fn: Callable[[Any], Any], chunks: Sequence[Any], *, desc: str = "") -> list[Any]:
        ray = self._ensure()
        chunks = list(chunks)
        remote = ray.remote(_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, i, c) for i, c in enumerate(chunks)]
        index = {r: i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(chunks)
        pending = list(refs)
        with _progress(len(chunks), desc, self.progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    results[i] = ray.get(ref)
                    bar.update(1)
                    if not results[i][0]:
                        for other in pending:
                            ray.cancel(other)
                        name, msg, tb = results[i][1]
                        raise ChunkFailure(i, chunks[i], name, msg, tb)
        return _unwrap(results, chunks)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus})"


def get_executor(spec: "str | Executor | None" = None, *, max_workers: int | None = None, progress: bool = False) -> Executor:
    """``None``/``"local"`` -> `LocalPool`; ``"serial"`` -> `SerialExecutor`; ``"ray"`` ->
    `RayExecutor` (``max_workers`` becomes ``num_cpus``); an object with ``map`` is returned as is."""
    if spec is None or spec == "local":
        return LocalPool(max_workers, progress=progress)
    if spec == "serial":
        return SerialExecutor(progress=progress)
    if spec == "ray":
        return RayExecutor(num_cpus=max_workers, progress=progress)
    if hasattr(spec, "map") and callable(spec.map):
        return spec  # type: ignore[return-value]
    raise ConfigError(f"executor must be None, 'local', 'serial', 'ray' or an object with .map, got {spec!r}")


def map_chunks(fn: Callable[[Any], Any], chunks: Iterable[Any], *, executor: "str | Executor | None" = None,
               desc: str = "", progress: bool = False) -> list[Any]:
    """``[fn(c) for c in chunks]`` on ``executor`` (see `get_executor`), in order."""
    return get_executor(executor, progress=progress).map(fn, list(chunks), desc=desc)


__all__ = ["ChunkFailure", "Executor", "LocalPool", "RayExecutor", "SerialExecutor", "get_executor", "map_chunks"]
