"""Study: SATNet learns the parity of L-bit strings from single-bit supervision.

Setup (SATNet paper, Sec. 4.1): one SATNet layer (n=3: two inputs, one output; m=4
clauses, aux=1) learns XOR and is applied along the string, p_i = XOR(p_{i-1}, x_i),
with the weights tied; only the final parity is supervised. Curriculum (ours): train on
the parity of the first ``l`` bits, starting at l=2 and moving on to l+1 once the training
accuracy at l reaches ``advance_at``, until l = L. Paper target: 100% test accuracy at L=20.

    .venv/bin/python studies/satnet_parity.py --length 20
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from gridlearn.implicit import SATNet
from gridlearn.logic import schema
from gridlearn.results import start_run
from gridlearn.study import study_app

logger = logging.getLogger("gridlearn.studies.satnet_parity")


@dataclass(frozen=True)
class Config:
    length: int = 20
    n_train: int = 1000
    n_test: int = 1000
    batch_size: int = 100
    m: int = 4
    aux: int = 1
    lr: float = 0.1
    max_epochs: int = 60
    advance_at: float = 0.99
    max_iter: int = 40
    on_failure: str = "ignore"  # the paper's fixed-iteration behaviour; converged fraction is logged
    seed: int = 0


def chain(net: SATNet, bits: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Parity estimate of each row of ``bits`` (B, l) and the fraction of converged solves."""
    p = bits[:, 0]
    mask = torch.tensor([True, True, False], device=bits.device)
    conv = []
    for i in range(1, bits.shape[1]):
        z = torch.stack([p, bits[:, i], torch.zeros_like(p)], dim=1)
        sol = net.solve(z, mask)
        conv.append(sol.converged.float().mean())
        p = sol.value[:, 2]
    return p, float(torch.stack(conv).mean()) if conv else 1.0


def main(cfg: Config) -> dict:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(cfg.seed)
    x_train = torch.randint(0, 2, (cfg.n_train, cfg.length), generator=g).double()
    x_test = torch.randint(0, 2, (cfg.n_test, cfg.length), generator=g).double()
    net = SATNet(3, cfg.m, aux=cfg.aux, max_iter=cfg.max_iter, on_failure=cfg.on_failure,
                 generator=g, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rows, level = [], 2
    t_start = time.perf_counter()
    with start_run(schema.PARITY_STUDY, cfg) as run:
        for epoch in tqdm(range(cfg.max_epochs), desc="parity epochs"):
            t0 = time.perf_counter()
            perm = torch.randperm(cfg.n_train, generator=g)
            correct, total, loss_sum, conv = 0, 0, 0.0, []
            for start in range(0, cfg.n_train, cfg.batch_size):
                xb = x_train[perm[start : start + cfg.batch_size], :level]
                yb = xb.sum(dim=1) % 2
                p, c = chain(net, xb)
                loss = torch.nn.functional.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int(((p > 0.5).double() == yb).sum())
                total += len(yb)
                loss_sum += float(loss.detach()) * len(yb)
                conv.append(c)
            train_acc = correct / total
            with torch.no_grad():
                p_test, c_test = chain(net, x_test)
                test_acc = float(((p_test > 0.5).double() == x_test.sum(dim=1) % 2).double().mean())
            rows.append({"epoch": epoch, "level": level, "train_loss": loss_sum / total, "train_acc": train_acc,
                         "test_acc_full_length": test_acc, "converged_train": sum(conv) / len(conv),
                         "converged_test": c_test, "epoch_s": time.perf_counter() - t0})
            logger.info("epoch %d level %d train_acc %.3f test_acc(L=%d) %.3f", epoch, level, train_acc,
                        cfg.length, test_acc)
            if train_acc >= cfg.advance_at and level < cfg.length:
                level += 1
            elif test_acc == 1.0 and level == cfg.length:
                break
        table = pd.DataFrame(rows)
        run.write_table(schema.TRAINING_TABLE, schema.PARITY_TRAINING.frame(table))
        results = {"test_accuracy": rows[-1]["test_acc_full_length"], "epochs": len(rows),
                   "final_level": level, "wall_s": time.perf_counter() - t_start,
                   "mean_epoch_s": float(table["epoch_s"].mean()),
                   "converged_fraction_last_epoch": rows[-1]["converged_train"]}
        run.log_metrics(**results)
        results["run_dir"] = str(run.final_dir)
    return results


app = study_app(Config, main, help="Train SATNet on L-bit parity and write a run directory under results/satnet_parity/.",
                echo=True)  # every Config field is an option (`--help`)


if __name__ == "__main__":
    app()
