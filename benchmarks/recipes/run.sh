#!/usr/bin/env bash
# One recipe experiment of benchmarks/EXPERIMENTS.md: recmaml_maml (and popularity, for K = 0) on one log
# and seed, K = 0 and 5, a 60 s training budget, one torch thread; cells under OUT/VARIANT.
#     bash benchmarks/recipes/run.sh v4 ml-100k ../shared/data/movielens/ml-100k 0 random,temporal [OUT]
# v0 is the code's defaults (no --config). Compare the cells with the full run's baselines of the same
# seed (benchmarks/full-run/cells/<data>/<protocol>/seed<N>/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
V=$1; NAME=$2; DATA=$3; SEEDS=${4:-0}; PROTO=${5:-random,temporal}; OUT=${6:-$ROOT/runs/recipes}
CONFIG=()
if [ "$V" != v0 ]; then CONFIG=(--config "$ROOT/benchmarks/recipes/$V.toml"); fi
OPENBLAS_NUM_THREADS=1 "$ROOT/.venv/bin/recmaml" --quiet benchmark --data "$DATA" --name "$NAME" --protocol "$PROTO" \
    --support-sizes 0,5 --seeds "$SEEDS" --systems recmaml_maml,popularity "${CONFIG[@]}" --budget-seconds 60 --threads 1 \
    --out "$OUT/$V"
