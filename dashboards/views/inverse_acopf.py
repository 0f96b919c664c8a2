"""Inverse AC-OPF: costs and line reactances recovered from published dispatch and prices."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.common import csv_bytes, run_label
from dashboards.inverse_data import (
    ERROR_MEASURES,
    STUDY,
    InverseRun,
    curves,
    failed_rows,
    load_inverse_run,
    parameter_view,
)
from dashboards.inverse_figures import error_vs_samples_figure, highlight_unidentifiable
from dashboards.page_parts import chosen_run, show_figures
from gridlearn.results import RunRecord

TITLE = "Inverse AC-OPF"
ORDER = 30
ICON = ":material/undo:"

_ALL = "(all)"


def _caption(run: InverseRun) -> str:
    cfg = run.record.config
    parts = [run_label(run.record)]
    for key in ["observes", "noises", "paper_samples", "large_cases", "max_iter", "prior_spread"]:
        if key in cfg:
            value = cfg[key]
            parts.append(f"{key}={(','.join(map(str, value)) or 'none') if isinstance(value, list) else value}")
    return " · ".join(parts) + f" · `{run.record.path}`"


def _recovery_section(run: InverseRun) -> None:
    cases = list(dict.fromkeys(run.recovery["case"]))
    c1, c2 = st.columns(2)
    case = c1.selectbox("Case", cases, key="ia_case")
    measure = c2.radio("Error over", list(ERROR_MEASURES), format_func=ERROR_MEASURES.get, horizontal=True,
                       key="ia_measure")
    of_case = run.recovery[run.recovery["case"] == case]
    observes = list(dict.fromkeys(of_case["observe"]))
    rows = curves(run, case, measure)
    st.plotly_chart(error_vs_samples_figure(rows, measure, observes), key="ia_fig_error")
    empty = [o for o in observes if not (rows["observe"] == o).any()]
    if empty:
        n_ident = of_case.loc[of_case["observe"].isin(empty), "n_identifiable"] if "n_identifiable" in of_case else None
        why = " (no parameter is identifiable there)" if n_ident is not None and (n_ident.fillna(0) == 0).all() else ""
        st.caption(f"Nothing to plot for observe {', '.join(empty)} on this measure{why}.")
    failed = failed_rows(run)
    if not failed.empty:
        st.markdown(f"**{len(failed)} recovery row(s) failed or did not apply**")
        st.dataframe(failed, hide_index=True, key="ia_failed")
    with st.expander("Every recovery row (recovery.csv)"):
        st.dataframe(run.recovery, hide_index=True, key="ia_recovery_table")
        st.download_button("Download recovery.csv", data=csv_bytes(run.recovery),
                           file_name=f"{run.run_id}-recovery.csv", mime="text/csv", on_click="ignore",
                           key="ia_dl_recovery")


def _parameters_section(run: InverseRun) -> None:
    if run.parameters is None:
        st.info("This run wrote no parameters_paper.csv (the study writes it only when the gradient method "
                "succeeds at the largest sample size).")
        return
    table = parameter_view(run)
    c1, c2 = st.columns(2)
    observe = c1.selectbox("Observation", [_ALL, *dict.fromkeys(table["observe"])], key="ia_param_observe")
    noise = c2.selectbox("Noise", [_ALL, *sorted(table["noise"].unique())], key="ia_param_noise")
    if observe != _ALL:
        table = table[table["observe"] == observe]
    if noise != _ALL:
        table = table[table["noise"] == noise]
    n_ident = int(table["identifiable"].sum())
    st.caption(
        f"{n_ident} of {len(table)} parameters identifiable; shaded rows are not (the reason column says why). "
        "rel_err = |value − true| / |true|."
    )
    st.dataframe(highlight_unidentifiable(table.reset_index(drop=True)), hide_index=True, key="ia_parameters",
                 column_config={"reason": st.column_config.TextColumn("reason", width="medium")})


def render(runs: list[RunRecord], results_dir: Path) -> None:
    run = chosen_run(TITLE, runs, load_inverse_run, STUDY, results_dir, key="ia_run")
    if run is None:
        return
    st.caption(_caption(run))
    best = run.record.metrics.get("paper_noise_free_full_max_rel_err")
    if isinstance(best, (int, float)):
        st.metric("case14 (paper), observe pg+lmp, noise 0, gradient: best max. relative error", f"{best:.3e}")

    st.subheader("Recovery error vs number of samples")
    _recovery_section(run)
    st.subheader("Recovered cost parameters (case14, the paper's costs)")
    _parameters_section(run)
    st.subheader("Line reactances, one at a time")
    st.dataframe(highlight_unidentifiable(run.admittance), hide_index=True, key="ia_admittance")
    st.subheader("Figures saved by the study")
    show_figures(run.record)
    with st.expander("Config"):
        st.json(run.record.config, expanded=True)
