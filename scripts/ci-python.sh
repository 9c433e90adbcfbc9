#!/usr/bin/env bash
# Tests the Python client (clients/python) against a real server: makes a virtualenv, installs the
# package with its test extras, runs pytest. The suite starts `forge-overlay serve` itself.
#
#   FORGE_OVERLAY_BIN       the server binary [default: target/debug/forge-overlay]
#   FORGE_PYTHON_VENV       where the virtualenv goes [default: a temporary directory, removed after]
#   PYTHON                  the interpreter that makes it, 3.10 or newer [default: python3]
#
# Arguments go to pytest (e.g. `scripts/ci-python.sh -k retries -x`).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FORGE_OVERLAY_BIN="${FORGE_OVERLAY_BIN:-$repo/target/debug/forge-overlay}"
if [[ ! -x "$FORGE_OVERLAY_BIN" ]]; then
    echo "no server binary at $FORGE_OVERLAY_BIN (cargo build --bin forge-overlay, or set FORGE_OVERLAY_BIN)" >&2
    exit 1
fi

venv="${FORGE_PYTHON_VENV:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)"
    trap 'rm -rf "$venv"' EXIT
fi
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "$repo/clients/python[test]"

cd "$repo/clients/python"
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
