"""How much a Mult-VAE serving prior could add, at most: the shipped fit's served scores of the benchmark's
cold users plus w x a few-shot Mult-VAE's (per-user z-scores), w chosen on those same test users (so an
upper bound: a weight fit chose on its validation users would do no better on average).

    PYTHONPATH=. python benchmarks/recipes/calibration/vae_ceiling.py --data ml-100k --seeds 0,1,2 --out runs/vae-ceiling

The Mult-VAE is the benchmark's (input_items (1, 50), liked rows) trained on the warm users until the
benchmark's validation users stop improving, refitted on every warm user for those epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import pending_cells  # noqa: E402
from recmaml.baselines import MultVAE  # noqa: E402
from recmaml.benchmark import FittedMeta, _Baseline, _zscored, ranking_cell, validation_value  # noqa: E402
from recmaml.config import Config  # noqa: E402
from recmaml.recommender import MetaRecommender  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/vae-ceiling"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    for name, seed, threshold, splits, path in pending_cells(args):
        first = next(iter(splits.values()))
        params = dict(input_items=(1, 50), threshold=threshold, anneal_steps=500, seed=0)
        tuned = MultVAE(epochs=2000, max_seconds=None, **params).fit(
            first.val_warm, validate=lambda m: validation_value(_Baseline(m), first.val, "random", False, threshold))
        vae = MultVAE(epochs=tuned.best_epochs, max_seconds=None, **params).fit(first.warm)
        rec = MetaRecommender(Config().replace(meta={"max_seconds": 900.0})).fit(first.warm, progress=False)
        result = {"data": name, "seed": seed, "vae_epochs": tuned.best_epochs, "cells": {}}
        for protocol, sp in splits.items():
            served = FittedMeta(rec).for_protocol(protocol)
            for k, split in sp.test.items():
                base = _zscored(served.scores(split))
                prior = _zscored(_Baseline(vae).scores(split))
                values = {w: ranking_cell(base + np.float32(w) * prior, split, threshold, full=False)["ndcg@20"]
                          for w in WEIGHTS}
                values["vae_alone"] = ranking_cell(prior, split, threshold, full=False)["ndcg@20"]
                result["cells"][f"{protocol}/{k}"] = values
                print(name, seed, protocol, k, {w: round(v, 4) for w, v in values.items()}, flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
