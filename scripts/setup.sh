#!/usr/bin/env bash
# Idempotent environment setup for gridlearn: system packages, .venv, Python deps, Ipopt via PyNumero.
# Run by `make test` and `make demo`; safe to run again (each step checks before it acts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.gridlearn-setup-ok"
PY=${PYTHON:-python3}

# Re-run when the dependency list or this script changes.
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

# --- system packages -------------------------------------------------------
# libamplsolver-dev + cmake + g++: build Pyomo's PyNumero ASL library (Ipopt route).
# chromium: the dashboard's end-to-end test (Playwright can't download its own browser here).
apt_pkgs=(libamplsolver-dev cmake g++ chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/gridlearn-apt.log 2>&1 \
      || { echo "[setup] apt-get failed; see /tmp/gridlearn-apt.log" >&2; exit 1; }
  else
    echo "[setup] missing system packages: ${missing[*]}" >&2
    echo "[setup] run as root, or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

# --- virtual environment ---------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# torch first: the CPU wheel on these machines; anything else would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch"
  "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi
echo "[setup] installing gridlearn[dev,dashboard,ray] (editable)"
"${PIP[@]}" -e ".[dev,dashboard,ray]"
# qpth is a benchmark peer only; its numpy<2 pin is wrong for 0.0.18, which works with numpy 2.
"${PIP[@]}" --no-deps "qpth==0.0.18"
# MOREAU backend for cvxpylayers: a benchmark peer and optional reference solver.
"${PIP[@]}" moreau || echo "[setup] moreau unavailable; benchmarks will skip it"

# --- Ipopt through Pyomo's PyNumero ----------------------------------------
export PYOMO_CONFIG_DIR="$VENV/pyomo"
if [ ! -f "$PYOMO_CONFIG_DIR/lib/libpynumero_ASL.so" ]; then
  echo "[setup] building PyNumero ASL library into $PYOMO_CONFIG_DIR"
  mkdir -p "$PYOMO_CONFIG_DIR"
  "$VENV/bin/python" -m pyomo.contrib.pynumero.build -DBUILD_AMPLASL_IF_NEEDED=OFF \
    -DASL_INCLUDE_DIR=/usr/include/ampl-netlib-solvers \
    -DASL_LIBRARY=/usr/lib/x86_64-linux-gnu/libamplsolver.so >"$VENV/pynumero-build.log" 2>&1 \
    || { echo "[setup] PyNumero build failed; see $VENV/pynumero-build.log" >&2; exit 1; }
fi

echo "$want" > "$STAMP"
echo "[setup] environment ready: $VENV"
