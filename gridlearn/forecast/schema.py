"""What a task-forecasting run directory holds: the contract between study and dashboard.

The study (`studies/task_forecasting.py`) builds its tables (``tables/<name>.csv``) with
these schemas and the dashboard page reads them back with the same schemas; change a
column here, in one place, or not at all.
"""

from gridlearn.tables import TableSchema

STUDY = "task_forecasting"

# One row per (method, seed): the headline scatter. rmse is over all test day-hours;
# rmse_hourly is the mean over hours of each hour's RMSE (the reference code's number).
SUMMARY = TableSchema("summary", (("method", "text"), ("seed", "integer"), ("rmse", "number"),
                                  ("rmse_hourly", "number"), ("task_cost", "number")), optional=("rmse_hourly",))

# One row per (method, seed, hour): mean test task cost in that hour of the day.
PER_HOUR = TableSchema("per_hour_cost", (("method", "text"), ("seed", "integer"), ("hour", "integer"), ("task_cost", "number")))

# One row per (method, seed, day, hour) of the test period; day is the ISO date of the test day.
FORECASTS = TableSchema("forecasts", (("method", "text"), ("seed", "integer"), ("day", "date"), ("hour", "integer"),
                                      ("actual", "number"), ("mu", "number"), ("sigma", "number"), ("schedule", "number")))

TABLES = (SUMMARY, PER_HOUR, FORECASTS)

# The names as plain constants, for readers that want only them.
SUMMARY_TABLE, SUMMARY_COLUMNS = SUMMARY.name, SUMMARY.names
PER_HOUR_TABLE, PER_HOUR_COLUMNS = PER_HOUR.name, PER_HOUR.names
FORECASTS_TABLE, FORECASTS_COLUMNS = FORECASTS.name, FORECASTS.names

# metrics.json: {"methods": {method: {"rmse_mean", "rmse_std", "task_cost_mean",
#                                      "task_cost_std", "n_seeds", and since the reference
#                                      protocol also "rmse_hourly_mean", "rmse_hourly_std"}},
#                "dataset": str, "protocol": str, "n_test_days": int, ...}
METRICS_METHODS_KEY = "methods"
METHOD_STAT_KEYS = ("rmse_mean", "rmse_std", "task_cost_mean", "task_cost_std", "n_seeds")
HEADLINE_KEY = "task_cost_reduction_vs_rmse"  # 1 - task cost of task net / that of the rmse net

FIGURES = ["cost_vs_rmse", "per_hour_cost"]


def headline(metrics: dict) -> tuple[str, str] | None:
    """(label, value) for the overview card: the task net's cost reduction against the RMSE net."""
    value = metrics.get(HEADLINE_KEY)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return None
    return "task cost cut, task vs RMSE net", f"{value:.1%}"
