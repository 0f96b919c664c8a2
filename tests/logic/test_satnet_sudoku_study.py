"""studies/satnet_sudoku.py: a run interrupted (checkpoint) and resumed ends with the same
model, optimizer state and training table as an uninterrupted run."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from gridlearn import results
from tests._studies import study_module



@pytest.fixture(scope="module")
def study():
    with study_module("satnet_sudoku") as mod:
        yield mod


def _config(study, tmp_path, **kw):
    # 4x4 boards, 3 batches an epoch, 2 epochs: small enough for CI, long enough to cut
    # in the middle of an epoch
    return study.Config(box=2, n_train=12, n_test=4, m=12, aux=4, batch_size=4, epochs=2, givens_min=6,
                        givens_max=9, lr=0.05, cache_dir=str(tmp_path / "cache"), **kw)


def _table(res) -> pd.DataFrame:
    t = results.load_run(res["run_dir"]).table("training")
    return t.drop(columns=[c for c in t.columns if c.endswith("_s")])


def test_checkpoint_and_resume_give_the_uninterrupted_model(study, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "DEFAULT_ROOT", tmp_path / "results")
    ckpt_a, ckpt_b = tmp_path / "a.pt", tmp_path / "b.pt"
    full = study.main(_config(study, tmp_path, checkpoint=str(ckpt_a)))
    # stop after 4 batches (epoch 1, batch 1 of 3), then resume from the checkpoint
    cut = _config(study, tmp_path, checkpoint=str(ckpt_b), stop_after_batches=4)
    part = study.main(cut)
    assert part["stopped_early"] and part["epochs_done"] == 1
    rest = study.main(replace(cut, stop_after_batches=0, resume=True))
    assert not rest["stopped_early"] and rest["epochs_done"] == 2
    a, b = torch.load(ckpt_a, weights_only=False), torch.load(ckpt_b, weights_only=False)
    assert torch.equal(a["sat"]["S"], b["sat"]["S"])
    assert not torch.equal(a["sat"]["S"], torch.zeros_like(a["sat"]["S"]))
    for sa, sb in zip(a["opt"]["state"].values(), b["opt"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    pd.testing.assert_frame_equal(_table(full), _table(rest))
    assert {"train_converged", "train_gradient_given", "test_board_acc"} <= set(_table(rest).columns)


def test_resume_refuses_a_checkpoint_of_another_config(study, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "DEFAULT_ROOT", tmp_path / "results")
    ckpt = tmp_path / "c.pt"
    study.main(_config(study, tmp_path, checkpoint=str(ckpt), stop_after_batches=1))
    with pytest.raises(ValueError, match="differs in \\['lr'\\]"):
        study.main(replace(_config(study, tmp_path, checkpoint=str(ckpt), resume=True), lr=0.1))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        study.main(_config(study, tmp_path, checkpoint=str(tmp_path / "missing.pt"), resume=True))
