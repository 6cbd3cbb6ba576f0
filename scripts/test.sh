#!/usr/bin/env bash
# Set up the virtualenv and run the test suite. Extra arguments go to pytest:
#     bash scripts/test.sh -k sql
set -euo pipefail
# the test tools and the ADBC drivers for the SQL tests
source "$(dirname "$0")/setup.sh" '[dev,sql]'
cd "$ROOT"

# exec: pytest's exit status is the script's, so any failure, and "no tests collected" (5), fails the run.
exec .venv/bin/python -m pytest -q "$@"
