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

_EXPORTS = {
    "ElementSpace": "outages",
    "project_capped_simplex": "outages",
    "islanded_load": "outages",
    "classify_islands": "outages",
    "IslandSplit": "outages",
    "near_cut_sets": "candidates",
    "certify_worst": "certificate",
    "certify_bnb": "branch_and_bound",
    "Certificate": "certificate",
    "DCContingencyModel": "dc",
    "ACContingencyModel": "ac",
    "exact_violation": "violation",
    "smooth_violation": "violation",
    "base_dispatch": "dispatch",
    "attack_contingencies": "attack",
    "AttackResult": "attack",
    "enumerate_contingencies": "enumeration",
    "defend": "defence",
    "DefenceResult": "defence",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
