"""gridlearn.grid: pandapower networks as typed per-unit tensors, and grid layers.

Differentiable AC power flow, a DC-OPF/dispatch layer on the QP layer, and AC-OPF in
Pyomo solved by Ipopt and differentiable through its KKT conditions.
"""

from gridlearn._lazy import lazy_exports

_EXPORTS = {
    "Network": "network",
    "load_case": "cases",
    "PowerFlowLayer": "powerflow",
    "DCOPFLayer": "dcopf",
    "solve_acopf": "acopf",
    "ACOPFLayer": "acopf_layer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
