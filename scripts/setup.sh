#!/usr/bin/env bash
# Create .venv (once) and install the project into it. Sourced by test.sh and quickstart.sh:
#     source scripts/setup.sh '[dev,sql]'      # the extras to install, or '' for none
# Sets ROOT (the repository) and leaves the caller's working directory as it was.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A project-local virtualenv, created once and reused.
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    python3 -m venv "$ROOT/.venv"
fi

# Skip pip when this venv was already set up from the same pyproject.toml with the same extras (a stamp
# of both): the install is editable, so code changes need no reinstall, only dependency changes do.
TORCH=torch==2.13.0
EXTRAS_NAME="$(echo "${1:-none}" | tr -c 'a-z0-9\n' '_')"  # one stamp per set of extras: [dev,sql] -> _dev_sql_
STAMP_FILE="$ROOT/.venv/.recmaml-setup-stamp$EXTRAS_NAME"
STAMP="$( (cat "$ROOT/pyproject.toml"; echo "$TORCH") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP_FILE" 2>/dev/null)" != "$STAMP" ]; then
    # torch first: pinned exactly here, so that the project's loose range (torch>=2.4,<2.14) is already
    # met and pip never swaps it for another build while resolving the other dependencies.
    "$ROOT/.venv/bin/python" -m pip install --quiet "$TORCH"
    # The project itself (editable), with the requested extras.
    "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT${1:-}"
    echo "$STAMP" > "$STAMP_FILE"
fi

# implicit warns, and slows down, when OpenBLAS starts its own thread pool.
export OPENBLAS_NUM_THREADS=1
