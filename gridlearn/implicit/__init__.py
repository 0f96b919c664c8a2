"""gridlearn.implicit: the domain-free core of implicit layers.

Layers whose output is defined by a condition (a root, a fixed point, an ODE end state,
a QP's KKT conditions, a MAXSAT SDP's mixing fixed point) and whose gradients come from
the implicit function theorem. Imports only torch, numpy and scipy.
"""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "solution": "Status Solution",
    "solvers": "Picard Anderson Broyden Newton",
    "adjoint": "ImplicitAdjoint PhantomAdjoint UnrolledAdjoint",
    "fixed_points": "fixed_point fixed_point_solve",
    "root": "root_solve implicit_root_grad root_find",
    "ode": "odeint_solve NeuralODE odeint",
    "deq": "DEQ",
    "qp": "QPLayer QPSettings solve_qp",
    "cvx": "CvxpyLayer",
    "satnet": "SATNet",
})
