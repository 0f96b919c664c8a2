"""The handful of array operations the AC formulation is written against.

`ACPolar` (and the branch-limit strategies) use only ``+ - * /``, indexing along the last
axis (``x[..., idx]``: gather by branch end) and the operations here. numpy arrays, torch
tensors (any leading batch dimensions, differentiable, torch.func-transformable) and numpy
*object* arrays of Pyomo variables all satisfy that, so one formula serves the Pyomo model
(symbolic expressions), the direct Ipopt callbacks (numpy) and the KKT backward and a
batched interior point (torch). `ops_for` picks the namespace from the variables' type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class ArrayOps:
    """``cos``, ``sin``, ``sqrt``; ``scatter_add(values, idx, n)``: sums ``values[..., k]``
    into slot ``idx[k]`` of a new ``(..., n)`` array; ``cat(parts)``: join along the last axis (leading dimensions broadcast);
    ``index(idx, like)``: an index array usable on ``like``."""

    name: str
    cos: Callable
    sin: Callable
    sqrt: Callable
    scatter_add: Callable
    cat: Callable
    index: Callable


def _np_scatter_add(values, idx, n):
    if values.ndim == 1:  # the Ipopt callbacks' case: bincount is the fastest numpy scatter
        return np.bincount(idx, values, n)
    out = np.zeros(values.shape[:-1] + (n,), dtype=values.dtype)
    np.add.at(out, (Ellipsis, idx), values)
    return out


def _torch_scatter_add(values, idx, n):
    out = torch.zeros(values.shape[:-1] + (n,), dtype=values.dtype, device=values.device)
    return out.index_add(-1, torch.as_tensor(idx, device=values.device), values)


def _object_scatter_add(values, idx, n):
    terms: list[list[Any]] = [[] for _ in range(n)]
    for k, i in enumerate(np.asarray(idx).tolist()):
        terms[i].append(values[k])
    out = np.empty(n, dtype=object)
    for i, t in enumerate(terms):
        out[i] = sum(t)  # 0 for a slot nothing maps to, as a Python sum of Pyomo terms
    return out


def _np_cat(parts):
    try:  # the common case (one scenario, or a batch throughout) needs no broadcasting
        return np.concatenate(parts, axis=-1)
    except ValueError:
        pass
    lead = np.broadcast_shapes(*(np.shape(p)[:-1] for p in parts))
    return np.concatenate([np.broadcast_to(p, lead + np.shape(p)[-1:]) for p in parts], axis=-1)


def _torch_cat(parts):
    lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p if p.shape[:-1] == lead else p.expand(lead + p.shape[-1:]) for p in parts], dim=-1)


def _object_cat(parts):
    return np.concatenate([np.asarray(p, dtype=object) for p in parts])


NUMPY = ArrayOps("numpy", np.cos, np.sin, np.sqrt, _np_scatter_add, _np_cat, lambda idx, like: np.asarray(idx, dtype=np.int64))
TORCH = ArrayOps("torch", torch.cos, torch.sin, torch.sqrt, _torch_scatter_add,
                 _torch_cat,
                 lambda idx, like: torch.as_tensor(idx, dtype=torch.long, device=like.device))


def _pyomo_ops() -> ArrayOps:
    import pyomo.environ as pyo

    return ArrayOps("pyomo", np.frompyfunc(pyo.cos, 1, 1), np.frompyfunc(pyo.sin, 1, 1), np.frompyfunc(pyo.sqrt, 1, 1),
                    _object_scatter_add, _object_cat, lambda idx, like: np.asarray(idx, dtype=np.int64))


_PYOMO: list[ArrayOps] = []


def ops_for(x) -> ArrayOps:
    """The namespace of ``x``: torch for a tensor, Pyomo for a numpy object array, else numpy."""
    if isinstance(x, torch.Tensor):
        return TORCH
    if isinstance(x, np.ndarray) and x.dtype == object:
        if not _PYOMO:
            _PYOMO.append(_pyomo_ops())  # pyomo is imported only when a Pyomo model is built
        return _PYOMO[0]
    return NUMPY


def object_array(items) -> np.ndarray:
    """A 1-D numpy object array of ``items`` (Pyomo variables), without numpy probing them as sequences."""
    items = list(items)
    out = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        out[i] = v
    return out
