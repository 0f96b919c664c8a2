"""A batched, differentiable AC-OPF interior point in torch (issue 20), with Ipopt as its reference.

``problem``: the batched NLP from `acphysics.ACPolar`; ``kkt``: dense batched KKT assembly,
LDLᵀ and inertia correction; ``ipm``: the primal-dual iteration; ``solve``:
`solve_acopf_batched`, results and the implicit-function backward.
"""

from gridlearn.grid.acopf_ipm.ipm import IPMOptions
from gridlearn.grid.acopf_ipm.solve import BatchedACOPFResult, solve_acopf_batched

__all__ = ["BatchedACOPFResult", "IPMOptions", "solve_acopf_batched"]
