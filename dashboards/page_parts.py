"""Pieces the study pages (SC-OPF, inverse AC-OPF, SATNet) share: a run picker, the run's
figures, the "no readable run" message and the loading split into good and bad runs.

Nothing here computes a result; it only shows what a run directory holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import streamlit as st

from dashboards.common import produce_hint, run_label, show_unreadable
from gridlearn.errors import DataError
from gridlearn.results import RunRecord

T = TypeVar("T")


def split_runs(
    runs: Sequence[RunRecord], load: Callable[[RunRecord], T]
) -> tuple[list[T], list[tuple[RunRecord, str]]]:
    """(loaded runs, [(unreadable run, reason)]), both in the order given; ``load`` raises DataError."""
    good: list[T] = []
    bad: list[tuple[RunRecord, str]] = []
    for rec in runs:
        try:
            if not rec.readable:
                raise DataError(rec.error or "unreadable")
            good.append(load(rec))
        except DataError as exc:
            bad.append((rec, str(exc)))
    return good, bad


def readable_runs(title: str, runs: Sequence[RunRecord], load: Callable[[RunRecord], T], study: str,
                  results_dir: Path, example: str | None = None) -> list[T]:
    """A page's opening: its title, the unreadable runs listed, and the loaded ones (empty:
    the "no readable run" message has been shown and the page should stop)."""
    st.title(title)
    good, bad = split_runs(runs, load)
    show_unreadable(bad)
    if not good:
        no_readable_run(study, results_dir, example)
    return good


def chosen_run(title: str, runs: Sequence[RunRecord], load: Callable[[RunRecord], T], study: str,
               results_dir: Path, key: str) -> T | None:
    """`readable_runs`, then the one the run picker (widget ``key``) selects; None when none is readable."""
    good = readable_runs(title, runs, load, study, results_dir)
    return good[pick_run([r.record for r in good], key=key)] if good else None


def no_readable_run(study: str, results_dir: Path, example: str | None = None) -> None:
    """The message shown when every run of ``study`` is unreadable; ``example``: a command line that writes one."""
    extra = f" For example: `{example}`." if example else ""
    st.info(f"No readable `{study}` run in `{results_dir}`. {produce_hint(study)}{extra}")


def pick_run(records: Sequence[RunRecord], key: str, label: str = "Run") -> int:
    """A selectbox over runs (newest first, labelled by `run_label`); returns the chosen index."""
    return st.selectbox(label, range(len(records)), format_func=lambda i: run_label(records[i]), key=key)


def show_figures(rec: RunRecord) -> None:
    """The PNG figures the study saved, two per row, each captioned with its name."""
    if not rec.figures:
        st.caption("This run saved no figures.")
        return
    items = list(rec.figures.items())
    for start in range(0, len(items), 2):
        for col, (name, path) in zip(st.columns(2), items[start : start + 2]):
            try:
                col.image(path.read_bytes(), caption=name)
            except OSError as exc:
                col.error(f"figure {name}: {exc}")
