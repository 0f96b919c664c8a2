"""gridlearn.inverse: recover generator costs and branch admittances from published dispatch and prices.

Inverse AC-OPF (after Donti, Azevedo & Kolter 2018): `simulate_market` makes the
observations, `recover` fits unknown parameters by differentiating through the AC-OPF
(`gridlearn.grid.ACOPFLayer`), `kkt_residual_costs` is the convex KKT-residual baseline,
`identifiability_report` says which parameters the data determine, and `convergence` says
whether a fit may report them at all (`FitStatus`).
"""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "market": "Observations simulate_market",
    "design": "AdaptiveDesign",
    "params": "Unknown",
    "recovery": "recover InverseResult InverseSolver",
    "convergence": "FitStatus",
    "baseline": "kkt_residual_costs BaselineResult",
    "identifiability": "identifiability_report IdentifiabilityReport",
    "sensitivity": "observation_jacobian",
})
