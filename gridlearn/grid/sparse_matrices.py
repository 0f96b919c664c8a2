"""Sparse network matrices for the transmission-scale power flow: Ybus over a fixed pattern.

`matrices.ybus` is dense (n_bus² complex entries: 1.4 GB for case9241pegase); here Ybus is
kept as COO values over one pattern, computed in torch (so differentiable with respect
to every branch and shunt parameter and broadcast over a leading batch dimension), with
the same MATPOWER makeYbus conventions:

    Y_ff = (y_s + y_c/2) / |t|²,  Y_ft = −y_s / conj(t),  Y_tf = −y_s / t,  Y_tt = y_s + y_c/2,
    Y_ii += (g_s + j b_s) / base_mva   (bus shunts)

The pattern holds every branch end pair and every diagonal (explicitly, even where the
value is zero) so the power flow Jacobian, whose diagonal is always structurally nonzero,
shares it. Memory is O(n_bus + n_branch) per scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from gridlearn.grid.matrices import branch_admittances

if TYPE_CHECKING:
    from gridlearn.grid.network import Network


@dataclass(frozen=True)
class SparseYbus:
    """Ybus as ``values[..., k]`` at ``(rows[k], cols[k])``; ``diag[i]`` is the position of (i, i).

    rows, cols, diag: long tensors (nnz,), (nnz,), (n_bus,); values: complex (..., nnz).
    ``rows_np``/``cols_np`` are the same indices as numpy arrays for the SciPy solver.
    """

    n_bus: int
    rows: Tensor
    cols: Tensor
    diag: Tensor
    values: Tensor
    rows_np: np.ndarray
    cols_np: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[0])

    def matvec(self, v: Tensor) -> Tensor:
        """I = Y V for v complex (B, n_bus) -> (B, n_bus); differentiable in values and v."""
        contrib = self.values * v[..., self.cols]
        out = torch.zeros(*contrib.shape[:-1], self.n_bus, dtype=contrib.dtype, device=contrib.device)
        return out.index_add(-1, self.rows, contrib)

    def to_dense(self) -> Tensor:
        """Dense (..., n, n) copy, for tests on small cases only."""
        out = torch.zeros(*self.values.shape[:-1], self.n_bus * self.n_bus, dtype=self.values.dtype,
                          device=self.values.device)
        return out.index_add(-1, self.rows * self.n_bus + self.cols, self.values).unflatten(-1, (self.n_bus, self.n_bus))


def _pattern(n_bus: int, f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (row, col) keys of [ff, ft, tf, tt, diagonal], and where each source entry lands."""
    diag = np.arange(n_bus)
    r = np.concatenate([f, f, t, t, diag])
    c = np.concatenate([f, t, f, t, diag])
    keys, inverse = np.unique(r * n_bus + c, return_inverse=True)
    return keys // n_bus, keys % n_bus, inverse


def sparse_ybus(network: "Network", scale: Tensor | None = None) -> SparseYbus:
    """The complex bus admittance matrix of `matrices.ybus`, in COO form (see the module docstring)."""
    nb = network.n_bus
    f_np = network.branch.from_bus.detach().cpu().numpy()
    t_np = network.branch.to_bus.detach().cpu().numpy()
    rows_np, cols_np, inverse = _pattern(nb, f_np, t_np)
    yff, yft, ytf, ytt = branch_admittances(network, scale)
    ysh = (torch.complex(network.bus.gs_mw, network.bus.bs_mvar) / network.base_mva).to(yff.dtype)
    lead = torch.broadcast_shapes(yff.shape[:-1], ysh.shape[:-1])
    parts = [p.expand(*lead, p.shape[-1]) for p in (yff, yft, ytf, ytt, ysh)]
    src = torch.cat(parts, dim=-1)
    dev = src.device
    inv = torch.as_tensor(inverse, device=dev)
    values = torch.zeros(*lead, len(rows_np), dtype=src.dtype, device=dev).index_add(-1, inv, src)
    rows = torch.as_tensor(rows_np, device=dev)
    cols = torch.as_tensor(cols_np, device=dev)
    diag_np = np.searchsorted(rows_np * nb + cols_np, np.arange(nb) * (nb + 1))
    return SparseYbus(n_bus=nb, rows=rows, cols=cols, diag=torch.as_tensor(diag_np, device=dev), values=values,
                      rows_np=rows_np, cols_np=cols_np)


def dc_bbus_csc(network: "Network") -> sp.csc_matrix:
    """MATPOWER makeBdc's B_bus (b = 1/(x·tap), resistance and shunts ignored) as SciPy CSC.

    Uses the network's first scenario when its reactances are batched (it only seeds the
    Newton start, as in the dense path).
    """
    br = network.branch
    x, tap = br.x_pu.detach(), br.tap.detach()
    b = (1.0 / (x * tap)).reshape(-1, x.shape[-1])[0].cpu().numpy()
    f = br.from_bus.cpu().numpy()
    t = br.to_bus.cpu().numpy()
    nb = network.n_bus
    r = np.concatenate([f, t, f, t])
    c = np.concatenate([f, t, t, f])
    v = np.concatenate([b, b, -b, -b])
    return sp.csc_matrix((v, (r, c)), shape=(nb, nb))


__all__ = ["SparseYbus", "sparse_ybus", "dc_bbus_csc"]
