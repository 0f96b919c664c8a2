"""`gridlearn doctor`: versions, devices and two real checks (Ipopt HS071, pandapower case9)."""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from typing import Callable

HS071_OBJECTIVE = 17.0140173  # Hock & Schittkowski (1981), problem 71


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import failure as a finding
        return f"not importable ({type(exc).__name__}: {exc})"
    return str(getattr(mod, "__version__", "unknown"))


def versions() -> dict[str, str]:
    from gridlearn.solvers import ipopt_version

    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "scipy", "pandapower", "pyomo", "cvxpy", "cvxpylayers"):
        out[name] = _version(name)
    out["ipopt"] = ipopt_version() or "not installed"
    return out


def devices() -> list[str]:
    import torch

    devs = ["cpu"]
    if torch.cuda.is_available():
        devs += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


def check_ipopt() -> Check:
    from gridlearn.solvers import solve_hs071

    try:
        obj = solve_hs071()
    except Exception as exc:  # noqa: BLE001
        return Check("Ipopt via Pyomo (HS071)", False, f"Ipopt could not solve HS071: {exc}")
    ok = abs(obj - HS071_OBJECTIVE) <= 1e-6 * HS071_OBJECTIVE
    return Check("Ipopt via Pyomo (HS071)", ok, f"objective {obj:.7f} (expected {HS071_OBJECTIVE})")


def check_pandapower() -> Check:
    try:
        import pandapower as pp
        import pandapower.networks as pn

        net = pn.case9()
        pp.runpp(net)
        vmin = float(net.res_bus.vm_pu.min())
        return Check("pandapower power flow (case9)", bool(net.converged), f"converged, min vm_pu {vmin:.4f}")
    except Exception as exc:  # noqa: BLE001
        return Check("pandapower power flow (case9)", False, f"pandapower could not run case9: {exc}")


CHECKS: list[Callable[[], Check]] = [check_ipopt, check_pandapower]


def run_doctor(echo: Callable[[str], None] = print) -> bool:
    echo("gridlearn doctor")
    for name, ver in versions().items():
        echo(f"  {name:<12} {ver}")
    echo(f"  devices      {', '.join(devices())}")
    results = [check() for check in CHECKS]
    for c in results:
        echo(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    healthy = all(c.ok for c in results)
    echo("healthy" if healthy else "unhealthy: see the FAIL lines above")
    return healthy
