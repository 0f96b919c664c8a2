"""AGC pick-up: who replaces the output of the units an outage removes (written once).

A unit's output and limits scale with keep_g = 1 - a_g (a_g = 1: out). The power no
longer produced, plus any base imbalance, is picked up by the remaining units in
proportion to participation factors w (default pmax), as AGC would:

    p'_g = keep_g p_g + s_g (P_D - sum_j keep_j p_j),   s_g = w_g keep_g / sum_j w_j keep_j

with P_D = sum_i (pd_i + gs_i) the DC load. The same rule in its three uses: the DC
model's post-contingency outputs (`picked_up`), the preventive SC-OPF's affine map of the
dispatch (`pickup_affine`: p' = R p + r), and the AC power flow's distributed slack,
which shares the imbalance (lost output and the change in losses) by the unnormalised
weights w_g keep_g (`pickup_weights`). The MILP certifier states the same rule as
constraints (`certificate`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pickup_weights(participation: Tensor, keep: Tensor, floor: float = 0.0) -> Tensor:
    """w_g keep_g (..., n_gen). ``floor`` > 0 keeps every unit's weight above w_g floor
    (a relaxed attack that removes every participating unit would leave no one to pick up)."""
    return participation * (keep.clamp_min(floor) if floor > 0 else keep)


def picked_up(participation: Tensor, pg_mw: Tensor, keep: Tensor, load_mw: Tensor) -> tuple[Tensor, Tensor]:
    """(p' (..., n_gen), the remaining participation sum_j w_j keep_j (...)) for outputs
    pg_mw (n_gen,) and keep (..., n_gen)."""
    w = pickup_weights(participation, keep)
    w_sum = w.sum(-1, keepdim=True)
    base = keep * pg_mw
    return base + w / w_sum.clamp_min(1e-12) * (load_mw - base.sum(-1, keepdim=True)), w_sum.squeeze(-1)


def pickup_affine(participation: Tensor, keep: Tensor, load_mw: Tensor) -> tuple[Tensor, Tensor]:
    """p' = R p + r as (R (..., n_gen, n_gen), r (..., n_gen)): the rule above, affine in p."""
    w = pickup_weights(participation, keep)
    s = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.diag_embed(keep) - s.unsqueeze(-1) * keep.unsqueeze(-2), s * load_mw


__all__ = ["pickup_weights", "picked_up", "pickup_affine"]
