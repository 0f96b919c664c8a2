"""SATNet: a differentiable MAXSAT layer (Wang, Donti, Wilder & Kolter, ICML 2019), in torch.

Equation solved (paper eq. 2, with the learned clause matrix ``S`` in ``R^{m x N}``,
``N = n + 1 + aux``, column 0 the truth direction ``v_T``):

    V* = argmin_V <S^T S, V^T V>   s.t. ||v_j|| = 1,  v_i = -cos(pi z_i) v_T + sin(pi z_i) r_i
                                                         for the known (input) variables i,
    z_o = arccos(-v_o*^T v_T) / pi  for the unknown ones,

solved by the mixing method (block coordinate descent on the unit vectors, paper
Sec. 3.1). Backward equation (paper Sec. 3.2): the adjoint ``U`` solves
``||g_o|| u_o + P_o sum_{j != o} (S^T S)_oj u_j = P_o dl/dv_o`` by the same coordinate
descent, then ``dl/dS = -(Psi^T V + Omega^T U)`` with ``Psi = U S^T``, ``Omega = V S^T``.
No unrolling. Details and derivation notes: `gridlearn.implicit.satnet_mixing`.

Failure policy. The paper runs a fixed number of sweeps and accepts the last iterate.
Here every solve reports per element ``Status.CONVERGED`` (a sweep lowered the objective
by less than ``eps`` times the first sweep did: the paper's test, see
`gridlearn.implicit.satnet_mixing`) or ``Status.MAX_STEPS`` through `SATNet.solve`, which returns a
`Solution` whose ``value`` is differentiable. ``on_failure`` decides what ``forward`` and
the backward pass do with an element that did not converge:

- ``"zero"`` (default): ``forward`` returns its (last-iterate) output without raising,
  but it gets **no implicit gradient** (zero), as gridlearn never returns an implicit
  gradient for a non-converged element. Check ``solve(...).converged`` to see how many.
- ``"keep"``: the paper's behaviour: gradient at the last iterate (the word root and
  DEQ layers use for "the derivative of the iterations performed").
- ``"raise"``: ``forward`` (and the backward's adjoint solve) raise `SolverFailure`
  naming the elements.

These are the words of every other layer (`gridlearn.implicit.adjoint.ON_FAILURE`, plus
``"keep"``); SATNet's earlier ``"mask"`` and ``"ignore"`` still work for one release, with
a DeprecationWarning. ``"nan"`` is not offered: the compiled kernels zero a gradient, they
cannot poison one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gridlearn._deprecation import warn_renamed
from gridlearn.errors import ConfigError
from gridlearn.implicit.satnet_mixing import MixingFunction, MixingSettings, default_rank
from gridlearn.implicit.solution import Solution

# The shared on_failure words -> those of the kernels' settings (`MixingSettings`, whose
# vocabulary is the kernels' own business); and SATNet's earlier words -> the shared ones.
_TO_MIXING = {"zero": "mask", "keep": "ignore", "raise": "raise"}
_FROM_MIXING = {v: k for k, v in _TO_MIXING.items()}
_OLD_WORDS = {"mask": "zero", "ignore": "keep"}


def _mixing_on_failure(on_failure: str) -> str:
    if on_failure in _OLD_WORDS:
        warn_renamed("SATNet", f"on_failure={on_failure!r}", f"on_failure={_OLD_WORDS[on_failure]!r}", stacklevel=3)
        on_failure = _OLD_WORDS[on_failure]
    if on_failure not in _TO_MIXING:
        raise ConfigError(f"on_failure must be one of {sorted(_TO_MIXING)}, got {on_failure!r}")
    return _TO_MIXING[on_failure]


def _validate(z: torch.Tensor, is_input: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not isinstance(is_input, torch.Tensor):
        raise TypeError(f"is_input must be a torch.Tensor, got {type(is_input).__name__}")
    if z.dim() != 2 or z.shape[1] != n:
        raise ValueError(f"z must have shape (batch, n={n}), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"z must be a floating-point tensor, got {z.dtype}")
    if is_input.dim() == 1:
        is_input = is_input.unsqueeze(0).expand(z.shape[0], -1)
    if tuple(is_input.shape) != tuple(z.shape):
        raise ValueError(
            f"is_input must have shape (n,) or the shape of z {tuple(z.shape)}, got {tuple(is_input.shape)}"
        )
    if is_input.dtype != torch.bool:
        if bool(((is_input != 0) & (is_input != 1)).any()):
            raise ValueError("is_input must be boolean (or 0/1)")
        is_input = is_input != 0
    is_input = is_input.to(z.device).contiguous()
    zd = z.detach()
    if not bool(torch.isfinite(zd).all()):
        raise ValueError("z contains NaN or inf")
    if bool(((zd < 0) | (zd > 1)).any()):
        lo, hi = float(zd.min()), float(zd.max())
        raise ValueError(f"z must lie in [0, 1] (probabilistic assignments), got values in [{lo:.3g}, {hi:.3g}]")
    return z, is_input


def satnet_solve(
    S: torch.Tensor,
    z: torch.Tensor,
    is_input: torch.Tensor,
    settings: MixingSettings,
    generator: torch.Generator | None = None,
) -> Solution:
    """Functional SATNet solve. S ``(m, N)``, z ``(B, n)``, is_input ``(B, n)`` or ``(n,)``.

    Returns a `Solution` with ``value`` ``(B, n)`` (differentiable in z and S) and the
    per-element status, residual (largest vector move in the last sweep) and sweeps.
    Never raises on non-convergence (``on_failure="raise"`` acts in `SATNet.forward`
    and in the backward pass). ``extras["adjoint"]`` is empty until the backward pass has
    run; then it holds the adjoint solve's per-element ``status_code``, ``residual`` and
    ``steps``, and ``gradient_given`` (bool ``(B,)``: forward and adjoint both converged,
    so the element got an implicit gradient under "mask").
    """
    m, N = S.shape
    n = N - 1 - settings.aux
    if n < 1:
        raise ValueError(f"S has {N} columns, too few for aux={settings.aux} plus the truth column")
    z, is_input = _validate(z, is_input, n)
    if S.dtype != z.dtype or S.device != z.device:
        raise ValueError(f"z ({z.dtype}, {z.device}) must match S ({S.dtype}, {S.device})")
    adjoint: dict = {}
    z_out, code, residual, steps = MixingFunction.apply(z, S, is_input, settings, generator, adjoint)
    return Solution(value=z_out, status_code=code, residual=residual, steps=steps,
                    extras={"is_input": is_input, "adjoint": adjoint})


class SATNet(nn.Module):
    """Differentiable MAXSAT layer.

    Args:
        n: number of visible variables (inputs and outputs of the layer).
        m: number of (relaxed) clauses; any m >= 1.
        aux: number of auxiliary (hidden) variables.
        max_iter: most coordinate-descent sweeps, forward and backward (paper: 40).
        eps: a sweep lowering the objective by less than eps times the first sweep did
            counts as converged (forward and adjoint alike; paper: 1e-4).
        k: dimension of the unit vectors; default ``floor(sqrt(2 N)) + 1`` (>= 4).
        on_failure: ``"zero"`` | ``"keep"`` | ``"raise"``, see the module docstring.
        seed: if given, each call without an explicit generator draws its random unit
            vectors from a fresh generator seeded with it, so the layer is a
            deterministic function of (z, S). If None, torch's global generator is used.
        generator: generator for the initial clause matrix (reproducible init).
        backend: ``"auto"`` (compiled numba kernels on CPU when numba imports, else
            torch) | ``"numba"`` | ``"torch"`` (the pure-torch reference implementation).
        adjoint_damping: relative damping of the backward system (default 0.05, the
            reference's ``prox_lam = 1e-2`` at its initial scale): without it the adjoint
            does not converge on Sudoku at the paper's settings, so "mask" would give no
            gradient; 0 gives the exact implicit gradient. See `satnet_mixing.mixing_backward`.
        adjoint_solver: ``"cg"`` (default: conjugate gradients on the backward system, which
            keeps converging within max_iter as S trains; `satnet_adjoint_cg`) |
            ``"sweeps"`` (the reference's coordinate sweeps, run by ``backend``).
        adjoint_max_iter: the backward's iteration budget (default ``4 * max_iter``): its
            condition number grows as S trains, so the forward's 40 are too few after a
            few epochs of Sudoku.
        order: the sweeps' update order: ``"random"`` (default; a permutation per solve,
            drawn from the solve's generator, as the reference does) | ``"ascending"``. On
            mid-training Sudoku S, ascending needs up to 43 forward sweeps where a random order
            needs 38 (`benchmarks/satnet_stopping.py`), so at the paper's cap of 40 it lost
            gradients under ``on_failure="zero"``.

    Initialisation of ``S`` (m, N): i.i.d. ``N(0, 1/(N + m))``, a Glorot-style scale (our
    choice; the optimum of the SDP does not depend on the scale of S, only the step size
    that an optimizer takes relative to it does).

    Shapes: ``forward(z, is_input)``: z ``(B, n)`` in [0, 1], is_input ``(B, n)`` bool
    (or ``(n,)``, shared by the batch) -> ``(B, n)``; known entries are returned as given.

    Example: 4 variables, 4 clauses, a batch of 2; the first two variables are given,
    the layer fills in the other two, and reports per element whether it converged and
    whether the backward gave it a gradient:

    >>> import torch
    >>> from gridlearn.implicit import SATNet, Status
    >>> layer = SATNet(4, 4, aux=1, seed=0, generator=torch.Generator().manual_seed(0))
    >>> z = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.5, 0.5]])
    >>> is_input = torch.tensor([True, True, False, False])
    >>> sol = layer.solve(z, is_input)
    >>> sol.value.shape
    torch.Size([2, 4])
    >>> sol.statuses == [Status.CONVERGED, Status.CONVERGED]
    True
    >>> torch.equal(sol.value[:, :2], z[:, :2])   # the given entries come back as given
    True
    >>> bool(((sol.value >= 0) & (sol.value <= 1)).all())
    True
    >>> sol.value.sum().backward()
    >>> layer.S.grad.shape, sol.extras["adjoint"]["gradient_given"].tolist()
    (torch.Size([4, 6]), [True, True])
    """

    def __init__(
        self,
        n: int,
        m: int,
        aux: int = 0,
        max_iter: int = 40,
        eps: float = 1e-4,
        *,
        k: int | None = None,
        on_failure: str = "zero",
        backend: str = "auto",
        adjoint_damping: float = 0.05,
        adjoint_solver: str = "cg",
        adjoint_max_iter: int | None = None,
        order: str = "random",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if m < 1:
            raise ConfigError(f"m must be >= 1, got {m}")
        n_vars = n + 1 + aux
        self.n, self.m = n, m
        self.settings = MixingSettings(
            aux=aux, k=k if k is not None else default_rank(n_vars), max_iter=max_iter, eps=eps,
            on_failure=_mixing_on_failure(on_failure),
            backend=backend, adjoint_damping=adjoint_damping, adjoint_solver=adjoint_solver,
            adjoint_max_iter=adjoint_max_iter, order=order,
        )
        self.seed = seed
        S = torch.randn((m, n_vars), generator=generator, dtype=dtype or torch.get_default_dtype())
        self.S = nn.Parameter((S * math.sqrt(1.0 / (n_vars + m))).to(device))

    @property
    def on_failure(self) -> str:
        """The failure policy in the shared vocabulary: "zero", "keep" or "raise"."""
        return _FROM_MIXING[self.settings.on_failure]

    @property
    def aux(self) -> int:
        return self.settings.aux

    @property
    def k(self) -> int:
        return self.settings.k

    def _generator(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None or self.seed is None:
            return generator
        return torch.Generator(device=z.device).manual_seed(self.seed)

    def solve(self, z: torch.Tensor, is_input: torch.Tensor, generator: torch.Generator | None = None) -> Solution:
        """Solve and report per-element status; ``.value`` ``(B, n)`` is differentiable."""
        return satnet_solve(self.S, z, is_input, self.settings, self._generator(z, generator))

    def forward(self, z: torch.Tensor, is_input: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sol = self.solve(z, is_input, generator)
        if self.settings.on_failure == "raise":
            sol.raise_on_failure("SATNet mixing method")
        return sol.value

    def extra_repr(self) -> str:
        s = self.settings
        return (
            f"n={self.n}, m={self.m}, aux={s.aux}, k={s.k}, max_iter={s.max_iter}, eps={s.eps}, "
            f"on_failure={self.on_failure!r}, backend={s.backend!r}, adjoint_damping={s.adjoint_damping}, "
            f"adjoint_solver={s.adjoint_solver!r}, order={s.order!r}"
        )


__all__ = ["SATNet", "satnet_solve", "MixingSettings"]
