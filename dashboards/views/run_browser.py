"""Run browser for every study: a run's metadata, config, metrics, tables, figures and log."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.common import csv_bytes, read_table, run_label, show_unreadable
from gridlearn.errors import DataError
from gridlearn.results import RunRecord

TITLE = "Run browser"
STUDY = None
ORDER = 90
ICON = ":material/folder_open:"

_LOG_TAIL_LINES = 200


def _show_tables(rec: RunRecord) -> None:
    if not rec.tables:
        st.caption("No tables.")
        return
    for name in rec.tables:
        with st.expander(f"{name}.csv", expanded=len(rec.tables) == 1):
            try:
                table = read_table(rec, name)
            except DataError as exc:
                st.error(str(exc))
                continue
            st.caption(f"{len(table)} rows × {len(table.columns)} columns")
            st.dataframe(table, hide_index=True, key=f"rb_table_{rec.run_id}_{name}")
            st.download_button(
                f"Download {name}.csv",
                data=csv_bytes(table),
                file_name=f"{rec.run_id}-{name}.csv",
                mime="text/csv",
                on_click="ignore",
                key=f"rb_dl_{rec.run_id}_{name}",
            )


def _show_figures(rec: RunRecord) -> None:
    if not rec.figures:
        st.caption("No figures.")
        return
    for name, path in rec.figures.items():
        try:
            st.image(path.read_bytes(), caption=name)
        except OSError as exc:
            st.error(f"figure {name}: {exc}")


def _show_log(rec: RunRecord) -> None:
    path = rec.path / "log.txt"
    if not path.exists():
        st.caption("No log.txt.")
        return
    lines = path.read_text(errors="replace").splitlines()
    st.code("\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty)", language=None)


def render(runs: list[RunRecord], results_dir: Path) -> None:
    st.title(TITLE)
    show_unreadable([(r, r.error or "") for r in runs if not r.readable], consequence="can still be opened below to inspect the files it has")
    studies = sorted({r.study for r in runs})
    study = st.selectbox("Study", studies, key="rb_study")
    of_study = {r.run_id: r for r in runs if r.study == study}
    run_id = st.selectbox("Run", list(of_study), format_func=lambda rid: run_label(of_study[rid]), key="rb_run")
    rec = of_study[run_id]
    st.caption(f"`{rec.path}`")
    if not rec.readable:
        st.error(f"This run is unreadable: {rec.error}. Its remaining files are shown below.")

    meta_col, config_col, metrics_col = st.columns(3)
    with meta_col:
        st.markdown("**Run**")
        st.json(rec.meta or {}, expanded=True)
    with config_col:
        st.markdown("**Config**")
        st.json(rec.config or {}, expanded=True)
    with metrics_col:
        st.markdown("**Metrics**")
        st.json(rec.metrics or {}, expanded=2)

    st.subheader("Tables")
    _show_tables(rec)
    st.subheader("Figures")
    _show_figures(rec)
    with st.expander("Log (last lines)"):
        _show_log(rec)
