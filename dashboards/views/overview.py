"""The landing page: one card per study with its latest run, headline metric and a link to its page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from dashboards.common import produce_hint, run_label
from gridlearn.results import RunRecord
from gridlearn.schemas import headline_of

TITLE = "Overview"
STUDY = None
ORDER = 0  # the first page: the dashboard opens here
ICON = ":material/dashboard:"

_COLUMNS = 3


def latest_runs(runs: list[RunRecord]) -> dict[str, RunRecord]:
    """The newest run of each study (``runs`` come newest first), readable or not."""
    out: dict[str, RunRecord] = {}
    for rec in runs:
        out.setdefault(rec.study, rec)
    return out


def card_headline(rec: RunRecord) -> tuple[str, str] | None:
    """(label, value) of a run's headline metric; None when unreadable or the study has none."""
    if not rec.readable:
        return None
    fn = headline_of(rec.study)
    return fn(rec.metrics) if fn is not None else None


def _card(spec, page, rec: RunRecord | None, n_runs: int) -> None:
    with st.container(border=True):
        st.markdown(f"**{spec.title}**")
        if rec is None:
            st.caption(f"No run yet. {produce_hint(spec.study)}")
        elif not rec.readable:
            st.warning(f"Latest run `{rec.run_id}` is unreadable: {rec.error}")
        else:
            head = card_headline(rec)
            if head is not None:
                st.metric(head[0], head[1])
            else:
                st.caption("This study reports no headline metric.")
            st.caption(f"Latest of {n_runs} run(s): {run_label(rec)}")
        st.page_link(page, label=f"Open {spec.title}", icon=":material/arrow_forward:")


def render(runs: list[RunRecord], results_dir: Path, pages: dict[str, tuple[Any, Any]] | None = None) -> None:
    st.title("gridlearn results")
    st.caption(f"`{results_dir}` · {len(runs)} run(s). Each card shows a study's newest run; open its page for the rest.")
    latest = latest_runs(runs)
    study_pages = [(spec, page) for spec, page in (pages or {}).values() if spec.study is not None]
    cols = st.columns(_COLUMNS)
    for i, (spec, page) in enumerate(study_pages):
        with cols[i % _COLUMNS]:
            _card(spec, page, latest.get(spec.study), sum(r.study == spec.study for r in runs))
    others = sorted(set(latest) - {spec.study for spec, _ in study_pages})
    if others:
        st.caption("Runs of studies without their own page (see the run browser): " + ", ".join(f"`{s}`" for s in others))
