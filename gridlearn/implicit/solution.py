"""`Status` and `Solution`: the per-sample convergence contract shared by every solver.

Every solver in gridlearn returns a `Solution`, never raises on non-convergence, and
reports per batch element what happened. Layers turn a bad `Solution` into a
`SolverFailure` (or `InfeasibleError`) through `Solution.raise_on_failure`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch

from gridlearn.errors import InfeasibleError, SolverFailure


class Status(enum.Enum):
    """Outcome of one batch element. The value is the sentence a user reads.

    >>> Status.from_code(Status.MAX_STEPS.code) is Status.MAX_STEPS, Status.CONVERGED.value
    (True, 'converged')
    """

    CONVERGED = "converged"
    MAX_STEPS = "reached max_steps before tolerance; raise max_steps or check the map is contractive"
    DIVERGED = "residual grew for several consecutive steps"
    NONFINITE = "NaN or inf appeared in the iterate"
    STEP_TOO_SMALL = "step size fell below min_step; the problem may be stiff or singular"
    INFEASIBLE = "primal infeasible: no point satisfies the constraints"
    UNBOUNDED = "dual infeasible: the objective is unbounded below"
    NUMERICAL = "numerical trouble: the linear systems became too ill-conditioned to continue"
    # Appended after the others so that the integer codes of existing statuses do not change.
    NONCONVEX = "Q is not positive semidefinite: the QP is not convex, so no KKT point is certified a minimum"
    SINGULAR = "the Jacobian is singular at the solution (e.g. a multiple root): it is not locally unique and has no finite derivative"
    UNSTABLE = "fixed-step integration is unstable or inaccurate at this step_size (step-doubling error above tolerance); lower step_size or use dopri5"
    ACCEPTABLE = "solved only to the solver's acceptable level, not to its tolerance: check the residuals"

    @property
    def code(self) -> int:
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> "Status":
        return _FROM_CODE[int(code)]


_CODES = {s: i for i, s in enumerate(Status)}
_FROM_CODE = {i: s for s, i in _CODES.items()}


@dataclass
class Solution:
    """Result of a batched solve.

    Attributes:
        value: the solution, leading dimension = batch (or whatever the solver returns).
        status_code: int tensor ``(batch,)`` of ``Status.code`` values; use ``statuses``.
        residual: float tensor ``(batch,)``, the final residual norm per element.
        steps: int tensor ``(batch,)``, iterations taken per element.
        extras: solver-specific outputs (duals, function evaluations, ...); ``status_notes``, a
            ``{Status: sentence}`` dict, qualifies a status's sentence in `raise_on_failure`.

    >>> import torch
    >>> from gridlearn.implicit import Newton, root_solve
    >>> sol = root_solve(lambda y, w: y**2 - w, torch.ones(2, 1, dtype=torch.float64),
    ...                  torch.tensor([[4.0], [-1.0]], dtype=torch.float64), solver=Newton(max_steps=20))
    >>> sol.ok, sol.failed_indices()          # y² = -1 has no real root: element 1 is reported, not hidden
    (False, [1])
    >>> sol.statuses[0]
    <Status.CONVERGED: 'converged'>
    """

    value: Any
    status_code: torch.Tensor
    residual: torch.Tensor
    steps: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def statuses(self) -> list[Status]:
        return [Status.from_code(c) for c in self.status_code.tolist()]

    @property
    def converged(self) -> torch.Tensor:
        """Bool mask ``(batch,)`` of elements that reached their tolerance."""
        return self.status_code == Status.CONVERGED.code

    @property
    def ok(self) -> bool:
        return bool(self.converged.all())

    def failed_indices(self) -> list[int]:
        return torch.nonzero(~self.converged).flatten().tolist()

    def raise_on_failure(self, what: str = "solver") -> None:
        """Raise `SolverFailure` (or `InfeasibleError` if every failure is infeasibility)."""
        bad = self.failed_indices()
        if not bad:
            return
        statuses = [Status.from_code(int(self.status_code[i])) for i in bad]
        residuals = [float(self.residual[i]) for i in bad]
        steps = [int(self.steps[i]) for i in bad]
        shown = ", ".join(
            f"#{i}: {s.name} (residual {r:.3g}, {n} steps)"
            for i, s, r, n in list(zip(bad, statuses, residuals, steps))[:10]
        )
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        first = statuses[0]
        # A solver may qualify a status's generic sentence (e.g. the scope of its certificate).
        note = self.extras.get("status_notes", {}).get(first)
        note = f" ({note})" if note else ""
        msg = (f"{what} failed on {len(bad)} of {self.status_code.numel()} batch elements: {shown}{more}. "
               f"{first.name}: {first.value}{note}")
        cls = InfeasibleError if all(s is Status.INFEASIBLE for s in statuses) else SolverFailure
        raise cls(msg, indices=bad, statuses=statuses, residuals=residuals, steps=steps)


__all__ = ["Status", "Solution"]
