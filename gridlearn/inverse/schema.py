"""What an inverse AC-OPF run directory holds (`studies/inverse_acopf.py`): the contract with its dashboard page.

- ``recovery``: one row per (case, observation setting, noise, number of samples, method):
  ``max_rel_err`` over every recovered parameter, ``max_rel_err_identifiable`` over the
  identifiable ones, timings, and ``error`` (only when some method failed or did not apply);
- ``parameters_paper`` (only when the gradient method succeeded): per parameter the
  recovered ``value``, ``prior``, ``true``, ``identifiable`` with the ``reason`` when not;
- ``admittance``: per line tried, a reactance recovered alone, or an ``error``.

The study writes further diagnostic columns; the dashboard reads the ones named here.
"""

from gridlearn.tables import TableSchema

STUDY = "inverse_acopf"

RECOVERY = TableSchema("recovery", (
    ("case", "text"), ("observe", "text"), ("method", "text"), ("noise", "number"), ("n_samples", "integer"),
    ("max_rel_err", "number"), ("max_rel_err_identifiable", "number"), ("error", "text"),
), optional=("error",), extra_columns=True)
PARAMETERS = TableSchema("parameters_paper", (
    ("element", "text"), ("coefficient", "text"), ("identifiable", "bool"), ("reason", "text"), ("observe", "text"),
    ("value", "number"), ("prior", "number"), ("true", "number"), ("noise", "number"), ("n_samples", "integer"),
), extra_columns=True)
ADMITTANCE = TableSchema("admittance", (("branch", "text"), ("method", "text")), extra_columns=True)

# The randomised-prior sweep (issue 22), partial observations and noise coverage: one row per
# draw and one summary per case (or setting); their metric columns are the study's to choose.
SWEEP_DRAWS = TableSchema("sweep_draws", (("case", "text"),), extra_columns=True)
SWEEP_SUMMARY = TableSchema("sweep_summary", (("case", "text"),), extra_columns=True)
# per generator of each sweep case: limits hit in the data, separable or not, how often flagged and why
SWEEP_GENERATORS = TableSchema("sweep_generators", (("case", "text"), ("gen", "integer")), extra_columns=True)
PARTIAL_DRAWS = TableSchema("partial_draws", (("case", "text"),), extra_columns=True)
PARTIAL_SUMMARY = TableSchema("partial_summary", (), extra_columns=True)
NOISE_COEFFICIENTS = TableSchema("noise_coefficients", (), extra_columns=True)
NOISE_SUMMARY = TableSchema("noise_summary", (), extra_columns=True)

TABLES = (RECOVERY, PARAMETERS, ADMITTANCE, SWEEP_DRAWS, SWEEP_SUMMARY, SWEEP_GENERATORS, PARTIAL_DRAWS, PARTIAL_SUMMARY,
          NOISE_COEFFICIENTS, NOISE_SUMMARY)
FIGURES = ["error_vs_samples"]

HEADLINE_KEY = "paper_noise_free_full_max_rel_err"


def headline(metrics: dict) -> tuple[str, str] | None:
    """(label, value) for the overview card: case14, noise-free, p_g + LMP observed, best max relative error."""
    value = metrics.get(HEADLINE_KEY)
    if not isinstance(value, (int, float)) or value != value:
        return None
    return "case14 max. rel. error, noise-free", f"{value:.2e}"
