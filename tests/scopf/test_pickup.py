"""The one AGC pick-up rule: outputs meet the load, the affine form reproduces it, and the
DC model, the SC-OPF's affine map and a hand computation agree."""

from __future__ import annotations

import pytest
import torch

from gridlearn.scopf.pickup import picked_up, pickup_affine, pickup_weights


def test_hand_computed_pick_up():
    # units of 100, 50, 30 MW with pmax weights 200, 100, 100; the first one trips:
    # its 100 MW go to the others 1:1, on top of the 20 MW the dispatch was short (200 MW load)
    w = torch.tensor([200.0, 100.0, 100.0], dtype=torch.float64)
    pg = torch.tensor([100.0, 50.0, 30.0], dtype=torch.float64)
    keep = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    p, w_left = picked_up(w, pg, keep, torch.tensor(200.0, dtype=torch.float64))
    assert p.tolist() == pytest.approx([0.0, 110.0, 90.0])
    assert float(w_left) == 200.0
    R, r = pickup_affine(w, keep, torch.tensor(200.0, dtype=torch.float64))
    assert (R @ pg + r).tolist() == pytest.approx(p.tolist())
    assert pickup_weights(w, keep, floor=0.1).tolist() == pytest.approx([20.0, 100.0, 100.0])


def test_batched_rule_meets_the_load_and_matches_its_affine_form():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(7, generator=g, dtype=torch.float64) + 0.1
    pg = 100 * torch.rand(7, generator=g, dtype=torch.float64)
    keep = (torch.rand(32, 7, generator=g, dtype=torch.float64) > 0.3).to(torch.float64)
    keep[:, 0] = 1.0  # every set keeps a participating unit
    load = torch.tensor(450.0, dtype=torch.float64)
    p, _ = picked_up(w, pg, keep, load)
    assert torch.allclose(p.sum(-1), load.expand(32))
    assert bool((p[keep == 0] == 0).all())
    R, r = pickup_affine(w, keep, load)
    assert torch.allclose((R @ pg.unsqueeze(-1)).squeeze(-1) + r, p)
