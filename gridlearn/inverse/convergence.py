"""Did the inverse fit converge? The status `recover` promises, and the tests behind it.

A fit is CONVERGED only when its residual is at the level the data allow:

- noise-free data (``observations.noise == 0``): the RMS residual of each published
  channel (p_g in MW, LMPs in $/MWh) is below ``fit_rtol`` times that channel's RMS
  observed value (`InverseSolver.fit_rtol`, 1e-5 by default: ~1e-3 MW on 100 MW of
  dispatch; exact data fitted by the AC-OPF at Ipopt tol 1e-9 reach 1e-7 or less);
- noisy data (multiplicative, ``y_obs = y (1 + noise * N(0, 1))``, see `simulate_market`):
  the loss actually fitted, over the N observed entries (less those below ``ZERO_REL`` of
  their channel's RMS), ``L = (1/S) sum_i w_i r_i^2``, is at the noise floor: below
  ``E[L] + 4 sd[L]`` with ``sd_i = noise |y_obs,i|``, ``E[L] = (N - P)/N (1/S) sum_i w_i sd_i^2``
  and ``sd[L] = sqrt(2 sum_i (w_i sd_i^2)^2) / S`` (a weighted sum of chi-squares: a fit that is
  right leaves exactly the noise), and the Gauss-Newton step still left at the fit is below
  ``STEP_IN_SE`` standard errors for every determined parameter (the fit sits at the
  least-squares optimum, not on its way there). The standardised statistic ``T = sum_i (r_i /
  sd_i)^2`` (chi-square(N - P) when the weights match the noise) is reported beside it but not
  used: with channel weights, the optimum of L is not that of T, and a small entry (a unit
  just off pmin, its sd 1% of a few MW) puts T far above N - P at the right answer (MATPOWER
  case14, 1%: T = 1140 over 234 dof at the loss's optimum, reached from two starts).

Otherwise the optimiser's stop decides: MAX_ITER (out of iterations), STALLED (no
decreasing step, a tiny step, or a loss that stopped falling while still above the
floor: a local minimum or a flat valley), FAILED (the AC-OPF failed at the start, or no
sample was differentiable so no step could be taken).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from torch import Tensor

#: Noisy data: the remaining Gauss-Newton step must be below this many standard errors.
STEP_IN_SE = 0.1
#: Entries whose published value is this small relative to their channel's RMS carry almost no
#: multiplicative noise (a generator at pmin = 0 sits ~1e-6 MW inside it: its noise is ~1e-8 MW,
#: below the AC-OPF's own precision): left out of the noise statistic and the noise estimate.
ZERO_REL = 1e-3


class FitStatus(str, enum.Enum):
    """How the outer fit ended (a ``str`` enum: ``status == "converged"`` works).

    One Levenberg-Marquardt iteration from a prior 30 % off is not enough, and the result
    says so rather than flagging anything identifiable:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import InverseSolver, recover, simulate_market
    >>> truth = load_case("case9")
    >>> prior = truth.with_(cost_c1_usd_per_mwh=1.3 * truth.gen.cost_c1_usd_per_mwh)
    >>> res = recover(prior, simulate_market(truth, 3, seed=0), "costs",
    ...               solver=InverseSolver(init="prior", n_starts=1, max_iter=1))
    >>> res.status, res.status == "max_iter", bool(res.parameters["identifiable"].any())
    (<FitStatus.MAX_ITER: 'max_iter'>, True, False)
    >>> [s.value for s in FitStatus]
    ['converged', 'stalled', 'max_iter', 'failed']
    """

    CONVERGED = "converged"
    STALLED = "stalled"
    MAX_ITER = "max_iter"
    FAILED = "failed"


#: The optimisers' stop reasons, and the status each gives when the fit test fails.
STOP_STATUS = {"settled": FitStatus.STALLED, "tolerance": FitStatus.STALLED, "no_decrease": FitStatus.STALLED, "max_iter": FitStatus.MAX_ITER,
               "no_derivative": FitStatus.FAILED, "start_failed": FitStatus.FAILED}


@dataclass(frozen=True)
class FitCheck:
    """The residual test at one point. ``rms``: per channel (unweighted, Network units);
    ``tol``: the per-channel RMS the test allows (noise-free); ``t_stat``/``t_bound``/``dof``:
    the standardised noise statistic, reported (noisy data; NaN otherwise); ``loss``/``loss_bound``:
    the fitted loss over the kept entries and its noise-floor bound (noisy data; the test);
    ``passed``: the residual test alone."""

    rms: dict[str, float]
    tol: dict[str, float]
    t_stat: float
    t_bound: float
    dof: int
    noise_floor_loss: float
    passed: bool
    loss: float = float("nan")
    loss_bound: float = float("nan")

    def sentence(self) -> str:
        if math.isnan(self.t_stat):
            parts = [f"{k} RMS residual {self.rms[k]:.2e} (tolerance {self.tol[k]:.2e})" for k in self.rms]
            return "noise-free fit: " + ", ".join(parts)
        return (f"loss {self.loss:.4g} against the noise floor {self.noise_floor_loss:.4g} (at the floor when "
                f"<= {self.loss_bound:.4g}); standardised statistic T = {self.t_stat:.1f} over {self.dof} degrees "
                f"of freedom")


def _channels(observations, raw: Tensor, n_gen: int) -> dict[str, tuple[Tensor, Tensor]]:
    """channel name -> (residual, observed value), each flattened."""
    out = {"pg_mw": (raw[:, :n_gen].reshape(-1), observations.pg_mw.reshape(-1))}
    if observations.has_lmp:
        out["lmp_usd_per_mwh"] = (raw[:, n_gen:].reshape(-1), observations.lmp_usd_per_mwh.reshape(-1))
    return out


def fit_check(observations, raw: Tensor, n_gen: int, n_params: int, weights: tuple[float, float],
              fit_rtol: float) -> FitCheck:
    """The residual test (module docstring) for raw residuals ``raw`` (S, n_gen + n_lmp): model - observation."""
    raw = raw.detach().double()
    noise = float(observations.noise)
    chans = _channels(observations, raw, n_gen)
    rms = {k: float(r.pow(2).mean().sqrt()) for k, (r, _) in chans.items()}
    tol = {k: fit_rtol * max(float(y.pow(2).mean().sqrt()), 1e-12) for k, (_, y) in chans.items()}
    s = raw.shape[0]
    if noise <= 0:
        return FitCheck(rms=rms, tol=tol, t_stat=float("nan"), t_bound=float("nan"), dof=0, noise_floor_loss=0.0,
                        passed=all(rms[k] <= tol[k] for k in rms))
    t_stat, n, floor, loss, var = 0.0, 0, 0.0, 0.0, 0.0
    for (k, (r, y)), w in zip(chans.items(), weights):
        keep = y.abs() > ZERO_REL * max(float(y.pow(2).mean().sqrt()), 1e-300)
        sd = noise * y[keep].abs()
        t_stat += float(((r[keep] / sd) ** 2).sum())
        n += int(keep.sum())
        floor += w * float((sd**2).sum())
        loss += w * float((r[keep] ** 2).sum())
        var += 2.0 * float(((w * sd**2) ** 2).sum())
    dof = max(n - n_params, 1)
    bound = dof + 4.0 * math.sqrt(2.0 * dof)
    noise_floor_loss = floor * dof / max(n, 1) / s  # E[loss] at the optimum: each entry's variance, less P dof
    loss_bound = noise_floor_loss + 4.0 * math.sqrt(var) / s
    return FitCheck(rms=rms, tol=tol, t_stat=t_stat, t_bound=bound, dof=dof, noise_floor_loss=noise_floor_loss,
                    passed=loss / s <= loss_bound, loss=loss / s, loss_bound=loss_bound)


def decide(check: FitCheck, stop: str, step_in_se: float | None) -> tuple[FitStatus, str]:
    """(status, sentence) from the residual test, the optimiser's stop reason and (noisy data) the
    largest remaining Gauss-Newton step in standard errors (None when it could not be computed)."""
    noisy = not math.isnan(check.t_stat)
    at_optimum = (not noisy) or (step_in_se is not None and step_in_se <= STEP_IN_SE)
    if check.passed and at_optimum and stop != "start_failed":
        return FitStatus.CONVERGED, "converged: " + check.sentence()
    status = STOP_STATUS[stop]
    why = {"settled": "the fit test passed inside the optimiser but not at the final point", "tolerance": "the loss or the step stopped changing", "no_decrease": "no step decreased the loss",
           "max_iter": "out of iterations (raise max_iter)", "no_derivative": "no sample's optimum was differentiable",
           "start_failed": "the AC-OPF failed at every start"}[stop]
    if check.passed and not at_optimum:
        detail = ("the residual is at the noise floor but the Gauss-Newton step left is "
                  f"{step_in_se if step_in_se is not None else float('nan'):.2g} standard errors (> {STEP_IN_SE})")
    else:
        detail = "the residual is above what the data allow: " + check.sentence()
    return status, f"{status.value}: {why}; {detail}"
