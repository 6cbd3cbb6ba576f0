#!/usr/bin/env bash
# Set up the virtualenv and run the test suite. Extra arguments go to pytest:
#     bash scripts/test.sh -k sql
set -euo pipefail
# the test tools and the ADBC drivers for the SQL tests (RECMAML_EXTRAS adds others, e.g. '[dev,sql,spark]'
# for the Spark tests: bash scripts/test.sh -m "spark or distributed")
source "$(dirname "$0")/setup.sh" "${RECMAML_EXTRAS:-[dev,sql]}"
cd "$ROOT"

# exec: pytest's exit status is the script's, so any failure, and "no tests collected" (5), fails the run.
exec .venv/bin/python -m pytest -q "$@"
