#!/usr/bin/env bash
# The history-kind decision (quality issue, section 2): the defaults (mixed orders, conditioned on the kind
# of history) against the same without the kind input and against models specialized for each kind, every
# candidate on the same splits with the same budget, as `recmaml fit` ships them (serving scales chosen by
# fit). Cells go to OUT/<candidate>/cells/...; finished cells are kept, so running it again resumes.
#     bash benchmarks/recipes/history/run.sh OUT "ml-100k ml-latest-small filmtrust" "0 1 2" [CANDIDATES]
RECIPES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$RECIPES/../probe.sh"
OUT="$1"; DATASETS="$2"; SEEDS="$3"; CANDIDATES="${4:-defaults random temporal}"
# a specialized model is measured on the protocol it is specialized for
protocols_of() { case "$1:$2" in filmtrust:*|*:random) echo random;; *:temporal) echo temporal;; *) echo random,temporal;; esac; }
for seed in $SEEDS; do
  for data in $DATASETS; do
    for cand in $CANDIDATES; do
      if [ "$data:$cand" = filmtrust:temporal ]; then continue; fi  # no timestamps: nothing to specialize for
      probe "$OUT" "$cand" "$data" "$seed" "$(protocols_of "$data" "$cand")" 600
    done
  done
done
