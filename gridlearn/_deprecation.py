"""Old names kept for one release: each use warns with the new spelling (issue 17)."""

from __future__ import annotations

import warnings
from typing import Any


def warn_renamed(owner: str, old: str, new: str, stacklevel: int = 2) -> None:
    """Warn that ``owner``'s ``old`` is now ``new``."""
    warnings.warn(f"{owner}: {old!r} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def take_renamed(owner: str, kwargs: dict[str, Any], renames: dict[str, str], stacklevel: int = 2) -> dict[str, Any]:
    """Map deprecated keyword arguments to their new names, warning once per name.

    ``renames`` maps old -> new. Any other name raises TypeError, as Python would: an
    unknown keyword is never ignored.
    """
    unknown = sorted(set(kwargs) - set(renames))
    if unknown:
        raise TypeError(f"{owner} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    out = {}
    for old, value in kwargs.items():
        warn_renamed(owner, old, renames[old], stacklevel + 1)
        out[renames[old]] = value
    return out


def renamed_attribute(owner: str, old: str, new: str) -> property:
    """A read-only property ``old`` that warns and returns ``new`` (a renamed result field)."""

    def get(self):
        warn_renamed(owner, f".{old}", f".{new}")
        return getattr(self, new)

    return property(get, doc=f"Deprecated alias of `{new}` (renamed in issue 17's one vocabulary).")
