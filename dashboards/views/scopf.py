"""Security-constrained OPF: adversarial N-k search vs enumeration, and the defence trade-off."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.common import csv_bytes, run_label
from dashboards.page_parts import chosen_run, show_figures
from dashboards.scopf_data import STUDY, ScopfRun, load_scopf_run, summary_view
from dashboards.scopf_figures import (
    defence_figure,
    found_vs_worst_figure,
    pf_ratio_figure,
    recall_figure,
    search_cost_figure,
)
from gridlearn.results import RunRecord

TITLE = "Security-constrained OPF"
ORDER = 20
ICON = ":material/shield:"


def _caption(run: ScopfRun) -> str:
    cfg = run.record.config
    parts = [run_label(run.record)]
    for key, fmt in [("physics", "physics {}"), ("scenarios", "{} scenarios"), ("restarts", "{} restarts"),
                     ("steps", "{} steps")]:
        if key in cfg:
            parts.append(fmt.format(cfg[key]))
    return " · ".join(parts) + f" · `{run.record.path}`"


def _download(table, file_name: str, label: str, key: str) -> None:
    st.download_button(label, data=csv_bytes(table), file_name=file_name, mime="text/csv", on_click="ignore", key=key)


def render(runs: list[RunRecord], results_dir: Path) -> None:
    run = chosen_run(TITLE, runs, load_scopf_run, STUDY, results_dir, key="sc_run")
    if run is None:
        return
    st.caption(_caption(run))

    st.subheader("Attack vs enumeration: recall and power flows")
    st.markdown(
        "Recall: fraction of scenarios where the attack found a set as bad as the worst set found by "
        "enumeration (ties count). Ratio: enumeration's power flows over the attack's (log scale; "
        "above 1 the attack needs fewer)."
    )
    left, right = st.columns(2)
    left.plotly_chart(recall_figure(run), key="sc_fig_recall")
    right.plotly_chart(pf_ratio_figure(run), key="sc_fig_pf_ratio")
    table = summary_view(run)
    st.dataframe(table, hide_index=True, key="sc_summary")
    _download(table, f"{run.run_id}-summary.csv", "Download summary (CSV)", "sc_dl_summary")

    st.subheader("Search cost: power flows and wall time")
    st.plotly_chart(search_cost_figure(run), key="sc_fig_search_cost")
    st.markdown("**Per scenario: the attack's best set against the worst** (× = missed)")
    st.plotly_chart(found_vs_worst_figure(run), key="sc_fig_found_vs_worst")
    with st.expander("Every scenario (attack_vs_enumeration.csv)"):
        st.dataframe(run.attack, hide_index=True, key="sc_attack_table")
        _download(run.attack, f"{run.run_id}-attack_vs_enumeration.csv", "Download attack_vs_enumeration (CSV)",
                  "sc_dl_attack")

    cfg = run.record.config
    case = cfg.get("defence_case", "the defence case")
    st.subheader("Defence: dispatch cost vs worst-case violation")
    if run.defence.empty:
        st.info("This run skipped the defence (--no-defence); run `gridlearn run scopf` without it to see the trade-off.")
    else:
        st.caption(
            f"{case}, N-{cfg.get('defence_k', '?')}, loads × {cfg.get('defence_load_scale', '?')}. Dashed: the "
            "violation as the defence's own attack saw it at each step; solid: the dispatch's worst violation "
            "scored by enumeration."
        )
        st.plotly_chart(defence_figure(run), key="sc_fig_defence")
        st.dataframe(run.defence, hide_index=True, key="sc_defence_table")

    st.subheader("Figures saved by the study")
    show_figures(run.record)
    with st.expander("Config"):
        st.json(run.record.config, expanded=True)
