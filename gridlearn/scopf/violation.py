"""Total overload: the attacker's objective (smooth) and the ground-truth score (exact).

    V = sum_branches max(0, |S_l| - rate_l)                     (MW in DC, MVA in AC)
      + sum_gens [max(0, p_g - pmax_g) + max(0, pmin_g - p_g)]  (MW)
      + base_mva * sum_buses [max(0, v_i - vmax_i) + max(0, vmin_i - v_i)]   (AC only, p.u. x base MVA)

The smooth version replaces max(0, x) by the softplus tau * log(1 + exp(x / tau)) with
temperature tau in MW (or MVA); |S| enters as the two one-sided excesses S - rate and
-S - rate, so no |.| kink remains. It over-estimates V by at most tau * log 2 per term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _relu(x: Tensor, temperature: float) -> Tensor:
    return torch.clamp(x, min=0.0)


def _soft(x: Tensor, temperature: float) -> Tensor:
    return temperature * F.softplus(x / temperature)


def _overload(excess, flow_mw, rate_mw, pg_mw, pmin_mw, pmax_mw, temperature, vm_pu, vmin_pu, vmax_pu, base_mva):
    """V with max(0, x) replaced by ``excess(x, temperature)``. |S| - rate enters as the two
    one-sided excesses S - rate and -S - rate (equal to max(0, |S| - rate) for rate >= 0,
    which the network checks guarantee, and free of the |.| kink for the smooth version)."""
    v = (excess(flow_mw - rate_mw, temperature) + excess(-flow_mw - rate_mw, temperature)).sum(-1)
    v = v + (excess(pg_mw - pmax_mw, temperature) + excess(pmin_mw - pg_mw, temperature)).sum(-1)
    if vm_pu is not None:
        t_pu = temperature / base_mva
        v = v + base_mva * (excess(vm_pu - vmax_pu, t_pu) + excess(vmin_pu - vm_pu, t_pu)).sum(-1)
    return v


def exact_violation(
    flow_mw: Tensor,
    rate_mw: Tensor,
    pg_mw: Tensor,
    pmin_mw: Tensor,
    pmax_mw: Tensor,
    vm_pu: Tensor | None = None,
    vmin_pu: Tensor | None = None,
    vmax_pu: Tensor | None = None,
    base_mva: float = 100.0,
) -> Tensor:
    """V above, exactly. flow (..., n_branch) (a branch's larger end for AC), rate (n_branch,)
    or broadcastable, pg/pmin/pmax (..., n_gen), vm/vmin/vmax (..., n_bus). Returns (...).

    >>> import torch
    >>> flow, rate = torch.tensor([120.0, -90.0]), torch.tensor([100.0, 100.0])
    >>> float(exact_violation(flow, rate, torch.tensor([50.0]), torch.tensor([0.0]), torch.tensor([40.0])))
    30.0

    (20 MW over on the first line, none on the second, 10 MW above the unit's pmax.)
    """
    return _overload(_relu, flow_mw, rate_mw, pg_mw, pmin_mw, pmax_mw, 1.0, vm_pu, vmin_pu, vmax_pu, base_mva)


def smooth_violation(flow_mw: Tensor, rate_mw: Tensor, pg_mw: Tensor, pmin_mw: Tensor, pmax_mw: Tensor,
                     temperature: float, vm_pu: Tensor | None = None, vmin_pu: Tensor | None = None,
                     vmax_pu: Tensor | None = None, base_mva: float = 100.0) -> Tensor:
    """Softplus version of `exact_violation` at ``temperature`` (MW); same shapes.

    >>> import torch
    >>> flow, rate = torch.tensor([120.0, -90.0]), torch.tensor([100.0, 100.0])
    >>> v = smooth_violation(flow, rate, torch.tensor([50.0]), torch.tensor([0.0]), torch.tensor([40.0]), 1.0)
    >>> round(float(v), 3)   # the exact 30 MW, plus softplus's small share for the 10 MW margin
    30.0
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _overload(_soft, flow_mw, rate_mw, pg_mw, pmin_mw, pmax_mw, temperature, vm_pu, vmin_pu, vmax_pu, base_mva)


__all__ = ["exact_violation", "smooth_violation"]
