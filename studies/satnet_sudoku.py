"""Study: SATNet learns Sudoku from examples, plain and visual (SATNet paper, Sec. 4.2-4.3).

Plain: puzzles from gridlearn's own generator (unique solutions, ~36 givens on 9x9),
one-hot encoded (n = D**3 bits; 729 for 9x9), SATNet with the paper's m=600, aux=300,
Adam lr 2e-3, binary cross-entropy on every bit. Paper target: >= 98.3% test boards.

Visual (``mode="visual"``): each cell is an sklearn ``load_digits`` 8x8 image (a 0 image
for blanks); a LeNet-style classifier gives per given cell a distribution over 1..D that
is fed to SATNet as its inputs (the given/blank mask is known), trained end to end.
``loss_on="all"`` is the paper's loss on every output bit, given cells included: the
given cells' outputs are the classifier's own outputs, so this leaks digit labels into
the classifier. ``loss_on="blanks"`` removes that leak (Chang et al., NeurIPS 2020, who
report 0% boards for SATNet then). Classifier accuracy on the given cells is reported.

``box=2`` runs the 4x4 version (n=64), which learns in minutes on a CPU; 9x9 on CPU costs
about a minute per batch of 40 (see benchmarks/bench_satnet.py), so use
``max_train_batches`` for short runs there.

    .venv/bin/python studies/satnet_sudoku.py --box 2 --epochs 10
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import typer
from torch import nn
from tqdm import tqdm

from gridlearn.implicit import SATNet
from gridlearn.logic.sudoku import (
    decode,
    digit_images,
    generate_dataset,
    input_mask,
    is_valid_solution,
    one_hot,
    render_boards,
)
from gridlearn.logic import schema
from gridlearn.results import start_run
from gridlearn.study import study_app

logger = logging.getLogger("gridlearn.studies.satnet_sudoku")


@dataclass(frozen=True)
class Config:
    mode: str = "plain"  # "plain" | "visual"
    box: int = 3
    n_train: int = 9000
    n_test: int = 1000
    givens_min: int = 26
    givens_max: int = 40
    m: int = 600
    aux: int = 300
    batch_size: int = 40
    lr: float = 2e-3
    lr_classifier: float = 1e-3
    epochs: int = 100
    max_train_batches: int = 0  # 0 = whole epoch; >0 caps batches per epoch (short runs)
    max_test: int = 0  # 0 = whole test set
    max_iter: int = 40
    on_failure: str = "ignore"  # the paper's fixed-iteration behaviour; converged fraction is logged
    loss_on: str = "all"  # visual: "all" (paper, leaks labels) | "blanks"
    cache_dir: str = ".cache/sudoku"
    seed: int = 0


class DigitNet(nn.Module):
    """LeNet-style classifier for 8x8 images -> logits over digits 1..D."""

    def __init__(self, n_digits: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, n_digits),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.unsqueeze(1))


def _inputs(cfg, net_digits, images, z_plain):
    """SATNet input bits: given cells from the classifier (visual) or the puzzle (plain)."""
    if cfg.mode == "plain":
        return z_plain
    B, cells = images.shape[:2]
    probs = torch.softmax(net_digits(images.reshape(B * cells, 8, 8)), dim=1)
    return probs.reshape(B, cells * probs.shape[1])


def main(cfg: Config) -> dict:
    if cfg.mode not in ("plain", "visual") or cfg.loss_on not in ("all", "blanks"):
        raise ValueError(f"mode must be plain|visual and loss_on all|blanks, got {cfg.mode!r}, {cfg.loss_on!r}")
    torch.set_num_threads(1)
    D = cfg.box**2
    t0 = time.perf_counter()
    ds = generate_dataset(cfg.n_train + cfg.n_test, seed=cfg.seed, box=cfg.box,
                          givens_range=(cfg.givens_min, cfg.givens_max), cache_dir=cfg.cache_dir, progress=True)
    gen_s = time.perf_counter() - t0
    train, test = ds.split(cfg.n_train)
    if cfg.max_test:
        test = type(test)(test.puzzles[: cfg.max_test], test.solutions[: cfg.max_test])
    tensors = {}
    rng = np.random.default_rng(cfg.seed)
    imgs = digit_images(cfg.seed) if cfg.mode == "visual" else None
    for name, part, split in (("train", train, "train"), ("test", test, "test")):
        t = {"z": torch.from_numpy(one_hot(part.puzzles)), "y": torch.from_numpy(one_hot(part.solutions)),
             "mask": torch.from_numpy(input_mask(part.puzzles)), "boards": part.solutions,
             "puzzles": part.puzzles}
        if imgs is not None:
            t["images"] = torch.from_numpy(render_boards(part.puzzles, *imgs[split], rng))
        tensors[name] = t
    g = torch.Generator().manual_seed(cfg.seed)
    sat = SATNet(D**3, cfg.m, aux=cfg.aux, max_iter=cfg.max_iter, on_failure=cfg.on_failure, generator=g)
    digits = DigitNet(D) if cfg.mode == "visual" else None
    groups = [{"params": sat.parameters(), "lr": cfg.lr}]
    if digits is not None:
        groups.append({"params": digits.parameters(), "lr": cfg.lr_classifier})
    opt = torch.optim.Adam(groups)

    def batches(part, shuffle):
        n = len(tensors[part]["z"])
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for s in range(0, n, cfg.batch_size):
            yield order[s : s + cfg.batch_size]

    def evaluate():
        boards_ok, cells_ok, cells, digit_ok, digit_n, conv = 0, 0, 0, 0, 0, []
        T = tensors["test"]
        with torch.no_grad():
            for idx in batches("test", False):
                z = _inputs(cfg, digits, T["images"][idx] if digits is not None else None, T["z"][idx])
                sol = sat.solve(z, T["mask"][idx])
                conv.append(float(sol.converged.float().mean()))
                pred = decode(sol.value.numpy(), D)
                truth = T["boards"][idx.numpy()]
                blank = T["puzzles"][idx.numpy()] == 0
                boards_ok += int(sum(np.array_equal(p, t) and is_valid_solution(p) for p, t in zip(pred, truth)))
                cells_ok += int((pred == truth)[blank].sum())
                cells += int(blank.sum())
                if digits is not None:
                    given = ~blank
                    dig = decode(z.numpy(), D)
                    digit_ok += int((dig == truth)[given].sum())
                    digit_n += int(given.sum())
        n = len(T["z"])
        return {"test_board_acc": boards_ok / n, "test_blank_cell_acc": cells_ok / max(cells, 1),
                "test_digit_acc_given_cells": digit_ok / digit_n if digit_n else None,
                "test_converged": float(np.mean(conv))}

    rows, batch_times = [], []
    with start_run(schema.SUDOKU_STUDY, cfg) as run:
        logger.info("data: %d puzzles, %.1f givens on average, %.1f s to generate or load", len(ds),
                    float((ds.puzzles != 0).sum(axis=(1, 2)).mean()), gen_s)
        for epoch in range(cfg.epochs):
            tr = tensors["train"]
            losses, conv, n_b = [], [], 0
            for idx in tqdm(list(batches("train", True)), desc=f"epoch {epoch}", leave=False):
                if cfg.max_train_batches and n_b >= cfg.max_train_batches:
                    break
                tb = time.perf_counter()
                z = _inputs(cfg, digits, tr["images"][idx] if digits is not None else None, tr["z"][idx])
                mask = tr["mask"][idx]
                sol = sat.solve(z, mask)
                out, y = sol.value.clamp(1e-6, 1 - 1e-6), tr["y"][idx]
                sel = ~mask if (cfg.mode == "visual" and cfg.loss_on == "blanks") else torch.ones_like(mask)
                loss = nn.functional.binary_cross_entropy(out[sel], y[sel])
                opt.zero_grad()
                loss.backward()
                opt.step()
                batch_times.append(time.perf_counter() - tb)
                losses.append(float(loss.detach()))
                conv.append(float(sol.converged.float().mean()))
                n_b += 1
            ev = evaluate()
            row = {"epoch": epoch, "batches": n_b, "train_loss": float(np.mean(losses)),
                   "train_converged": float(np.mean(conv)), **ev}
            rows.append(row)
            logger.info("epoch %d: %s", epoch, row)
        table = pd.DataFrame(rows)
        run.write_table(schema.TRAINING_TABLE, schema.SUDOKU_TRAINING.frame(table))
        batches_per_epoch = int(np.ceil(cfg.n_train / cfg.batch_size))
        results = {**rows[-1], "generation_or_load_s": gen_s,
                   "mean_givens": float((ds.puzzles != 0).sum(axis=(1, 2)).mean()),
                   "train_batch_s_mean": float(np.mean(batch_times)),
                   "epoch_s_extrapolated": float(np.mean(batch_times)) * batches_per_epoch,
                   "first_train_loss": rows[0]["train_loss"]}
        run.log_metrics(**results)
        results["run_dir"] = str(run.final_dir)
    return results


def _cli_main(cfg: Config) -> None:
    """Train SATNet on (visual) Sudoku; writes results/satnet_sudoku/<run>/."""
    logging.basicConfig(level=logging.INFO)
    typer.echo(main(cfg))


app = study_app(Config, _cli_main)  # every Config field is an option (`--help`)


if __name__ == "__main__":
    app()
