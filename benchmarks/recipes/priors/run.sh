#!/usr/bin/env bash
# The serving priors' probe (issue 19): the code's defaults, recmaml_maml and recmaml_0_steps, on every
# shared log, seeds 0-2, random and temporal protocols (FilmTrust: random; it has no timestamps). Two lanes
# side by side with one torch thread each: CiaoDVD alone in one, the other three logs in the other.
#     bash benchmarks/recipes/priors/run.sh OUT
# RECMAML_VENV: the venv to run (e.g. the main checkout's, running a copy of the code with PYTHONPATH set).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
VENV="${RECMAML_VENV:-$ROOT/.venv}"
# a copy of the code run with another checkout's venv: the editable install maps recmaml.connectors to that
# checkout's connectors/, so the copy gets its own (the package path is searched first)
if [ -n "${RECMAML_VENV:-}" ] && [ ! -e "$ROOT/recmaml/connectors" ]; then ln -s ../connectors "$ROOT/recmaml/connectors"; fi
DATA="${RECMAML_SHARED_DATA:-$ROOT/../shared/data}"
OUT="$1"
export OPENBLAS_NUM_THREADS=1
run() {  # name, folder, seed, protocols
  "$VENV/bin/python" -m recmaml benchmark --data "$2" --name "$1" --protocol "$4" --support-sizes 0,1,3,5,10,20 \
      --seeds "$3" --systems recmaml_maml,recmaml_0_steps --budget-seconds 900 --threads 1 --out "$OUT" --quiet \
      || echo "failed: $1 seed $3" >&2
  echo "$(date +%H:%M:%S) done $1 seed $3" >&2
}
lane1() { for seed in 0 1 2; do run ciaodvd "$DATA/ciaodvd" "$seed" random,temporal; done; }
lane2() {
  for seed in 0 1 2; do
    run ml-100k "$DATA/movielens/ml-100k" "$seed" random,temporal
    run filmtrust "$DATA/filmtrust" "$seed" random
    run ml-latest-small "$DATA/movielens/ml-latest-small" "$seed" random,temporal
  done
}
lane1 & lane2 & wait
