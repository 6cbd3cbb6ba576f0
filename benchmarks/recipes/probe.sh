# Shared by the recipe probes (history/run.sh, time/run.sh): sourced, not run. Sets ROOT and DATA and
# defines data_path (a shared log's name to its folder) and probe, which runs `recmaml benchmark` for one
# candidate (a config under RECIPES, or the code's defaults) with recmaml's default system only:
#     probe OUT CANDIDATE DATA_NAME SEED PROTOCOLS BUDGET_SECONDS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${RECMAML_SHARED_DATA:-$ROOT/../shared/data}"
export OPENBLAS_NUM_THREADS=1
data_path() { case "$1" in ml-100k|ml-latest-small) echo "$DATA/movielens/$1";; *) echo "$DATA/$1";; esac; }
probe() {
  local out=$1 cand=$2 data=$3 seed=$4 protocols=$5 budget=$6 config=()
  [ "$cand" = defaults ] || config=(--config "$RECIPES/$cand.toml")
  "$ROOT/.venv/bin/recmaml" benchmark --data "$(data_path "$data")" --name "$data" --protocol "$protocols" \
      --support-sizes 0,1,3,5,10,20 --seeds "$seed" --systems recmaml_maml --budget-seconds "$budget" --threads 1 \
      "${config[@]}" --out "$out/$cand" --quiet || echo "failed: $data $cand seed $seed" >&2
}
