"""Does starting from an existing implicit ALS model help? Item embeddings from random vs from ALS factors.

    .venv/bin/python benchmarks/als_init.py                   # random cold-start protocol, seeds 0 1 2
    .venv/bin/python benchmarks/als_init.py --seeds 3 --first-seed 100 --json als_init.json

On the cold-start protocol of quick_quality.py (MovieLens-100K, 20% cold users revealing 5 random
ratings, nDCG@20 over the catalog, relevant = hidden ratings >= 4), the same config (configs/ml-100k.toml)
is meta-trained twice per split seed:
  random: item embeddings start random (model.item_init = "random");
  als:    a job's existing implicit ALS model (implicit.cpu.als.AlternatingLeastSquares, fitted here on
          the warm users as such a job would) hands its item_factors, with its item ids, to
          MetaRecommender.fit(warm, item_factors=(item_ids, factors)).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS is slower with threaded BLAS

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recmaml.connectors.movielens import read_movielens  # noqa: E402
from recmaml.files import write_json  # noqa: E402
from recmaml import MetaRecommender, load_config  # noqa: E402
from recmaml.protocol import cold_split, evaluate_ranking, metarec_scores  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared/data/movielens/ml-100k"


def existing_als_model(warm, factors: int, regularization: float):
    """What a job that already uses implicit has: an ALS model over its users x items matrix."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=15, random_state=0)
    model.fit(warm.to_csr("ones"), show_progress=False)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    log = read_movielens(args.data)
    base = load_config(REPO_ROOT / "configs" / "ml-100k.toml")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        split = cold_split(log, cold_fraction=0.2, n_support=5, order="random", seed=seed)
        row = {"seed": seed}
        for name in ("random", "als"):
            start = time.perf_counter()
            if name == "random":
                rec = MetaRecommender(base.replace(model={"item_init": "random"})).fit(split.warm)
            else:
                als = existing_als_model(split.warm, base.model.embedding_dim, base.model.als_regularization)
                rec = MetaRecommender(base).fit(split.warm, item_factors=(split.warm.items.ids, als.item_factors))
            scores = metarec_scores(rec, split.cold_support)
            row[name] = evaluate_ranking(scores, split.cold_support, split.cold_query, 20)["ndcg@20"]
            row[f"{name}_s"] = time.perf_counter() - start
        print(f"seed {seed}: nDCG@20 random init {row['random']:.4f}, ALS init {row['als']:.4f}", flush=True)
        rows.append(row)

    random_mean, als_mean = (float(np.mean([r[k] for r in rows])) for k in ("random", "als"))
    print(f"\n{'item init':<12}{'nDCG@20':>9}{'fit+serve s':>13}")
    for name, mean in (("random", random_mean), ("als", als_mean)):
        print(f"{name:<12}{mean:>9.4f}{np.mean([r[f'{name}_s'] for r in rows]):>13.1f}")
    print(f"ALS init / random init: {als_mean / random_mean:.3f} (mean over {len(rows)} split seeds)")
    if args.json:
        write_json(args.json, {"runs": rows, "random": random_mean, "als": als_mean})
    return 0


if __name__ == "__main__":
    sys.exit(main())
