"""What a task-forecasting run directory holds: the contract between study and dashboard.

The study writes these tables (``tables/<name>.csv``) and metrics; the dashboard reads
only these names. Change them here, in one place, or not at all.
"""

STUDY = "task_forecasting"

# One row per (method, seed): the headline scatter.
SUMMARY_TABLE = "summary"
SUMMARY_COLUMNS = ["method", "seed", "rmse", "task_cost"]

# One row per (method, seed, hour): mean test task cost in that hour of the day.
PER_HOUR_TABLE = "per_hour_cost"
PER_HOUR_COLUMNS = ["method", "seed", "hour", "task_cost"]

# One row per (method, seed, day, hour) of the test period.
FORECASTS_TABLE = "forecasts"
FORECASTS_COLUMNS = ["method", "seed", "day", "hour", "actual", "mu", "sigma", "schedule"]

# metrics.json: {"methods": {method: {"rmse_mean", "rmse_std", "task_cost_mean",
#                                      "task_cost_std", "n_seeds"}},
#                "dataset": str, "n_test_days": int, ...}
METRICS_METHODS_KEY = "methods"

FIGURES = ["cost_vs_rmse", "per_hour_cost"]
