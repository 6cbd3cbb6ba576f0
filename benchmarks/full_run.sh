#!/usr/bin/env bash
# The full cold-start benchmark behind benchmarks/RESULTS.md: every protocol, K = 0,1,3,5,10,20, seeds 0-2
# and every system on the five shared logs, with the code's default config for recmaml's systems.
#     bash benchmarks/full_run.sh [OUT]        # default OUT: benchmarks/full-run
# Two lanes run side by side with one torch thread each (2 cores); finished cells under OUT are kept, so
# running it again resumes a stopped run. The results page is rebuilt from every cell at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RECMAML_VENV:-$ROOT/.venv}"  # e.g. another checkout's venv, with PYTHONPATH=$ROOT
# a copy of the code run with another checkout's venv: the editable install maps recmaml.connectors to that
# checkout's connectors/, so the copy gets its own (the package path is searched first)
if [ -n "${RECMAML_VENV:-}" ] && [ ! -e "$ROOT/recmaml/connectors" ]; then ln -s ../connectors "$ROOT/recmaml/connectors"; fi
OUT="${1:-$ROOT/benchmarks/full-run}"
DATA="${RECMAML_SHARED_DATA:-$ROOT/../shared/data}"  # e.g. when running a copy of the code kept elsewhere
export OPENBLAS_NUM_THREADS=1
# RECMAML_SYSTEMS picks systems (e.g. recmaml_maml,recmaml_0_steps: the code's defaults only) and
# RECMAML_BUDGET_SECONDS caps each meta-training (600: the defaults' own stopping decides on every log; Mult-VAE
# stops on its validation users, never on a budget).
SYSTEMS="${RECMAML_SYSTEMS:-all}"
BUDGET="${RECMAML_BUDGET_SECONDS:-600}"
run() { "$VENV/bin/recmaml" benchmark --data "$1" --name "$2" --support-sizes 0,1,3,5,10,20 --seeds 0,1,2 \
        --systems "$SYSTEMS" --budget-seconds "$BUDGET" --threads 1 --out "$OUT"; }
# CiaoDVD (17,615 users x 16,121 items) takes about as long as the other three together
lane1() { run "$DATA/movielens/ml-100k" ml-100k; run "$DATA/filmtrust" filmtrust;
          run "$DATA/movielens/ml-latest-small" ml-latest-small;
          run "$DATA/lastfm-hetrec2011" lastfm; }  # plays, no ratings or dates: the random protocol only
lane2() { run "$DATA/ciaodvd" ciaodvd; }
start=$(date +%s)
lane1 & pid1=$!
lane2 & pid2=$!
status=0
wait $pid1 || status=$?
wait $pid2 || status=$?
if [ -f "$DATA/movielens/ml-1m/ratings.dat" ]; then run "$DATA/movielens/ml-1m" ml-1m || status=$?; fi
echo "full run: $(( $(date +%s) - start )) s wall" >&2
"$VENV/bin/recmaml" benchmark --report-only --out "$OUT" --page "$ROOT/benchmarks/RESULTS.md"
exit $status
