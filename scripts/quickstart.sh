#!/usr/bin/env bash
# Set up the virtualenv and run the main job end to end: meta-train on MovieLens-100K's warm users,
# adapt to the held-out cold users, write their ranked lists and print the metrics next to popularity,
# ALS fold-in, EASE and Mult-VAE. Extra arguments go to `recmaml quickstart` (e.g. --data DIR, --out DIR); relative
# paths are taken from where you run this, and the default output is runs/quickstart there.
set -euo pipefail
source "$(dirname "$0")/setup.sh" ''

exec "$ROOT/.venv/bin/recmaml" quickstart "$@"
