"""Dislikes (issue 27, section 5): the same fitted models served with the history's low ratings counted as
likes (the old serving) and counted against their items, nDCG@20 on the benchmark's cold-start splits.

    PYTHONPATH=. python benchmarks/recipes/dislike/ab.py OUT [--logs ml-100k,filmtrust,...] [--seeds 0,1,2]
        [--budget-seconds 90]

Per (log, seed): one `recmaml fit` with the defaults (serve.dislike_threshold None: every row a like, as
before) on the warm users of the seed's split (the random and temporal protocols hold out the same users,
so one fit serves both, as in `recmaml benchmark`); then each variant below is the same weights with its
serving settings, calibrated again by fit's own calibration (recmaml.calibrate, on fit's validation users)
as `recmaml fit` would ship it, except 'against_nocal' (the old calibration, the new serving). Every variant
scores the same cold users at every K. One JSON file per (log, seed) under OUT; a finished one is skipped
(resumable). Summary: python benchmarks/recipes/dislike/summary.py OUT
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recmaml import MetaRecommender  # noqa: E402
from recmaml import build  # noqa: E402
from recmaml.benchmark import FittedMeta, make_splits, ranking_cell  # noqa: E402
from recmaml.calibrate import calibrate  # noqa: E402
from recmaml.config import PRIOR_WEIGHT_FIELDS, Config  # noqa: E402
from recmaml.connectors import read_interactions  # noqa: E402
from recmaml.data import relevant_rating  # noqa: E402

DATA = Path(os.environ.get("RECMAML_SHARED_DATA", ROOT.parent / "shared/data"))
LOGS = {"ml-100k": DATA / "movielens/ml-100k", "filmtrust": DATA / "filmtrust",
        "ml-latest-small": DATA / "movielens/ml-latest-small", "ciaodvd": DATA / "ciaodvd"}
KS = (1, 3, 5, 10, 20)
AUTO = {"first_scales": "auto", "sample_scales": "auto", **dict.fromkeys(PRIOR_WEIGHT_FIELDS, "auto")}


def variants(log) -> dict[str, dict]:
    """Serving settings per variant: dislikes are the rows rated below the positive threshold, or
    ('mid') below the middle of the log's rating scale (1-2 stars of 1-5); weight 1 counts a dislike
    against its item as strongly as a like counts for it, 0.25 a quarter as strongly, 0 leaves it out."""
    lo, hi = float(np.min(log.rating)), float(np.max(log.rating))
    mid, positive = (lo + hi) / 2, relevant_rating(log.rating)  # the latter: tasks.positive_threshold 'auto'
    return {
        "against": {"dislike_threshold": positive, "dislike_weight": 1.0},
        "against_quarter": {"dislike_threshold": positive, "dislike_weight": 0.25},
        "ignore": {"dislike_threshold": positive, "dislike_weight": 0.0},
        "against_mid": {"dislike_threshold": mid, "dislike_weight": 1.0},
        "against_mid_quarter": {"dislike_threshold": mid, "dislike_weight": 0.25},
        "ignore_mid": {"dislike_threshold": mid, "dislike_weight": 0.0},
    }


def recalibrated(rec, prepared, serve: dict):
    """The same weights served with `serve`, the serving scales and priors chosen again for it."""
    other = rec.with_serving(**serve, **AUTO)
    chosen = calibrate(other, prepared.log, prepared.user_feats, prepared.val_users)
    other.config = other.config.replace(serve=chosen)
    return other


def ndcgs(rec, splits, protocols, threshold) -> dict:
    out = {}
    for protocol in protocols:
        fitted = FittedMeta(rec).for_protocol(protocol)
        out[protocol] = {str(k): ranking_cell(fitted.scores(split), split, threshold, full=False)["ndcg@20"]
                         for k, split in splits[protocol].test.items()}
    return out


def run_cell(name: str, seed: int, out: Path, budget: float) -> None:
    path = out / f"{name}_seed{seed}.json"
    if path.is_file():
        return
    torch.manual_seed(seed)
    log = read_interactions(LOGS[name])
    protocols = ["random"] + (["temporal"] if log.timestamp is not None else [])
    splits = {p: make_splits(log, p, seed, KS, 0.2) for p in protocols}
    warm = splits["random"].warm
    threshold = relevant_rating(log.rating)
    cfg = Config().replace(serve={"dislike_threshold": None}, meta={"max_seconds": budget, "threads": 1})
    start = time.perf_counter()
    rec = MetaRecommender(cfg).fit(warm)
    fit_s = time.perf_counter() - start
    prepared = build.prepare(rec.config, warm)
    result = {"log": name, "seed": seed, "budget_seconds": budget, "fit_s": fit_s,
              "positive_threshold": rec.config.tasks.positive_threshold,
              "dislike_share": float(np.mean(log.rating < rec.config.tasks.positive_threshold)),
              "ndcg@20": {"old": ndcgs(rec, splits, protocols, threshold)}}
    nocal = rec.with_serving(dislike_threshold=rec.config.tasks.positive_threshold, dislike_weight=1.0)
    result["ndcg@20"]["against_nocal"] = ndcgs(nocal,
                                               splits, protocols, threshold)
    for variant, serve in variants(log).items():
        result["ndcg@20"][variant] = ndcgs(recalibrated(rec, prepared, serve), splits, protocols, threshold)
    result["total_s"] = time.perf_counter() - start
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    print(f"{time.strftime('%H:%M:%S')} {name} seed {seed}: fit {fit_s:.0f} s, total {result['total_s']:.0f} s",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--logs", default="ml-100k,filmtrust,ml-latest-small,ciaodvd")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget-seconds", type=float, default=90.0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name in args.logs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run_cell(name, seed, args.out, args.budget_seconds)


if __name__ == "__main__":
    main()
