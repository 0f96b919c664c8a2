"""The QP's KKT linear solvers: one setting (`QPSettings.kkt_solver`) read by the forward and the backward.

The interior point solves a reduced KKT system per iteration (`qp_kkt`) and the backward
pass solves the active-set bordered system (`qp_backward`). A `KKTSolver` decides both:

* ``"primal_cholesky"``: forward by Cholesky of H = Q + GᵀDG and the Schur complement
  of A (`qp_kkt.KKTFactor`, shifted and per-element LU where H is only semidefinite);
  backward by batched LU of the bordered matrix. The backward has no primal Cholesky
  form: its active block has D → ∞ (see `qp_backward`), which is why it stays bordered.
* ``"dual_schur"``: forward through Q's Cholesky and the (m+k)×(m+k) Schur complement
  C Q⁻¹ Cᵀ + E (`qp_kkt.DualKKTFactor`, qpth's reduction); backward through the same
  factor of Q. It needs Q positive definite and well conditioned (`qp_kkt.q_cholesky`);
  where it is not, the solve falls back to ``"primal_cholesky"`` for both passes.
* ``"bordered_lu"``: forward by LU of the shifted bordered matrix
  [[H + δI, Aᵀ], [A, −δI]] (refined against the unshifted system), backward by
  bordered LU. The most general and the slowest; a reference for the other two.
* ``"auto"`` (default): the dual reduction when the flop model `qp_kkt.prefer_dual`
  says it is clearly cheaper and Q allows it, else the primal one; the backward uses
  Q's Cholesky whenever Q is positive definite and well conditioned, else bordered LU.

Every solver solves the same equations, so values and gradients agree to the solvers'
accuracy (tests/implicit/test_qp_kkt_solvers.py). To add one: subclass `KKTSolver`
here and add it to `KKT_SOLVERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from gridlearn.implicit.qp_kkt import (
    QFactor, QPData, _Refined, bordered_lu, factor_kkt, prefer_dual, q_cholesky,
    reduced_hessian,
)
from gridlearn.implicit.qp_tridiag import TridiagonalKKTFactor


def primal_factor(data: QPData, d: Tensor, reg: float, refine_steps: int) -> _Refined:
    """The tridiagonal LDLᵀ when ``data.tri`` is set and succeeds (`qp_tridiag`), else `qp_kkt.factor_kkt`."""
    if data.tri is not None:
        f = TridiagonalKKTFactor.factor(data, d, refine_steps)
        if f is not None:
            return f
    return factor_kkt(data, d, reg, refine_steps)


@dataclass(frozen=True)
class KKTSolver:
    """How the forward's Newton systems and the backward's adjoint system are solved."""

    name: ClassVar[str] = ""

    def q_factor(self, Q: Tensor, G: Tensor, A: Tensor) -> QFactor | None:
        """Once per solve: Q's factorisation for the dual reduction, or None to not use it."""
        return None

    def factor(self, data: QPData, d: Tensor, reg: float, refine_steps: int) -> _Refined:
        """Once per interior-point iteration: factor the reduced KKT system for weights d (b, m)."""
        return primal_factor(data, d, reg, refine_steps)

    def adjoint_cholesky(self, Q: Tensor, forward_L: Tensor | None) -> Tensor | None:
        """The backward's Cholesky factor of Q (Schur solve), or None for bordered LU.

        ``forward_L``: the factor the forward already holds (dual reduction), if any.
        """
        return None


@dataclass(frozen=True)
class PrimalCholesky(KKTSolver):
    name: ClassVar[str] = "primal_cholesky"


@dataclass(frozen=True)
class DualSchur(KKTSolver):
    name: ClassVar[str] = "dual_schur"

    def q_factor(self, Q: Tensor, G: Tensor, A: Tensor) -> QFactor | None:
        return QFactor.build(Q, G, A)

    def adjoint_cholesky(self, Q: Tensor, forward_L: Tensor | None) -> Tensor | None:
        # Only where the forward could use Q: otherwise both passes are the primal ones.
        return forward_L


@dataclass(frozen=True)
class AutoKKT(KKTSolver):
    name: ClassVar[str] = "auto"

    def q_factor(self, Q: Tensor, G: Tensor, A: Tensor) -> QFactor | None:
        n, m, k = Q.shape[-1], G.shape[-2], A.shape[-2]
        return QFactor.build(Q, G, A) if prefer_dual(n, m, k) else None

    def adjoint_cholesky(self, Q: Tensor, forward_L: Tensor | None) -> Tensor | None:
        return forward_L if forward_L is not None else q_cholesky(Q)


@dataclass
class BorderedLUFactor(_Refined):
    """LU of the shifted bordered reduced KKT matrix for every element; lu (b, n+k, n+k)."""

    data: QPData
    d: Tensor
    lu: Tensor
    piv: Tensor
    broken: Tensor
    refine_steps: int

    @classmethod
    def factor(cls, data: QPData, d: Tensor, reg: float, refine_steps: int) -> "BorderedLUFactor":
        batch = d.shape[0]
        H = reduced_hessian(data, d, batch)
        A = data.A.expand(batch, data.k, data.n)
        # Unshifted first: a shift relative to H's scale grows with d = λ/s and, unlike
        # the Cholesky path's, would be applied to every element, costing digits late in
        # the solve. Only elements whose LU is exactly singular take the shift.
        lu, piv, singular = bordered_lu(H, A, 0.0)
        if bool(singular.any()):
            bad = torch.nonzero(singular).flatten()
            lub, pivb, singular_b = bordered_lu(H.index_select(0, bad), A.index_select(0, bad), reg)
            lu, piv = lu.index_copy(0, bad, lub), piv.index_copy(0, bad, pivb)
            singular = singular.index_copy(0, bad, singular_b)
        return cls(data, d, lu, piv, singular, refine_steps)

    def _solve_once(self, rx: Tensor, re: Tensor) -> tuple[Tensor, Tensor]:
        n = rx.shape[-1]
        sol = torch.linalg.lu_solve(self.lu, self.piv, torch.cat([rx, re], -1).unsqueeze(-1)).squeeze(-1)
        return sol[:, :n], sol[:, n:]

    def take(self, idx: Tensor) -> "BorderedLUFactor":
        return BorderedLUFactor(self.data.take(idx), self.d[idx], self.lu[idx], self.piv[idx], self.broken[idx],
                                self.refine_steps)


@dataclass(frozen=True)
class BorderedLU(KKTSolver):
    name: ClassVar[str] = "bordered_lu"

    def factor(self, data: QPData, d: Tensor, reg: float, refine_steps: int) -> _Refined:
        return BorderedLUFactor.factor(data, d, reg, refine_steps)


KKT_SOLVERS: dict[str, KKTSolver] = {s.name: s for s in (AutoKKT(), PrimalCholesky(), DualSchur(), BorderedLU())}

__all__ = ["KKT_SOLVERS", "AutoKKT", "BorderedLU", "BorderedLUFactor", "DualSchur", "KKTSolver", "PrimalCholesky"]
