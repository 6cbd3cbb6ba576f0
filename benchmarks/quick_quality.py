"""Cold-start quality on MovieLens-100K: the meta-learned recommender against tuned non-meta baselines.

    .venv/bin/python benchmarks/quick_quality.py                         # random protocol, seeds 0 1 2
    .venv/bin/python benchmarks/quick_quality.py --protocol temporal --seeds 1 --json out.json
    .venv/bin/python benchmarks/quick_quality.py --protocol melu         # rating objective, MeLU protocol

Ranking protocols ("random", "temporal"): 20% of the users are cold; each reveals 5 ratings (random ones,
or its earliest) and the rest are hidden. Baselines (popularity, item mean, ALS fold-in, EASE) are tuned
on validation users carved from the warm users the same way, refitted on all warm users, and scored on
the cold users; MetaRecommender is fitted on the warm users and adapts to each cold user's support, and is
also served with zero inner steps to show what adaptation adds. Metric: nDCG@20 and recall@20 over the
whole catalog, support items excluded, relevant = hidden ratings >= 4.
Targets: random: meta nDCG@20 >= 1.10 x the best baseline; temporal: meta >= popularity.

MeLU protocol ("melu"): users with 13..100 ratings; cold users hide 10 random ratings and reveal the rest.
The rating-objective model is compared with ItemMean (item mean + user offset, tuned on validation MAE):
MAE/RMSE on the hidden ratings (target: MAE at least 3% lower) and nDCG@3 of the 10 hidden items ranked
by predicted rating, gain 2^r - 1 (target: at least the item-mean ranking's).
"""

from __future__ import annotations

import argparse
import copy
import logging
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
from recmaml.baselines import EASE, ALSFoldIn, ItemMean, Popularity  # noqa: E402
from recmaml.protocol import (  # noqa: E402
    cold_split, evaluate_ranking, evaluate_ratings, melu_split, metarec_scores, query_ndcg, scores_at,
    support_arrays, tune, tune_baseline,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/movielens/ml-100k"
K = 20
THRESHOLD = 4.0
TARGET_RATIO = {"random": 1.10, "temporal": 1.0}  # meta nDCG@20 over best baseline / over popularity
TARGET_MAE_GAIN = 0.03  # melu: meta MAE at most 97% of ItemMean's

GRIDS = {
    "popularity": (Popularity, {"threshold": [None, THRESHOLD]}),
    "item_mean": (ItemMean, {"damping": [0.0, 5.0, 20.0, 50.0]}),
    # With 5 support items the validation optimum on ML-100K lies at strong regularization (ALS: 16-32
    # factors, reg 10-30; EASE: lam 5000-10000); the grids reach past it so the baselines are not under-tuned.
    "als": (ALSFoldIn, {"factors": [16, 32, 64, 128], "regularization": [0.1, 1.0, 10.0, 30.0], "alpha": [1.0, 10.0]}),
    "ease": (EASE, {"lam": [100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0]}),
}
MELU_GRID = {"damping": [0.0, 2.0, 5.0, 10.0, 25.0], "user_damping": [0.0, 1.0, 2.0, 5.0]}


CONFIG_OF_PROTOCOL = {"random": "ml-100k.toml", "temporal": "ml-100k-temporal.toml", "melu": "ml-100k-rating.toml"}


def _config(path: str | None, protocol: str):
    """The given TOML, else the shipped ML-100K config of the protocol if there is one, else the defaults."""
    rating = protocol == "melu"
    name = CONFIG_OF_PROTOCOL[protocol]
    if path is None and (REPO_ROOT / "configs" / name).is_file():
        path = REPO_ROOT / "configs" / name
    overrides = {"model": {"objective": "rating"}} if rating and path is None else {}
    return load_config(path, **overrides), str(path or "defaults")


def _fit_meta(cfg, warm, max_seconds: float):
    if max_seconds > 0:
        cfg = cfg.replace(meta={"max_seconds": max_seconds})
    start = time.perf_counter()
    rec = MetaRecommender(cfg).fit(warm)
    fit_s = time.perf_counter() - start
    # the same meta-learned weights served without adaptation (a shallow copy shares the model)
    zero = copy.copy(rec)
    zero.config = rec.config.replace(serve={"inner_steps": 0})
    return rec, zero, fit_s


# ------------------------------------------------------------------------------------ ranking protocols


def run_ranking(log, protocol: str, seed: int, cfg, args) -> dict:
    split = cold_split(log, cold_fraction=args.cold_fraction, n_support=args.n_support, order=protocol, seed=seed)
    val = cold_split(split.warm, cold_fraction=args.cold_fraction, n_support=args.n_support, order=protocol,
                     seed=seed + 1000)
    methods = {}
    for name, (factory, grid) in GRIDS.items():
        start = time.perf_counter()
        best, val_ndcg, _ = tune_baseline(factory, grid, val, K, THRESHOLD)
        tune_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = factory(**best).fit(split.warm).score(*support_arrays(split.cold_support))
        fit_s = time.perf_counter() - start
        metrics = evaluate_ranking(scores, split.cold_support, split.cold_query, K, THRESHOLD)
        methods[name] = {**metrics, "params": best, "val_ndcg": val_ndcg, "tune_s": tune_s, "fit_s": fit_s}

    rec, zero, fit_s = _fit_meta(cfg, split.warm, args.max_seconds)
    for name, model in (("meta", rec), ("meta_0_steps", zero)):
        start = time.perf_counter()
        scores = metarec_scores(model, split.cold_support)
        serve_s = time.perf_counter() - start
        metrics = evaluate_ranking(scores, split.cold_support, split.cold_query, K, THRESHOLD)
        methods[name] = {**metrics, "fit_s": fit_s, "serve_s": serve_s}
    methods["meta"]["epochs"] = len(rec.history.epochs) if rec.history is not None else None
    return {"seed": seed, "cold_users": split.n_cold, "warm_users": split.warm.n_users, "methods": methods}


def _ranking_summary(protocol: str, methods: dict) -> dict:
    key = f"ndcg@{K}"
    baselines = [m for m in GRIDS]
    best = max(baselines, key=lambda m: methods[m][key])
    reference = best if protocol == "random" else "popularity"
    ratio = methods["meta"][key] / methods[reference][key]
    return {"reference": reference, "ratio": ratio, "target": TARGET_RATIO[protocol],
            "pass": bool(ratio >= TARGET_RATIO[protocol])}


def _print_ranking(title: str, methods: dict, summary: dict) -> None:
    print(f"\n{title}")
    print(f"  {'method':<14}{'nDCG@20':>9}{'recall@20':>11}{'fit s':>8}  params")
    for name, m in methods.items():
        params = m.get("params", f"epochs={m['epochs']}" if "epochs" in m else "")
        print(f"  {name:<14}{m[f'ndcg@{K}']:>9.4f}{m[f'recall@{K}']:>11.4f}{m['fit_s']:>8.1f}  {params}")
    verdict = "PASS" if summary["pass"] else "MISS"
    print(f"  meta / {summary['reference']} nDCG@20 = {summary['ratio']:.3f} (target >= {summary['target']:.2f}): {verdict}")


def _mean_methods(runs: list[dict], fields: list[str]) -> dict:
    names = runs[0]["methods"].keys()
    return {n: {f: float(np.mean([r["methods"][n][f] for r in runs])) for f in fields} for n in names}


# --------------------------------------------------------------------------------------- MeLU protocol


def run_melu(log, seed: int, cfg, args) -> dict:
    split = melu_split(log, cold_fraction=args.cold_fraction, seed=seed)
    val = melu_split(split.warm, cold_fraction=args.cold_fraction, seed=seed + 1000)
    query = split.cold_query

    def neg_val_mae(**params) -> float:
        scores = ItemMean(**params).fit(val.warm).score(*support_arrays(val.cold_support))
        return -evaluate_ratings(scores_at(scores, val.cold_query), val.cold_query.rating)["mae"]

    best, _, _ = tune(neg_val_mae, MELU_GRID)
    start = time.perf_counter()
    pred = scores_at(ItemMean(**best).fit(split.warm).score(*support_arrays(split.cold_support)), query)
    methods = {"item_mean": {**evaluate_ratings(pred, query.rating), "ndcg@3": query_ndcg(pred, query, 3),
                             "params": best, "fit_s": time.perf_counter() - start}}

    rec, zero, fit_s = _fit_meta(cfg, split.warm, args.max_seconds)
    for name, model in (("meta", rec), ("meta_0_steps", zero)):
        pred = model.predict(split.cold_support, query.user_ids(), query.item_ids())
        methods[name] = {**evaluate_ratings(pred, query.rating), "ndcg@3": query_ndcg(pred, query, 3), "fit_s": fit_s}
    methods["meta"]["epochs"] = len(rec.history.epochs) if rec.history is not None else None
    return {"seed": seed, "cold_users": split.n_cold, "warm_users": split.warm.n_users, "methods": methods}


def _melu_summary(methods: dict) -> dict:
    mae_ratio = methods["meta"]["mae"] / methods["item_mean"]["mae"]
    ndcg_ratio = methods["meta"]["ndcg@3"] / methods["item_mean"]["ndcg@3"]
    return {"mae_ratio": mae_ratio, "mae_pass": bool(mae_ratio <= 1 - TARGET_MAE_GAIN),
            "ndcg3_ratio": ndcg_ratio, "ndcg3_pass": bool(ndcg_ratio >= 1.0)}


def _print_melu(title: str, methods: dict, summary: dict) -> None:
    print(f"\n{title}")
    print(f"  {'method':<14}{'MAE':>10}{'RMSE':>10}{'nDCG@3':>10}{'fit s':>8}  params")
    for name, m in methods.items():
        params = m.get("params", f"epochs={m['epochs']}" if "epochs" in m else "")
        # .4g: a diverged model's huge errors still fit the column
        print(f"  {name:<14}{m['mae']:>10.4g}{m['rmse']:>10.4g}{m['ndcg@3']:>10.4g}{m['fit_s']:>8.1f}  {params}")
    print(f"  meta / item_mean MAE = {summary['mae_ratio']:.4g} (target <= {1 - TARGET_MAE_GAIN:.2f}): "
          f"{'PASS' if summary['mae_pass'] else 'MISS'}")
    print(f"  meta / item-mean ranking nDCG@3 = {summary['ndcg3_ratio']:.3f} (target >= 1.00): "
          f"{'PASS' if summary['ndcg3_pass'] else 'MISS'}")


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens-100K folder")
    parser.add_argument("--protocol", choices=["random", "temporal", "melu"], default="random")
    parser.add_argument("--seeds", type=int, default=3, help="number of split seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first split seed; a held-out check uses seeds never used for tuning, e.g. 100")
    parser.add_argument("--config", default=None, help="TOML config (default: configs/ml-100k[-rating].toml or defaults)")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="cap meta-training time (0: the config's)")
    parser.add_argument("--cold-fraction", type=float, default=0.2)
    parser.add_argument("--n-support", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--verbose", action="store_true", help="log meta-training progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    melu = args.protocol == "melu"
    cfg, cfg_source = _config(args.config, args.protocol)
    log = read_movielens(args.data)
    print(f"{log}; protocol {args.protocol}; config {cfg_source}; seeds {args.first_seed}..{args.first_seed + args.seeds - 1}")

    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if melu:
            run = run_melu(log, seed, cfg, args)
            run["summary"] = _melu_summary(run["methods"])
            _print_melu(f"seed {seed} ({run['cold_users']} cold users)", run["methods"], run["summary"])
        else:
            run = run_ranking(log, args.protocol, seed, cfg, args)
            run["summary"] = _ranking_summary(args.protocol, run["methods"])
            _print_ranking(f"seed {seed} ({run['cold_users']} cold users)", run["methods"], run["summary"])
        runs.append(run)

    if melu:
        mean = _mean_methods(runs, ["mae", "rmse", "ndcg@3", "fit_s"])
        summary = _melu_summary(mean)
        _print_melu(f"mean over {len(runs)} seeds", mean, summary)
    else:
        mean = _mean_methods(runs, [f"ndcg@{K}", f"recall@{K}", f"hit@{K}", "fit_s"])
        summary = _ranking_summary(args.protocol, mean)
        _print_ranking(f"mean over {len(runs)} seeds", mean, summary)

    if args.json is not None:
        report = {"protocol": args.protocol, "data": str(args.data), "config": cfg_source,
                  "config_resolved": cfg.to_dict(), "runs": runs, "mean": mean, "summary": summary}
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
