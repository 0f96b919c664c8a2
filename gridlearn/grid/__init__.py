"""gridlearn.grid: pandapower networks as typed per-unit tensors, and grid layers.

Differentiable AC power flow, a DC-OPF/dispatch layer on the QP layer, and AC-OPF in
Pyomo solved by Ipopt and differentiable through its KKT conditions.
"""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "network": "Network",
    "from_pandapower": "network_from_pandapower",
    "cases": "load_case",
    "powerflow": "PowerFlowLayer",
    "dcopf": "DCOPFLayer",
    "acopf": "solve_acopf",
    "acopf_layer": "ACOPFLayer",
})
