#!/usr/bin/env bash
# Set up the virtualenv and run the test suite. Extra arguments go to pytest:
#     bash scripts/test.sh -k sql
set -euo pipefail
cd "$(dirname "$0")/.."

# A project-local virtualenv, created once and reused.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi

# torch first: pinned exactly here, so that the project's loose range (torch>=2.4,<2.14) is already met
# and pip never swaps it for another build while resolving the other dependencies.
.venv/bin/python -m pip install torch==2.13.0
# The project itself (editable) with the test tools and the ADBC drivers for the SQL tests.
.venv/bin/python -m pip install -e '.[dev,sql]'

# implicit warns, and slows down, when OpenBLAS starts its own thread pool.
export OPENBLAS_NUM_THREADS=1

# exec: pytest's exit status is the script's, so any failure, and "no tests collected" (5), fails the run.
exec .venv/bin/python -m pytest -q "$@"
