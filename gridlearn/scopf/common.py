"""Shared plumbing of attack, enumeration and defence: argument checks, result tables."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.grid.network import Network
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dispatch import as_dispatch, base_dispatch
from gridlearn.scopf.models import PHYSICS, check_physics, contingency_model
from gridlearn.scopf.outages import ElementSpace

COLUMNS = ["outage", "violation_mw", "status", "load_lost_mw"]


def setup(network: Network, dispatch: Any, k: int, physics: str, elements: str,
          participation: Tensor | None) -> tuple[ElementSpace, Tensor, DCContingencyModel]:
    """Validate the common arguments; return the element space, dispatch (n_gen,) MW and DC model."""
    check_physics(physics)
    space = ElementSpace.of(network, elements)
    space.check_budget(k)
    pg = base_dispatch(network, physics) if dispatch is None else as_dispatch(network, dispatch)
    return space, pg, DCContingencyModel.build(network, space, participation)


def result_table(space: ElementSpace, members: Sequence[Sequence[int]], violation: np.ndarray,
                 status: Sequence[str], lost: np.ndarray) -> pd.DataFrame:
    """Scored sets as a table, best (largest exact violation) first; unscored sets last."""
    df = pd.DataFrame({
        "outage": [space.set_labels(m) for m in members],
        "violation_mw": np.asarray(violation, dtype=float),
        "status": list(status),
        "load_lost_mw": np.asarray(lost, dtype=float),
    }, columns=COLUMNS)
    df = df.sort_values("violation_mw", ascending=False, na_position="last", kind="stable")
    return df.reset_index(drop=True)


def scored(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a finite score (status ok), best first: the ranking."""
    return df[df["status"] == "ok"].reset_index(drop=True)


def members_tensor(members: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(members, dtype=np.int64).reshape(len(members), -1), device=device)


__all__ = ["check_physics", "setup", "contingency_model", "result_table", "scored", "members_tensor", "COLUMNS", "PHYSICS"]
