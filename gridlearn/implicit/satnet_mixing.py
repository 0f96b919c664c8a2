"""The mixing method for the SATNet MAXSAT SDP, and its analytic backward pass.

Source: Wang, Donti, Wilder & Kolter, "SATNet: Bridging deep learning and logical
reasoning using a differentiable satisfiability solver", ICML 2019, Sections 3.1-3.2.
Written from the paper's equations (no code taken from the reference extension).

Notation (paper layout). ``S`` is ``(m, N)`` with ``N = n + 1 + aux``; its column ``s_j``
holds variable j's clause weights, column 0 is the truth direction ``v_T``. The layer
solves, over unit vectors ``V = [v_T, v_1, ..., v_{N-1}]`` in ``R^k``,

    min_V  <S^T S, V^T V>   s.t.  ||v_j|| = 1,  v_j fixed for the known (input) j.

Internally, per batch element, ``V`` is stored by rows ``(N, k)`` and ``Omega = V S^T`` as
``(m, k)`` (its transpose), so that ``s_j^T Omega`` is one batched vector-matrix product.
``v_T`` is the first basis vector ``e_0``.

Stopping test (the paper's, as in its reference code: relative objective decrease).
Moving x_j to its coordinate minimiser lowers the sweep's objective by exactly
``w_j ||dx_j||^2``: ``w_j = ||g_j||`` in the mixing method (``f = <C, V^T V>`` falls by
``2 g^T v_old + 2 ||g|| = ||g|| ||v_new - v_old||^2``), ``w_j = ||g_j||`` (the diagonal of
the adjoint's quadratic form, up to the factor 1/2 that cancels) in the adjoint sweep. An
element has converged after sweep t >= 2 when that sweep's decrease is below
``eps`` times the first sweep's (or at once when the first sweep moved nothing); the
residual reported is that ratio. The earlier test (largest vector move below ``eps``)
compared a square root with a square: a relative decrease of 1e-4 means moves near
1e-2, so at the paper's eps = 1e-4 it never fired on Sudoku in 40 sweeps.

Update order. The test above is the reference's, term for term; what made ours need more
sweeps than the reference's on the same S was the order. Sweeping by ascending index
updates the visible variables first and all auxiliary ones last. Mid-training on 9x9
Sudoku that needed up to 43 sweeps (87.5% of puzzles within the paper's 40), where one
random permutation per solve, as the reference draws, needed up to 38 (100%)
(`benchmarks/satnet_stopping.py`). So the default is ``order="random"``; the permutation
comes from the solve's generator, so a seeded solve stays a function of (z, S).

Backends: ``"torch"`` is the reference implementation (a Python loop over the union of the
batch's unknowns, each step one batched GEMV and GER); ``"numba"`` runs the same sweeps
in `gridlearn.implicit.satnet_kernels`, per element over its own unknowns, in parallel
over the batch; ``"cuda"`` runs them on the GPU, one persistent kernel with one thread
block per element (`gridlearn.implicit.satnet_kernels_cuda`); ``"auto"`` takes numba on
CPU when it imports, and the CUDA kernel for CUDA tensors when numba.cuda can run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit import satnet_kernels, satnet_kernels_cuda
from gridlearn.implicit.satnet_adjoint_cg import adjoint_cg
from gridlearn.implicit.solution import Solution, Status

logger = logging.getLogger(__name__)

ON_FAILURE = ("mask", "ignore", "raise")
BACKENDS = ("auto", "numba", "cuda", "torch")
ADJOINT_SOLVERS = ("cg", "sweeps")
ORDERS = ("random", "ascending")


@dataclass(frozen=True, kw_only=True)
class MixingSettings:
    """Frozen settings of one SATNet solve (held by the layer, passed to the Function).

    ``on_failure``: what happens to a batch element whose mixing (forward) or adjoint
    (backward) coordinate descent did not reach ``eps`` within ``max_iter`` sweeps:
    ``"mask"`` gives it a zero implicit gradient (its output is still returned, its
    status says MAX_STEPS); ``"ignore"`` uses the gradient at the last iterate, as the
    paper does with its fixed iteration count; ``"raise"`` raises `SolverFailure`.
    ``eps``: the relative objective decrease of a sweep that counts as converged (see
    the module docstring). ``backend``: ``"auto"`` | ``"numba"`` | ``"torch"``.
    ``adjoint_damping`` (lambda >= 0): the adjoint solves the damped system, diagonal
    ``(1 + lambda) ||g_o||`` in place of ``||g_o||`` (see `mixing_backward`); 0 is the
    exact implicit gradient. ``adjoint_solver``: ``"cg"`` (default: preconditioned
    conjugate gradients, `gridlearn.implicit.satnet_adjoint_cg`) | ``"sweeps"`` (the
    reference's coordinate sweeps, in ``backend``); both stop on their own eps test and
    take at most ``adjoint_max_iter`` iterations (default ``4 * max_iter``: as S trains on
    Sudoku the backward system's condition number grows, and at epoch 3 of the paper's setup
    CG needs 47-55 iterations at ``adjoint_damping = 0.05``, where 40 sufficed at the start).
    ``order``: the sweeps' update order, ``"random"`` (default: one permutation of the
    variables per solve, drawn from the solve's generator after the initial vectors, shared
    by the batch, as the reference draws one per call) | ``"ascending"`` (by index: visible
    variables first, the auxiliary ones last). Measured in `benchmarks/satnet_stopping.py`:
    on the same mid-training S and puzzles, ascending needs up to 43 sweeps where a random
    order needs 38, so at the paper's cap of 40 ascending withheld up to 12.5% of gradients.
    """

    aux: int
    k: int
    max_iter: int
    eps: float
    on_failure: str = "mask"
    backend: str = "auto"
    adjoint_damping: float = 0.0
    adjoint_solver: str = "cg"
    adjoint_max_iter: int | None = None
    order: str = "random"

    @property
    def adjoint_iterations(self) -> int:
        """The backward's iteration budget: ``adjoint_max_iter``, by default 4 x max_iter."""
        return self.adjoint_max_iter if self.adjoint_max_iter is not None else 4 * self.max_iter

    def __post_init__(self):
        if self.aux < 0:
            raise ConfigError(f"aux must be >= 0, got {self.aux}")
        if self.k < 2:
            raise ConfigError(f"k (the relaxation's dimension) must be >= 2, got {self.k}")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter must be >= 1, got {self.max_iter}")
        if not self.eps > 0:
            raise ConfigError(f"eps must be > 0, got {self.eps}")
        if not self.adjoint_damping >= 0:
            raise ConfigError(f"adjoint_damping must be >= 0, got {self.adjoint_damping}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.adjoint_max_iter is not None and self.adjoint_max_iter < 1:
            raise ConfigError(f"adjoint_max_iter must be >= 1 (or None), got {self.adjoint_max_iter}")
        if self.adjoint_solver not in ADJOINT_SOLVERS:
            raise ConfigError(f"adjoint_solver must be one of {ADJOINT_SOLVERS}, got {self.adjoint_solver!r}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.on_failure not in ON_FAILURE:
            raise ConfigError(f"on_failure must be one of {ON_FAILURE}, got {self.on_failure!r}")


def default_rank(n_vars: int) -> int:
    """Relaxation dimension k = floor(sqrt(2 N)) + 1, at least 4 (N = n + 1 + aux).

    Pataki / Barvinok: an SDP with N diagonal constraints has an optimum of rank r with
    r(r+1)/2 <= N, so k > sqrt(2N) loses nothing; the floor of 4 keeps tiny layers from
    being squeezed into too few dimensions.
    """
    return max(4, int(math.sqrt(2 * n_vars)) + 1)


def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny ** 0.5


def init_vectors(z, is_input, n_vars, k, generator):
    """Unit vectors for one solve.

    Known variables are placed at angle pi z_i from -v_T (paper, Sec. 3.1):
    ``v_i = -cos(pi z_i) v_T + sin(pi z_i) r_i``, with ``r_i`` the normalised projection
    of a random vector onto the complement of v_T (normalised so that v_i is a unit
    vector). Unknown and auxiliary variables start at random unit vectors.

    Returns V ``(B, N, k)`` and the directions r ``(B, n, k)`` (needed for dz/dv).
    """
    B, n = z.shape
    dev, dt = z.device, z.dtype
    gen_dev = generator.device if generator is not None else dev
    # drawn in float64 whatever the working dtype, so float32 and float64 solves start
    # from the same vectors
    R = torch.randn((B, n_vars, k), generator=generator, device=gen_dev, dtype=torch.float64).to(dev, dt)
    R = R / R.norm(dim=2, keepdim=True).clamp_min(_tiny(dt))
    r_perp = R[:, 1 : n + 1].clone()
    r_perp[..., 0] = 0.0
    r_perp = r_perp / r_perp.norm(dim=2, keepdim=True).clamp_min(_tiny(dt))
    theta = math.pi * z
    v_in = torch.sin(theta).unsqueeze(2) * r_perp
    v_in[..., 0] = -torch.cos(theta)
    V = R
    V[:, 0] = 0.0
    V[:, 0, 0] = 1.0
    V[:, 1 : n + 1] = torch.where(is_input.unsqueeze(2), v_in, V[:, 1 : n + 1])
    return V, r_perp


def _sweeps(St, sq, X, W2, is_out, cols, settings, update, max_iter):
    """Block coordinate descent sweeps shared by the forward and the adjoint solve (torch).

    ``X`` ``(B, N, k)`` is updated in place, one variable j (over ``cols``) at a time, as
    ``x_j <- update(j, s_j^T W - ||s_j||^2 x_j)``, where ``W = S X`` is kept current by a
    rank-one update. ``W2`` is W laid out as ``(m, B*k)`` so both steps are single BLAS
    calls (a GEMV and a GER) whatever the batch size. ``update`` returns the new x_j and
    the weight ``w_j`` ``(B,)`` that turns its move into a decrease of the objective,
    ``w_j ||dx_j||^2`` (the stopping test, module docstring). A batch element stops
    (its vectors are frozen, so its result does not depend on the rest of the batch) once
    the test passes. Returns (status_code, residual, steps).
    """
    B, _, k = X.shape
    dev = X.device
    out_f = is_out.to(X.dtype)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    residual = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    delta0 = torch.zeros(B, dtype=torch.float64, device=dev)
    for t in range(max_iter):
        act_f = active.to(X.dtype)
        delta = torch.zeros(B, dtype=torch.float64, device=dev)
        for j in cols:
            s = St[j]
            xj = X[:, j]
            # sum_{i != j} c_ji x_i  with  C = S^T S
            field = torch.mv(W2.t(), s).view(B, k) - sq[j] * xj
            new, weight = update(j, field)
            dx = (new - xj) * (out_f[:, j] * act_f).unsqueeze(1)
            W2.addr_(s, dx.reshape(-1))
            xj += dx
            delta += (weight * (dx * dx).sum(dim=1)).double()
        steps += active.long()
        if t == 0:
            delta0 = delta
            rel = (delta0 > 0).double()
            done = delta0 == 0  # nothing moved: an exact fixed point
        else:
            rel = delta / delta0
            done = rel < settings.eps
        residual = torch.where(active, rel, residual)
        converged = converged | (active & done)
        active = active & ~done
        if not bool(active.any()):
            break
    return _status(X, converged, residual), residual, steps


def _status(X, converged, residual):
    finite = torch.isfinite(X).flatten(1).all(dim=1) & torch.isfinite(residual)
    code = torch.where(converged, Status.CONVERGED.code, Status.MAX_STEPS.code).long()
    return torch.where(finite, code, torch.full_like(code, Status.NONFINITE.code))


def _compiled(settings, X) -> str | None:
    """Which compiled kernels run this solve: "numba" (CPU, `satnet_kernels`), "cuda"
    (`satnet_kernels_cuda`), or None (the torch loop)."""
    if settings.backend == "torch":
        return None
    real = X.dtype in (torch.float32, torch.float64)
    if settings.backend == "cuda" or (settings.backend == "auto" and X.device.type == "cuda"):
        # under numba's simulator the kernel also runs on CPU tensors (tests)
        ok = real and satnet_kernels_cuda.available() and (X.device.type == "cuda" or satnet_kernels_cuda.simulated())
        if settings.backend == "cuda" and not ok:
            raise ConfigError(f"backend='cuda' needs numba.cuda with a GPU and a float32/float64 CUDA tensor, "
                              f"got {X.dtype} on {X.device}")
        return "cuda" if ok else None
    ok = X.device.type == "cpu" and real and satnet_kernels.available()
    if settings.backend == "numba" and not ok:
        raise ConfigError(
            f"backend='numba' needs numba installed and a float32/float64 CPU tensor, got {X.dtype} on {X.device}"
        )
    return "numba" if ok else None


def _compiled_sweeps(kind, forward, St, sq, X, W2, is_out, cols, settings, max_iter, V=None, rhs=None, gn=None):
    """The same sweeps in the compiled kernels; W2 ``(m, B*k)`` in, updated W ``(B, m, k)`` out.
    Each element visits its own unknowns in the order of ``cols``, as the torch loop does."""
    B, N, k = X.shape
    W = _from_w2(W2, B, k).contiguous()
    idx, ptr = satnet_kernels.unknown_index(is_out.cpu(), cols)
    run = satnet_kernels_cuda.run_sweeps if kind == "cuda" else satnet_kernels.run_sweeps
    # the forward does not read V, rhs, gn: small placeholders, never aliases of X (a
    # simulated or copied launch would write an alias back over X)
    ph = X.new_zeros((1, 1, 1))
    steps, residual, converged = run(
        forward, St, sq, X, W, idx, ptr,
        ph if V is None else V, ph if rhs is None else rhs, ph[0] if gn is None else gn,
        max_iter, settings.eps, _tiny(X.dtype),
    )
    return W, _status(X, converged, residual), residual, steps


def _to_w2(S, X):
    """W = S X per batch element, as ``(m, B*k)``."""
    B, N, k = X.shape
    return (S @ X.transpose(0, 1).reshape(N, B * k)).contiguous()


def _from_w2(W2, B, k):
    """``(m, B*k)`` -> ``(B, m, k)``."""
    return W2.view(-1, B, k).transpose(0, 1)


def _update_order(is_out, settings, generator) -> list[int]:
    """The variables the sweeps update (unknown in some element), in ``settings.order``.

    "random": a permutation of 1..N-1 drawn from ``generator`` (after the initial vectors,
    so those do not change with the order), filtered to the unknowns.
    """
    unknown = is_out.any(dim=0).cpu()
    if settings.order == "ascending":
        return torch.nonzero(unknown).flatten().tolist()
    dev = generator.device if generator is not None else is_out.device
    perm = torch.randperm(is_out.shape[1] - 1, generator=generator, device=dev).cpu() + 1
    return perm[unknown[perm]].tolist()


def mixing_forward(S, z, is_input, settings, generator):
    """Mixing method (paper Sec. 3.1): for each unknown o, ``v_o = -g_o / ||g_o||`` with
    ``g_o = Omega s_o - ||s_o||^2 v_o`` and ``Omega = V S^T``. Output
    ``z_o = arccos(-v_o^T v_T) / pi``.

    Returns (z_out ``(B, n)``, V, Omega^T ``(B, m, k)``, r_perp, ||g|| ``(B, N)``,
    is_out ``(B, N)``, cols, code, residual, steps).
    """
    B, n = z.shape
    m, N = S.shape
    St = S.t().contiguous()
    sq = (St * St).sum(dim=1)
    V, r_perp = init_vectors(z, is_input, N, settings.k, generator)
    is_out = torch.ones((B, N), dtype=torch.bool, device=z.device)
    is_out[:, 0] = False
    is_out[:, 1 : n + 1] = ~is_input
    cols = _update_order(is_out, settings, generator)
    W2 = _to_w2(S, V)  # Omega^T per element, laid out (m, B*k)
    tiny = _tiny(z.dtype)

    def update(j, g):
        gn = g.norm(dim=1, keepdim=True)
        # a variable with no interaction (g = 0) keeps its vector rather than becoming 0
        return torch.where(gn > tiny, -g / gn.clamp_min(tiny), V[:, j]), gn.squeeze(1)

    kind = _compiled(settings, V)
    if kind:
        W, code, residual, steps = _compiled_sweeps(kind, True, St, sq, V, W2, is_out, cols, settings,
                                                     settings.max_iter)
    else:
        code, residual, steps = _sweeps(St, sq, V, W2, is_out, cols, settings, update, settings.max_iter)
        W = _from_w2(W2, B, settings.k)
    g_all = torch.matmul(St, W) - sq.view(1, N, 1) * V
    g_norm = g_all.norm(dim=2)
    z_solved = torch.arccos((-V[:, 1 : n + 1, 0]).clamp(-1.0, 1.0)) / math.pi
    z_out = torch.where(is_input, z, z_solved)
    return z_out, V, W, r_perp, g_norm, is_out, cols, code, residual, steps


def mixing_backward(S, z, is_input, dz, V, W, r_perp, g_norm, is_out, cols, settings):
    """Analytic backward pass (paper Sec. 3.2).

    With ``P_o = I - v_o v_o^T`` and ``w_o = dl/dv_o = dl/dz_o * v_T / (pi sin(pi z_o))``,
    the adjoint ``U`` (``u_o`` tangent at ``v_o``, zero for known variables) solves, by
    the same coordinate descent,

        ||g_o|| u_o + P_o sum_{j in O, j != o} c_oj u_j = P_o w_o,
        i.e.  u_o = P_o (w_o - (Psi s_o - ||s_o||^2 u_o)) / ||g_o||,   Psi = U S^T.

    Then ``dl/dS = -(Psi^T V + Omega^T U)`` and, for known i,
    ``dl/dv_i = -Psi s_i``,  ``dl/dz_i = pi (sin(pi z_i) v_T + cos(pi z_i) r_i)^T dl/dv_i``.
    (The operator on the left is the Riemannian Hessian of the objective at the
    mixing fixed point, so coordinate descent on it converges at a local minimum.)

    Damping. On Sudoku at the paper's settings that Hessian is nearly singular (the
    forward itself creeps: 400 sweeps do not reach a relative decrease of 1e-8), and
    at the point where 40 sweeps stop it is slightly indefinite: undamped, the adjoint
    sweeps stall near a relative decrease of 1e-2 and then grow. With
    ``adjoint_damping = lambda`` the diagonal ``||g_o||`` becomes ``(1 + lambda) ||g_o||``,
    a proximal term per variable scaled by its own curvature, so the gradient does not
    depend on the scale of S. The reference code adds an absolute ``prox_lam = 1e-2``
    to ``||g_o||``; at its initial scale of S (median ``||g_o||`` near 0.19) that is
    ``lambda`` near 0.05, which makes the adjoint converge in about 30 sweeps. The
    gradient is then that of the damped system (biased, as the paper's is); use 0 for
    the exact one.

    Solver (``settings.adjoint_solver``). ``"sweeps"`` is that coordinate descent, i.e.
    Gauss-Seidel, as the reference runs it; ``"cg"`` (default) solves the same symmetric
    system by preconditioned conjugate gradients (`gridlearn.implicit.satnet_adjoint_cg`),
    which needs about the square root as many iterations where the system is
    ill-conditioned, as it becomes while S trains, at the same cost per iteration.

    Returns (U, Psi ``(B, m, k)``, code, residual, steps) of the adjoint solve.
    """
    B, n = z.shape
    m, N = S.shape
    dt = z.dtype
    tiny = _tiny(dt)
    St = S.t().contiguous()
    sq = (St * St).sum(dim=1)
    vo = V[:, 1 : n + 1]
    # P_o v_T has norm sin(pi z_o): writing P_o w_o through its unit direction keeps the
    # right-hand side bounded when an output saturates at 0 or 1.
    t = -vo[..., :1] * vo
    t[..., 0] += 1.0
    t = t / t.norm(dim=2, keepdim=True).clamp_min(tiny)
    rhs = torch.zeros_like(V)
    rhs[:, 1 : n + 1] = (dz * (~is_input).to(dt) / math.pi).unsqueeze(2) * t
    U = torch.zeros_like(V)
    B_, _, k = V.shape
    Psi2 = torch.zeros((m, B_ * k), dtype=dt, device=V.device)  # (U S^T)^T, laid out (m, B*k)
    gn = (g_norm.clamp_min(tiny) * (1.0 + settings.adjoint_damping)).contiguous()

    if settings.adjoint_solver == "cg":
        return adjoint_cg(S, V, rhs, gn, is_out, settings.adjoint_iterations, settings.eps)

    def update(j, field):
        y = rhs[:, j] - field
        vj = V[:, j]
        y = y - (y * vj).sum(dim=1, keepdim=True) * vj
        return y / gn[:, j : j + 1], gn[:, j]

    kind = _compiled(settings, U)
    if kind:
        Psi, code, residual, steps = _compiled_sweeps(kind, False, St, sq, U, Psi2, is_out, cols, settings,
                                                      settings.adjoint_iterations, V, rhs, gn)
    else:
        code, residual, steps = _sweeps(St, sq, U, Psi2, is_out, cols, settings, update, settings.adjoint_iterations)
        Psi = _from_w2(Psi2, B_, k)
    return U, Psi, code, residual, steps


def gradients_from_adjoint(S, z, is_input, dz, V, W, r_perp, U, Psi):
    """dl/dz and dl/dS from the adjoint U (see `mixing_backward`)."""
    n = z.shape[1]
    dS = -(torch.einsum("bmk,bnk->mn", Psi, V) + torch.einsum("bmk,bnk->mn", W, U))
    dv = -torch.matmul(S.t(), Psi)[:, 1 : n + 1]  # (B, n, k)
    theta = math.pi * z
    dv_dz = torch.cos(theta).unsqueeze(2) * r_perp
    dv_dz[..., 0] += torch.sin(theta)
    dz_in = math.pi * (dv_dz * dv).sum(dim=2)
    # known variables' outputs are the inputs themselves: their gradient passes through
    dz_total = torch.where(is_input, dz + dz_in, torch.zeros_like(dz))
    return dz_total, dS


class MixingFunction(torch.autograd.Function):
    """autograd Function: forward = mixing method, backward = analytic adjoint solve."""

    @staticmethod
    def forward(ctx, z, S, is_input, settings, generator, adjoint_report):
        with torch.no_grad():
            z_out, V, W, r_perp, g_norm, is_out, cols, code, residual, steps = mixing_forward(
                S.detach(), z.detach(), is_input, settings, generator
            )
        ctx.settings = settings
        ctx.cols = cols
        ctx.adjoint_report = adjoint_report
        ctx.save_for_backward(S, z, is_input, V, W, r_perp, g_norm, is_out, code)
        ctx.mark_non_differentiable(code, residual, steps)
        return z_out, code, residual, steps

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz_out, _d_code, _d_residual, _d_steps):
        S, z, is_input, V, W, r_perp, g_norm, is_out, fwd_code = ctx.saved_tensors
        settings = ctx.settings
        dz_out = dz_out.contiguous()
        U, Psi, code, residual, steps = mixing_backward(
            S, z, is_input, dz_out, V, W, r_perp, g_norm, is_out, ctx.cols, settings
        )
        ok = (code == Status.CONVERGED.code) & (fwd_code == Status.CONVERGED.code)
        if ctx.adjoint_report is not None:
            # the caller's Solution.extras["adjoint"]: how the backward solve went, per element
            ctx.adjoint_report.update(status_code=code, residual=residual, steps=steps, gradient_given=ok)
        if settings.on_failure == "raise" and not bool(ok.all()):
            Solution(None, torch.where(code == Status.CONVERGED.code, fwd_code, code), residual, steps).raise_on_failure(
                "SATNet backward (adjoint coordinate descent)"
            )
        if settings.on_failure == "mask" and not bool(ok.all()):
            # no implicit gradient for an element whose fixed point or adjoint did not converge
            logger.warning(
                "SATNet: %d of %d batch elements did not converge (forward: %d, within max_iter=%d; adjoint: "
                "%d, within adjoint_max_iter=%d; eps=%g); they get a zero implicit gradient. Raise those, "
                "or pass on_failure='ignore' for the paper's fixed-iteration behaviour.",
                int((~ok).sum()), ok.numel(), int((fwd_code != Status.CONVERGED.code).sum()), settings.max_iter,
                int((code != Status.CONVERGED.code).sum()), settings.adjoint_iterations, settings.eps,
            )
            keep = ok.to(U.dtype).view(-1, 1, 1)
            U = U * keep
            Psi = Psi * keep
        dz, dS = gradients_from_adjoint(S, z, is_input, dz_out, V, W, r_perp, U, Psi)
        return dz, dS, None, None, None, None


__all__ = ["MixingSettings", "MixingFunction", "default_rank", "mixing_forward", "mixing_backward"]
