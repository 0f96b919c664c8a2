"""How many examples a fuzz property runs: a share of the active profile's max_examples.

Properties differ in cost (a Clarabel reference solve, a pandapower power flow), so each
asks for a fraction of the profile's budget; `--hypothesis-profile=thorough` scales all
of them by the same factor. A per-test ``max_examples`` would pin the count instead.
"""

from __future__ import annotations

from hypothesis import settings


def examples(share: float) -> int:
    return max(2, int(round(share * settings.default.max_examples)))
