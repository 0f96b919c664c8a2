"""gridlearn.scopf: adversarial N-k contingency attacks, enumeration and a defence.

An outage vector alpha in [0, 1]^(n_branch + n_gen) scales branch admittances and
generator capacities by (1 - alpha); the attacker maximises post-contingency overload
over the capped simplex {sum alpha <= k} by projected gradient ascent through the
differentiable power flow, then rounds to discrete outage sets scored exactly, adds the
LODF near-cut sets the gradient cannot see (`candidates`), enumerates instead when that
is cheaper, and bounds the worst violation by LODF branch-and-bound over the enumeration
(`branch_and_bound`; the DC interdiction MILP of `certificate` is the alternative): every
DC result says "certified worst" or "best found, gap X MW".
"""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "outages": "ElementSpace project_capped_simplex islanded_load classify_islands IslandSplit",
    "candidates": "near_cut_sets",
    "certificate": "certify_worst Certificate",
    "branch_and_bound": "certify_bnb",
    "dc": "DCContingencyModel",
    "ac": "ACContingencyModel",
    "violation": "exact_violation smooth_violation",
    "dispatch": "base_dispatch",
    "attack": "attack_contingencies AttackResult",
    "enumeration": "enumerate_contingencies",
    "defence": "defend DefenceResult",
})
