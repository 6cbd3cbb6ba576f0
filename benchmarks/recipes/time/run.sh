#!/usr/bin/env bash
# The time-prior decision (quality issue, section 3): the defaults against the same without the time
# prior, on the same splits with the same budget, as `recmaml fit` ships them. Cells go to OUT/<candidate>/.
#     bash benchmarks/recipes/time/run.sh OUT "ml-latest-small ml-100k" "0 1 2" [CANDIDATES]
RECIPES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$RECIPES/../probe.sh"
OUT="$1"; DATASETS="$2"; SEEDS="$3"; CANDIDATES="${4:-defaults notime}"
for seed in $SEEDS; do
  for data in $DATASETS; do
    for cand in $CANDIDATES; do
      probe "$OUT" "$cand" "$data" "$seed" random,temporal 0
    done
  done
done
