"""Entry script of the dashboard: ``streamlit run dashboards/app.py -- --results DIR``.

Prefer ``dashboards.launch.launch``/``serve`` (or ``gridlearn dashboard``), which bind to
127.0.0.1; a bare ``streamlit run`` listens on every interface unless told otherwise.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

# Streamlit puts this file's folder on sys.path, not the repository root that holds the
# `dashboards` package.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from dashboards.common import empty_state_message, resolve_results_dir  # noqa: E402
from dashboards.registry import PageSpec, discover_pages  # noqa: E402
from gridlearn.results import RunRecord, list_runs  # noqa: E402


def _page_body(spec: PageSpec, results_dir: Path, runs: list[RunRecord], pages: dict[str, tuple[PageSpec, Any]]):
    # A render that takes ``pages`` (the overview) gets every page, to link to them.
    wants_pages = "pages" in inspect.signature(spec.render).parameters

    def body() -> None:
        message = empty_state_message(results_dir, runs, spec.study)
        if message is not None:
            st.title(spec.title)
            st.info(message)
            return
        mine = runs if spec.study is None else [r for r in runs if r.study == spec.study]
        if wants_pages:
            spec.render(mine, results_dir, pages=pages)
        else:
            spec.render(mine, results_dir)

    return body


def main(results_dir: str | Path | None = None, default_page: str | None = None) -> None:
    """Build the navigation and run the selected page.

    ``results_dir`` overrides `resolve_results_dir`; ``default_page`` (a page module name)
    chooses the landing page instead of the first page.
    """
    st.set_page_config(page_title="gridlearn results", layout="wide")
    results_dir = Path(results_dir) if results_dir is not None else resolve_results_dir(sys.argv[1:])
    try:
        runs = list_runs(results_dir)
    except OSError as exc:  # e.g. a results directory we may not read
        st.error(f"Cannot read results directory `{results_dir}`: {exc}")
        runs = []
    specs, page_errors = discover_pages()
    if default_page is not None and default_page not in {s.name for s in specs}:
        raise ValueError(f"no dashboard page {default_page!r}; pages are {[s.name for s in specs]}")
    by_name: dict[str, tuple[PageSpec, Any]] = {}  # filled below, read when a page runs
    pages = [
        st.Page(
            _page_body(spec, results_dir, runs, by_name),
            title=spec.title,
            icon=spec.icon,
            url_path=spec.name,
            default=(spec.name == default_page) if default_page is not None else i == 0,
        )
        for i, spec in enumerate(specs)
    ]
    by_name.update({spec.name: (spec, page) for spec, page in zip(specs, pages)})
    selected = st.navigation(pages)
    with st.sidebar:
        n_bad = sum(not r.readable for r in runs)
        st.caption(f"Results: `{results_dir}` · {len(runs)} run(s)" + (f", {n_bad} unreadable" if n_bad else ""))
        for err in page_errors:
            st.error(f"Page `{err.name}` failed to load: {err.reason}")
    selected.run()


if __name__ == "__main__":
    main()
