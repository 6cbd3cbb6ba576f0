#!/usr/bin/env bash
# The time-prior decision (quality issue, section 3): the defaults against the same without the time
# prior, on the same splits with the same budget, as `recmaml fit` ships them. Cells go to OUT/<candidate>/.
#     bash benchmarks/recipes/time/run.sh OUT "ml-latest-small ml-100k" "0 1 2" [CANDIDATES]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="$1"; DATASETS="$2"; SEEDS="$3"; CANDIDATES="${4:-defaults notime}"
DATA="${RECMAML_SHARED_DATA:-$ROOT/../shared/data}"
export OPENBLAS_NUM_THREADS=1
path_of() { case "$1" in ml-100k|ml-latest-small) echo "$DATA/movielens/$1";; *) echo "$DATA/$1";; esac; }
for seed in $SEEDS; do
  for data in $DATASETS; do
    for cand in $CANDIDATES; do
      config=(); [ "$cand" = defaults ] || config=(--config "$ROOT/benchmarks/recipes/time/$cand.toml")
      "$ROOT/.venv/bin/recmaml" benchmark --data "$(path_of "$data")" --name "$data" --protocol random,temporal \
          --k 0,1,3,5,10,20 --seeds "$seed" --systems recmaml_maml --budget-seconds 0 --threads 1 \
          "${config[@]}" --out "$OUT/$cand" --quiet || echo "failed: $data $cand seed $seed" >&2
    done
  done
done
