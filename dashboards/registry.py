"""Page discovery: every module in ``dashboards/views/`` with the page interface is a page.

A later study adds a page by dropping one module there; no other file changes. The
interface (documented in dashboards/README.md):

- ``TITLE: str``               the title in the navigation and on the page;
- ``STUDY: str | None``        the study whose runs the page gets (None: every study);
- ``render(runs, results_dir)`` draws the page; ``runs`` is a non-empty list of
  `gridlearn.results.RunRecord` (readable or not) of ``STUDY``, newest first;
- optional ``ORDER: int`` (default 100, smaller first; the first page is the landing
  page) and ``ICON: str`` (an emoji or ``":material/name:"``).

A module that fails to import or lacks the interface is reported, and the other pages
still load.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from dataclasses import dataclass
from typing import Any, Callable

PAGES_PACKAGE = "dashboards.views"


@dataclass(frozen=True)
class PageSpec:
    """One discovered page. ``name`` is the module name, also the page's URL path."""

    name: str
    title: str
    study: str | None
    render: Callable[..., None]
    order: int = 100
    icon: str | None = None


@dataclass(frozen=True)
class PageError:
    """A module in the pages package that could not be used as a page, and why."""

    name: str
    reason: str


def _spec_from_module(name: str, module: Any) -> PageSpec:
    title = getattr(module, "TITLE", None)
    if not isinstance(title, str) or not title:
        raise TypeError("TITLE must be a non-empty string")
    if not hasattr(module, "STUDY"):
        raise TypeError("STUDY is missing (use None for a page over every study)")
    study = module.STUDY
    if study is not None and not isinstance(study, str):
        raise TypeError(f"STUDY must be a string or None, got {type(study).__name__}")
    render = getattr(module, "render", None)
    if not callable(render):
        raise TypeError("render(runs, results_dir) is missing")
    order = getattr(module, "ORDER", 100)
    if not isinstance(order, int):
        raise TypeError(f"ORDER must be an int, got {type(order).__name__}")
    return PageSpec(name=name, title=title, study=study, render=render, order=order, icon=getattr(module, "ICON", None))


def discover_pages(package: str = PAGES_PACKAGE) -> tuple[list[PageSpec], list[PageError]]:
    """Import every module of ``package``; return the pages (sorted by ORDER, then name) and the failures."""
    pkg = importlib.import_module(package)
    specs: list[PageSpec] = []
    errors: list[PageError] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
            specs.append(_spec_from_module(info.name, module))
        except Exception as exc:  # noqa: BLE001 - one broken page must not take the dashboard down
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            errors.append(PageError(info.name, last))
    specs.sort(key=lambda s: (s.order, s.name))
    return specs, errors
