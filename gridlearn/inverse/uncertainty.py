"""Local error measures at a fit: standard errors (noisy data), error bounds (noise-free), the step left.

At the fit ``theta`` with raw residuals ``r`` (model - observation), per-entry loss weights
``w`` and the Jacobian ``J = dr/dtheta``, write ``A = J^T W J`` (the Gauss-Newton matrix of
the loss actually fitted). Then (Seber & Wild 1989, *Nonlinear Regression*, sec. 2.1 and 5.2):

- the Gauss-Newton step still left: ``delta = -A^+ J^T W r``;
- noisy data, multiplicative noise ``var(r_i) = sigma^2 y_i^2`` (`simulate_market`): the
  sandwich covariance ``Cov(theta) = A^+ (J^T W Sigma W J) A^+`` with ``Sigma = diag(sigma^2
  y_i^2)`` and ``sigma^2`` estimated from the residuals, ``sum_i (r_i / y_i)^2 / (N - P)``.
  (With weights matched to the noise it is the usual ``sigma^2 (J^T J)^-1``; with the
  default fixed channel weights the sandwich keeps it honest.) Standard error = sqrt of its
  diagonal. It is first order: it is calibrated when the noise is small enough for the
  model to be linear over a few standard errors, which `tests/inverse` checks by simulation;
- noise-free data: the first-order distance from ``theta`` to the exact fit along parameter
  k is ``|e_k^T A^+ J^T W r| <= sqrt(A^+_kk) ||W^1/2 r||`` (Cauchy-Schwarz): ``error_bound``
  (`recover` reports it relative to ``|theta_k|``).

All three are computed in relative units ``u = theta / scale`` (the optimiser's) and
reported in Network units. A direction in the Jacobian's null space gets ``inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.inverse.convergence import ZERO_REL


@dataclass(frozen=True)
class LocalErrors:
    """Per parameter (P,): ``std_err`` (Network units; NaN for noise-free data), ``error_bound``
    (Network units; noise-free), ``step`` (the Gauss-Newton step left, Network units), ``sigma``: the
    relative noise level estimated from the residuals (NaN for noise-free data)."""

    std_err: Tensor
    error_bound: Tensor
    step: Tensor
    sigma: float


def local_errors(jac_w: Tensor, raw: Tensor, observed: Tensor, entry_w: Tensor, scale: Tensor, null: Tensor,
                 n_params: int, noisy: bool, raw_all: Tensor | None = None, observed_all: Tensor | None = None,
                 entry_w_all: Tensor | None = None, rtol: float = 1e-7) -> LocalErrors:
    """See the module docstring.

    Args:
        jac_w: (N, P) Jacobian of the weighted residuals ``sqrt(w) r`` over the differentiable samples.
        raw, observed, entry_w: (N,) raw residuals, published values and loss weights of the same rows.
        scale: (P,) the relative-unit scale; null: bool (P,) parameters in the Jacobian's null space.
        raw_all, observed_all, entry_w_all: the same over every sample (the noise estimate and the
            residual norm use them); default: the differentiable rows.
    """
    raw_all = raw if raw_all is None else raw_all
    observed_all = observed if observed_all is None else observed_all
    entry_w_all = entry_w if entry_w_all is None else entry_w_all
    j = jac_w.double() * scale
    a = j.T @ j
    a_pinv = torch.linalg.pinv(a, rtol=rtol**2, hermitian=True)
    r_w = raw.double() * entry_w.double().sqrt()
    step_u = -(a_pinv @ (j.T @ r_w))
    inf = torch.full((n_params,), float("inf"), dtype=torch.float64)
    r_norm = float((raw_all.double() ** 2 * entry_w_all.double()).sum().sqrt())
    bound = a_pinv.diagonal().clamp_min(0).sqrt() * r_norm * scale
    bound = torch.where(null, inf, bound)
    if not noisy:
        return LocalErrors(std_err=torch.full((n_params,), float("nan"), dtype=torch.float64), error_bound=bound,
                           step=step_u * scale, sigma=float("nan"))
    y_all = observed_all.double().abs()
    keep = y_all > ZERO_REL * max(float(y_all.pow(2).mean().sqrt()), 1e-300)
    dof = max(int(keep.sum()) - n_params, 1)
    sigma2 = float(((raw_all.double()[keep] / y_all[keep]) ** 2).sum()) / dof
    var_i = sigma2 * observed.double() ** 2
    meat = j.T @ (j * (entry_w.double() * var_i)[:, None])
    cov_u = a_pinv @ meat @ a_pinv
    se = cov_u.diagonal().clamp_min(0).sqrt() * scale
    se = torch.where(null, inf, se)
    return LocalErrors(std_err=se, error_bound=bound, step=step_u * scale, sigma=sigma2**0.5)


def null_mask(jac_w: Tensor, scale: Tensor, rtol: float = 1e-7, null_tol: float = 1e-2) -> Tensor:
    """bool (P,): parameters with a component above ``null_tol`` in the null space of the scaled
    Jacobian (numerical rank ``#{s_i > rtol s_1}``), as `identifiability_report` judges them."""
    j = jac_w.double() * scale
    p = j.shape[1]
    _, s, vh = torch.linalg.svd(j, full_matrices=True)
    s_max = float(s[0]) if s.numel() else 0.0
    rank = int((s > rtol * s_max).sum()) if s_max > 0 else 0
    null = vh[rank:].T
    comp = null.norm(dim=1) if null.numel() else torch.zeros(p, dtype=torch.float64)
    return comp > null_tol


def step_in_std_err(errors: LocalErrors, null: Tensor) -> float | None:
    """The largest remaining Gauss-Newton step, in standard errors, over the determined parameters."""
    ok = ~null & torch.isfinite(errors.std_err) & (errors.std_err > 0)
    if not ok.any():
        return None
    return float((errors.step[ok].abs() / errors.std_err[ok]).max())
