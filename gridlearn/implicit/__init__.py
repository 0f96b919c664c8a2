"""gridlearn.implicit: the domain-free core of implicit layers.

Layers whose output is defined by a condition (a root, a fixed point, an ODE end state,
a QP's KKT conditions, a MAXSAT SDP's mixing fixed point) and whose gradients come from
the implicit function theorem. Imports only torch, numpy and scipy.
"""

from gridlearn._lazy import lazy_exports

_EXPORTS = {
    "Status": "solution",
    "Solution": "solution",
    # fixed-point / root solvers
    "Picard": "solvers",
    "Anderson": "solvers",
    "Broyden": "solvers",
    "Newton": "solvers",
    # how the backward pass is taken
    "ImplicitAdjoint": "adjoint",
    "PhantomAdjoint": "adjoint",
    "UnrolledAdjoint": "adjoint",
    "fixed_point": "fixed_points",
    "fixed_point_solve": "fixed_points",
    "root_solve": "root",
    "implicit_root_grad": "root",
    "odeint_solve": "ode",
    "root_find": "root",
    "DEQ": "deq",
    "NeuralODE": "ode",
    "odeint": "ode",
    "QPLayer": "qp",
    "QPSettings": "qp",
    "solve_qp": "qp",
    "CvxpyLayer": "cvx",
    "SATNet": "satnet",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
