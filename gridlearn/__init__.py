"""gridlearn: differentiable optimisation and implicit layers for power systems.

Subpackages (imports flow one way, left to right):
``implicit`` (domain-free) <- ``grid`` <- ``forecast``/``scopf``/``inverse`` <- studies, dashboards.
"""

from gridlearn._env import configure_pyomo_env

configure_pyomo_env()

__version__ = "0.1.0"
