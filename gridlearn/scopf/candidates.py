"""Topology-aware candidate outage sets: the near-cuts a gradient cannot see.

Why: removing a set that nearly islands part of the grid (a corridor of parallel lines
feeding a load pocket) gives almost no overload until it is removed completely, so the
relaxation's gradient ranks its members last, and the first member alone does nothing
(the N-1 screen scores it 0). The LODF sees it directly. After the branch set S is out
(Woodbury, as `dc.set_flows`; H = PTDF A^T),

    H^S = H + H_{:,S} (I - H_SS)^-1 H_{S,:},   f^S = f + H_{:,S} (I - H_SS)^-1 f_S,
    L^S_{mc} = H^S_{mc} / (1 - H^S_cc)      (share of c's flow moved onto m when c goes too)

and the priority of adding c to S is the largest relative load it moves onto one line,

    pi(S, c) = |f^S_c| * max_{m not in S + c} |L^S_{mc}| / rate_m.

1 - H^S_cc -> 0 when c becomes a bridge after S, and a weak parallel path (small rating)
takes the whole flow: both raise pi. A long ring (L ~ 1 onto strong lines) does not.
`near_cut_sets` grows sets by a beam search on pi: each level scores every
(set, branch) extension, and keeps the ``beam`` best; the first level's priority of a
branch a is its best pair pi(a, c) (look-ahead: a corridor line scores nothing alone).
It needs the intact flows (one power flow) and O(beam n^2 k^2) LODF arithmetic (the
"screen terms", reported apart from power flows); no set is scored here: the attack
scores the returned sets exactly. Sets that island (1 - H^S_cc ~ 0) are not extended:
the N-1 screen and the polish reach bridges and generator-only cuts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gridlearn.scopf.dc import DCContingencyModel

_CUT = 1e-8  # 1 - H^S_cc below this: c is a bridge after S (the set islands)
_CHUNK = 64  # sets per block of the (sets, n, n) LODF arithmetic: bounds memory


def _priority(h: np.ndarray, f: np.ndarray, inv_rate: np.ndarray, sets: list[tuple[int, ...]]) -> np.ndarray:
    """pi(S, c) (len(sets), n) for every set S and branch c (NaN where c in S or S + c islands)."""
    n = h.shape[0]
    out = np.full((len(sets), n), np.nan)
    for lo in range(0, len(sets), _CHUNK):
        block = sets[lo:lo + _CHUNK]
        j = len(block[0])
        if j == 0:
            hs, fs = h[None], f[None]
            mask = np.zeros((1, n), dtype=bool)
        else:
            idx = np.asarray(block, dtype=np.int64)  # (P, j)
            a = np.eye(j)[None] - h[idx[:, :, None], idx[:, None, :]]
            islands = np.linalg.svd(a, compute_uv=False)[:, -1] < _CUT  # S itself islands
            a[islands] = np.eye(j)
            h_ms = h[:, idx].transpose(1, 0, 2)  # (P, n, j)
            sol = np.linalg.solve(a, np.concatenate([h[idx, :], f[idx][:, :, None]], axis=2))  # (P, j, n + 1)
            hs = h[None] + h_ms @ sol[:, :, :n]  # (P, n, n)
            fs = f[None] + (h_ms @ sol[:, :, n:])[..., 0]
            mask = np.zeros((len(block), n), dtype=bool)
            np.put_along_axis(mask, idx, True, axis=1)
        gap = 1.0 - np.diagonal(hs, axis1=1, axis2=2)  # (P, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            lodf = np.abs(hs) / gap[:, None, :]  # [p, m, c]
        lodf[:, np.arange(n), np.arange(n)] = 0.0  # c's own flow goes to zero
        lodf[mask[:, :, None].repeat(n, axis=2)] = 0.0  # lines already out carry nothing
        moved = np.abs(fs) * np.nanmax(np.nan_to_num(lodf, nan=0.0, posinf=0.0) * inv_rate[None, :, None], axis=1)
        moved[(gap < _CUT) | mask] = np.nan
        if j:
            moved[islands] = np.nan
        out[lo:lo + len(block)] = moved
    return out


def near_cut_sets(model: DCContingencyModel, pg_mw: Tensor, k: int, beam: int | None = None,
                  limit: int = 256) -> list[tuple[int, ...]]:
    """Up to ``limit`` branch k-sets (indices into ``model.space``), highest priority first.

    ``beam``: sets kept per level, default max(128, 2 n_branch). Why that wide: a corridor
    of m parallel paths of which k are cut (PGLib case24's lines 15-17 between the 230 kV
    and 138 kV halves) has pairs of only middling priority (each removal spreads over the
    paths left); a beam of 32 dropped them on case24 and the attack missed the worst N-3
    set there; 128 puts the triple first. The cost is O(beam n^2 k^2) LODF arithmetic.

    On case14 the pairs with line 0 (one of the two lines out of the slack bus) come first.
    case9 is a six-bus ring with a radial line to each generator: once one ring line is out
    every branch is a bridge, so no set is extended and none is returned:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.scopf import DCContingencyModel, ElementSpace
    >>> def pairs(case):
    ...     net = load_case(case)
    ...     model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    ...     return near_cut_sets(model, model.base_dispatch(), 2, limit=3)
    >>> pairs("case14"), pairs("case9")
    ([(0, 2), (0, 3), (0, 4)], [])
    """
    sp = model.space
    nb = sp.n_attack_branches
    if nb < k or limit < 1:
        return []
    beam = max(128, 2 * nb) if beam is None else beam
    pos = np.asarray(sp.branch_pos, dtype=np.int64)
    h = model.h.detach().cpu().numpy()[np.ix_(pos, pos)]
    rate = model.network.branch.rate_a_mva.detach().cpu().numpy()[pos]
    inv_rate = np.where(np.isfinite(rate) & (rate > 0), 1.0 / np.where(rate > 0, rate, 1.0), 0.0)
    with torch.no_grad():
        f = model.base_flows(pg_mw).detach().cpu().numpy()[pos]
    pair = np.nan_to_num(_priority(h, f, inv_rate, [(a,) for a in range(nb)]), nan=-1.0)  # pi({a}, c)
    pair = np.maximum(pair, pair.T)  # a pair's priority in either order
    if k == 1:
        score = pair.max(axis=1)
        return [(int(a),) for a in np.argsort(-score, kind="stable")[:limit] if score[a] >= 0]
    iu = np.triu_indices(nb, 1)
    order = np.argsort(-pair[iu], kind="stable")
    frontier = [(int(iu[0][o]), int(iu[1][o])) for o in order[:beam if k > 2 else limit] if pair[iu][o] >= 0]
    for level in range(2, k):
        x = np.nan_to_num(_priority(h, f, inv_rate, frontier), nan=-1.0)
        keep = beam if level < k - 1 else limit
        flat = x.ravel()
        nxt: dict[tuple[int, ...], None] = {}
        for o in np.argsort(-flat, kind="stable"):
            if flat[o] < 0 or len(nxt) >= keep:
                break
            p, c = divmod(int(o), nb)
            nxt[tuple(sorted(frontier[p] + (c,)))] = None
        frontier = list(nxt)
    return frontier


__all__ = ["near_cut_sets"]
