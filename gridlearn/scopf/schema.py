"""What an SC-OPF run directory holds (`studies/scopf.py`): the contract between study and dashboard.

- ``attack_vs_enumeration``: one row per (case, scenario, k): the true worst N-k violation
  (``worst_mw``, by enumeration), the attack's best (``found_mw``), ``recall``, the
  enumeration ``rank`` of the attack's set, and each search's power flows and wall time;
- ``summary``: per (case, k) means of those, ``pf_ratio`` = enumeration / attack power
  flows, ``time_ratio`` likewise for wall time;
- ``defence``: per (method, step) the dispatch cost and its worst N-k violation (header
  only when the run skipped the defence).

The study writes further diagnostic columns; the dashboard reads the ones named here.
"""

from gridlearn.tables import TableSchema

STUDY = "scopf"

ATTACK = TableSchema("attack_vs_enumeration", (
    ("case", "text"), ("scenario", "integer"), ("k", "integer"), ("worst_mw", "number"), ("found_mw", "number"),
    ("recall", "number"), ("rank", "number"), ("enum_power_flows", "number"), ("enum_time_s", "number"),
    ("attack_power_flows", "number"), ("attack_time_s", "number"),
), extra_columns=True)
SUMMARY = TableSchema("summary", (
    ("case", "text"), ("k", "integer"), ("recall", "number"), ("mean_rank", "number"), ("attack_pf", "number"),
    ("enum_pf", "number"), ("attack_s", "number"), ("enum_s", "number"), ("pf_ratio", "number"), ("time_ratio", "number"),
), extra_columns=True)
DEFENCE = TableSchema("defence", (
    ("method", "text"), ("step", "integer"), ("cost_usd_per_h", "number"), ("worst_violation_mw", "number"),
), extra_columns=True)
DEFENCE_SUMMARY_TABLE = "defence_summary"  # per defence case and method; read by the run browser only

TABLES = (ATTACK, SUMMARY, DEFENCE)
FIGURES = ["attack_vs_enumeration", "defence_tradeoff"]

# metrics.json: recall_<case>_k<k> and pf_ratio_<case>_k<k> per (case, k) of the summary.
RECALL_PREFIX = "recall_"


def headline(metrics: dict) -> tuple[str, str] | None:
    """(label, value) for the overview card: the mean recall of the worst N-k set over (case, k)."""
    values = [v for k, v in metrics.items() if k.startswith(RECALL_PREFIX) and isinstance(v, (int, float))]
    if not values:
        return None
    return f"worst-set recall, mean of {len(values)} case/k", f"{sum(values) / len(values):.0%}"
