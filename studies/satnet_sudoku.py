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
a few seconds per batch of 40 with the compiled kernels (benchmarks/README.md: 2-9x faster
than the reference's 24 s; an estimate of 10-40 minutes an epoch, not measured on a quiet
machine), so long runs checkpoint and resume:

    .venv/bin/python studies/satnet_sudoku.py --box 2 --epochs 10
    .venv/bin/python studies/satnet_sudoku.py --threads 2 --checkpoint ckpt/sudoku.pt   # 100 epochs
    .venv/bin/python studies/satnet_sudoku.py --threads 2 --checkpoint ckpt/sudoku.pt --resume

Per epoch the training table holds the board accuracy on the test set, the fraction of
training solves that converged (``train_converged``) and that got an implicit gradient
(forward and adjoint both converged, ``train_gradient_given``), the backward's mean
iterations (``train_adjoint_iterations``), and the training time.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
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
    on_failure: str = "zero"  # no gradient from an unconverged solve; fractions are logged per epoch
    adjoint_damping: float = 0.05  # gridlearn.implicit.SATNet's default (the reference's prox_lam at init)
    loss_on: str = "all"  # visual: "all" (paper, leaks labels) | "blanks"
    cache_dir: str = ".cache/sudoku"
    seed: int = 0
    threads: int = 1
    # checkpoints: written to `checkpoint` (a file outside the run directory, which only
    # appears when a run ends) every `checkpoint_every` training batches and after every
    # epoch; `resume` continues from it. `stop_after_batches` ends the run after that many
    # training batches in this process (a checkpoint is written first): for time-limited jobs.
    checkpoint: str = ""
    checkpoint_every: int = 25
    resume: bool = False
    stop_after_batches: int = 0


# fields that may differ between a run and the run that resumes it
_RUN_CONTROL = ("checkpoint", "checkpoint_every", "resume", "stop_after_batches", "epochs")


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint


def _load_checkpoint(path: Path, cfg: Config) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}")
    state = torch.load(path, weights_only=False)
    mine = {k: v for k, v in asdict(cfg).items() if k not in _RUN_CONTROL}
    theirs = {k: v for k, v in state["config"].items() if k not in _RUN_CONTROL}
    if mine != theirs:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise ValueError(f"checkpoint {path} was written with a different config (differs in {diff})")
    return state


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
    torch.set_num_threads(cfg.threads)  # the compiled kernels use as many (parallel over the batch)
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
    sat = SATNet(D**3, cfg.m, aux=cfg.aux, max_iter=cfg.max_iter, on_failure=cfg.on_failure,
                 adjoint_damping=cfg.adjoint_damping, generator=g)
    # the solves' random initial vectors come from their own generator (saved in
    # checkpoints), so a run does not depend on torch's global generator
    g_solve = torch.Generator().manual_seed(cfg.seed + 1)
    digits = None
    if cfg.mode == "visual":
        with torch.random.fork_rng():  # a seeded classifier init, global state left as it was
            torch.manual_seed(cfg.seed)
            digits = DigitNet(D)
    groups = [{"params": sat.parameters(), "lr": cfg.lr}]
    if digits is not None:
        groups.append({"params": digits.parameters(), "lr": cfg.lr_classifier})
    opt = torch.optim.Adam(groups)

    def batches(part, shuffle, order=None):
        n = len(tensors[part]["z"])
        if order is None:
            order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for s in range(0, n, cfg.batch_size):
            yield order[s : s + cfg.batch_size]

    def evaluate():
        boards_ok, cells_ok, cells, digit_ok, digit_n, conv = 0, 0, 0, 0, 0, []
        T = tensors["test"]
        with torch.no_grad():
            for idx in batches("test", False):
                z = _inputs(cfg, digits, T["images"][idx] if digits is not None else None, T["z"][idx])
                sol = sat.solve(z, T["mask"][idx], generator=g_solve)
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

    ckpt_path = Path(cfg.checkpoint) if cfg.checkpoint else None
    # training state: everything an uninterrupted run would carry from one batch to the next
    st = {"epoch": 0, "batch": 0, "order": None, "rows": [], "batch_times": [],
          "losses": [], "conv": [], "grad": [], "adj_steps": [], "epoch_s": 0.0}
    if cfg.resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs checkpoint=<path>")
        state = _load_checkpoint(ckpt_path, cfg)
        sat.load_state_dict(state["sat"])
        if digits is not None:
            digits.load_state_dict(state["digits"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        if "solve_generator" in state:
            g_solve.set_state(state["solve_generator"])
        torch.set_rng_state(state["torch_rng"])
        st = state["train"]

    def checkpoint():
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, {
                "config": asdict(cfg), "sat": sat.state_dict(), "opt": opt.state_dict(),
                "digits": digits.state_dict() if digits is not None else None,
                "generator": g.get_state(), "solve_generator": g_solve.get_state(),
                "torch_rng": torch.get_rng_state(), "train": st})

    done_here, stopped = 0, False
    with start_run(schema.SUDOKU_STUDY, cfg) as run:
        logger.info("data: %d puzzles, %.1f givens on average, %.1f s to generate or load", len(ds),
                    float((ds.puzzles != 0).sum(axis=(1, 2)).mean()), gen_s)
        if cfg.resume:
            logger.info("resumed from %s at epoch %d, batch %d", ckpt_path, st["epoch"], st["batch"])
        while st["epoch"] < cfg.epochs and not stopped:
            tr = tensors["train"]
            if st["order"] is None:  # a new epoch: draw its order (a resumed one keeps its own)
                st["order"] = torch.randperm(len(tr["z"]), generator=g)
            all_idx = list(batches("train", True, st["order"]))
            if cfg.max_train_batches:
                all_idx = all_idx[: cfg.max_train_batches]
            for idx in tqdm(all_idx[st["batch"]:], desc=f"epoch {st['epoch']}", leave=False):
                if cfg.stop_after_batches and done_here >= cfg.stop_after_batches:
                    stopped = True
                    break
                tb = time.perf_counter()
                z = _inputs(cfg, digits, tr["images"][idx] if digits is not None else None, tr["z"][idx])
                mask = tr["mask"][idx]
                sol = sat.solve(z, mask, generator=g_solve)
                out, y = sol.value.clamp(1e-6, 1 - 1e-6), tr["y"][idx]
                sel = ~mask if (cfg.mode == "visual" and cfg.loss_on == "blanks") else torch.ones_like(mask)
                loss = nn.functional.binary_cross_entropy(out[sel], y[sel])
                opt.zero_grad()
                loss.backward()
                opt.step()
                dt = time.perf_counter() - tb
                st["batch_times"].append(dt)
                st["epoch_s"] += dt
                st["losses"].append(float(loss.detach()))
                st["conv"].append(float(sol.converged.float().mean()))
                st["grad"].append(float(sol.extras["adjoint"]["gradient_given"].float().mean()))
                st.setdefault("adj_steps", []).append(float(sol.extras["adjoint"]["steps"].float().mean()))
                st["batch"] += 1
                done_here += 1
                if cfg.checkpoint_every and st["batch"] % cfg.checkpoint_every == 0:
                    checkpoint()
            if stopped:
                break
            ev = evaluate()
            row = {"epoch": st["epoch"], "batches": st["batch"], "train_loss": float(np.mean(st["losses"])),
                   "train_converged": float(np.mean(st["conv"])),
                   "train_gradient_given": float(np.mean(st["grad"])),
                   "train_adjoint_iterations": float(np.mean(st.get("adj_steps") or [np.nan])),
                   "epoch_train_s": st["epoch_s"], **ev}
            st["rows"].append(row)
            logger.info("epoch %d: %s", st["epoch"], row)
            st.update(epoch=st["epoch"] + 1, batch=0, order=None, losses=[], conv=[], grad=[], adj_steps=[], epoch_s=0.0)
            checkpoint()
        if stopped:
            checkpoint()
            logger.info("stopped after %d batches (stop_after_batches); resume from %s", done_here, ckpt_path)
        rows, batch_times = st["rows"], st["batch_times"]
        table = pd.DataFrame(rows)
        run.write_table(schema.TRAINING_TABLE, schema.SUDOKU_TRAINING.frame(table))
        batches_per_epoch = int(np.ceil(cfg.n_train / cfg.batch_size))
        last = rows[-1] if rows else {}
        results = {**last, "epochs_done": len(rows), "stopped_early": stopped, "generation_or_load_s": gen_s,
                   "mean_givens": float((ds.puzzles != 0).sum(axis=(1, 2)).mean()),
                   "train_batch_s_mean": float(np.mean(batch_times)) if batch_times else None,
                   "epoch_s_extrapolated": float(np.mean(batch_times)) * batches_per_epoch if batch_times else None,
                   "first_train_loss": rows[0]["train_loss"] if rows else None}
        run.log_metrics(**results)
        results["run_dir"] = str(run.final_dir)
    return results


# every Config field is an option (`--help`); the summary main returns is printed
app = study_app(Config, main, echo=True, help="Train SATNet on (visual) Sudoku; writes results/satnet_sudoku/<run>/.")


if __name__ == "__main__":
    app()
