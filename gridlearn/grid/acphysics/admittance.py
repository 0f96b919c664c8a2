"""Branch pi-model admittances in real arithmetic (MATPOWER makeYbus), for every backend."""

from __future__ import annotations

from typing import Any, Callable


def pi_admittance_parts(r, x, g, b, tap, shift, cos: Callable, sin: Callable) -> dict[str, Any]:
    """Real and imaginary parts of the branch pi-model admittances (MATPOWER makeYbus).

    ``y_s = 1/(r + j x)``, ``t = tap e^{j shift}``, ``Y_tt = y_s + (g + j b)/2``,
    ``Y_ff = Y_tt/tap^2``, ``Y_ft = -y_s/conj(t)``, ``Y_tf = -y_s/t``. Returns the keys
    ``g_ff, b_ff, g_ft, b_ft, g_tf, b_tf, g_tt, b_tt`` (per unit, elementwise). Written with
    real arithmetic so that torch.func can differentiate it twice.
    """
    z2 = r * r + x * x
    gs, bs = r / z2, -x / z2
    c, s = cos(shift), sin(shift)
    g_tt, b_tt = gs + g / 2, bs + b / 2
    return {
        "g_tt": g_tt,
        "b_tt": b_tt,
        "g_ff": g_tt / (tap * tap),
        "b_ff": b_tt / (tap * tap),
        "g_ft": -(gs * c - bs * s) / tap,
        "b_ft": -(gs * s + bs * c) / tap,
        "g_tf": -(gs * c + bs * s) / tap,
        "b_tf": -(bs * c - gs * s) / tap,
    }
