"""`recmaml quickstart`: the main job end to end on MovieLens-100K (or a stand-in when it is unreachable).

Meta-train on the warm users, adapt to the held-out cold users' first few ratings, write their ranked
lists, and print nDCG@20 / recall@20 next to popularity, implicit's ALS fold-in, EASE, item-kNN and
Mult-VAE (the strongest baselines of `recmaml benchmark`, tuned on validation users) on the same split,
whatever the ratio then says.
Like the CLI, this is an application of the library: it reads data through connectors.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from recmaml.baselines import MULT_VAE_INPUT_GRID, EASE, ALSFoldIn, ItemKNN, MultVAE, Popularity
from recmaml.config import load_config
from recmaml.errors import DataError
from recmaml.protocol import cold_split, evaluate_ranking, metarec_scores, support_arrays, tune, tune_baseline
from recmaml.recommender import MetaRecommender
from recmaml.threads import serving_threads, torch_threads

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
ML100K = "ml-100k"
K = 20
RELEVANCE_THRESHOLD = 4.0
# small grids around the benchmark's validation optima on ML-100K (benchmarks/RESULTS.md), at full
# strength all the same: the search steps past a grid's end while the optimum sits there (protocol.tune);
# EASE and item-kNN choose whether they read every row or the liked ones, of the warm log and of a
# history; Mult-VAE trains on few-item inputs until the validation users' nDCG@20 stops improving, once per
# range of input sizes (mult_vae_tuned), so the baselines here are tuned on validation users as the
# benchmark's are
BASELINE_GRIDS = {
    "popularity": (Popularity, {"threshold": [None, RELEVANCE_THRESHOLD]}),
    "als": (ALSFoldIn, {"factors": [16, 32, 64], "regularization": [1.0, 10.0, 30.0], "alpha": [1.0, 10.0]}),
    "ease": (EASE, {"lam": [500.0, 2000.0, 10000.0], "threshold": [None, RELEVANCE_THRESHOLD],
                    "support_threshold": [None, RELEVANCE_THRESHOLD]}),
    "item_knn": (ItemKNN, {"neighbors": [100, 500, 1000], "shrink": [10.0, 50.0, 200.0],
                           "threshold": [None, RELEVANCE_THRESHOLD], "support_threshold": [None]}),
}
MULT_VAE = {"threshold": RELEVANCE_THRESHOLD, "anneal_steps": 500, "seed": 0}


@dataclass
class DataChoice:
    log: object  # Interactions
    source: str  # what was used, for the note


def local_candidates(cwd: Path) -> list[Path]:
    """Where a MovieLens-100K copy usually sits: a shared data folder beside the checkout, the download
    cache, or the working directory."""
    from recmaml.connectors.download import default_cache_dir

    shared = Path("shared") / "data" / "movielens" / ML100K
    return [cwd.parent / shared, REPO_ROOT.parent / shared, default_cache_dir() / ML100K,
            cwd / ML100K, cwd / "data" / ML100K]


def find_data(data_dir: str | None, cwd: Path | None = None, allow_download: bool = True) -> DataChoice:
    """--data, else $RECMAML_DATA, else a local copy, else a GroupLens download, else synthetic data."""
    from recmaml.connectors import download_movielens, read_movielens

    cwd = cwd or Path.cwd()
    if data_dir:
        return DataChoice(read_movielens(data_dir), f"{data_dir} (--data)")
    env = os.environ.get("RECMAML_DATA")
    if env:
        for folder in (Path(env), Path(env) / ML100K):
            if (folder / "u.data").is_file():
                return DataChoice(read_movielens(folder), f"{folder} ($RECMAML_DATA)")
    for folder in local_candidates(cwd):
        if (folder / "u.data").is_file():
            return DataChoice(read_movielens(folder), f"{folder.resolve()} (local copy)")
    if allow_download:
        try:
            folder = download_movielens(ML100K)
            return DataChoice(read_movielens(folder), f"{folder} (downloaded from GroupLens, checksum verified)")
        except (DataError, OSError) as err:
            log.warning("MovieLens-100K download failed (%s); using synthetic data", err)
    from recmaml.synthetic import clustered_interactions

    return DataChoice(clustered_interactions(seed=0), "built-in synthetic data (943 users, 1,682 items in 20 taste "
                      "clusters): no MovieLens-100K copy was found and none could be downloaded; pass --data DIR")


def default_config():
    """The shipped ml-100k config (installed with the package), and where it was read from."""
    from recmaml.config import resolve_config

    path = resolve_config("ml-100k")
    return load_config(path), str(path)


def run(out_dir: Path, data: DataChoice, config=None, seed: int = 0, progress=None) -> dict:
    """Split, fit, score, write; returns the metrics table {method: {metric: value}} and the paths."""
    from recmaml.connectors import write_ranked_lists

    cfg, config_source = config if config is not None else default_config()
    split = cold_split(data.log, cold_fraction=0.2, n_support=5, order="random", seed=seed)
    validation = cold_split(split.warm, cold_fraction=0.2, n_support=5, order="random", seed=seed + 1000)
    log.info("data: %s", data.source)
    log.info("split: %d warm users; %d cold users, each revealing 5 random ratings", split.warm.n_users, split.n_cold)
    log.info("config: %s", config_source)

    results = {}
    with torch_threads(serving_threads(cfg.meta.threads)):  # the baselines train on meta-training's threads
        for name, (factory, grid) in BASELINE_GRIDS.items():
            best, _, _ = tune_baseline(factory, grid, validation, K, RELEVANCE_THRESHOLD)
            scores = factory(**best).fit(split.warm).score(*support_arrays(split.cold_support))
            results[name] = {**evaluate_ranking(scores, split.cold_support, split.cold_query, K, RELEVANCE_THRESHOLD),
                             "params": best}
        model, params = mult_vae_tuned(split.warm, validation)
        results["mult_vae"] = {**evaluate_ranking(model.score(*support_arrays(split.cold_support)), split.cold_support,
                                                  split.cold_query, K, RELEVANCE_THRESHOLD), "params": params}

    start = time.perf_counter()
    rec = MetaRecommender(cfg).fit(split.warm, progress=progress)
    fit_seconds = time.perf_counter() - start
    if rec.priors is not None:
        from recmaml.calibrate import describe

        log.info("serving priors: %s", describe(rec.priors))
    # these cold users show 5 random ratings: a 'sample' history, served as such (the saved model keeps its
    # default kind, a real new user's first interactions)
    served = rec.with_history_kind("sample")
    results["recmaml"] = {**evaluate_ranking(metarec_scores(served, split.cold_support), split.cold_support,
                                             split.cold_query, K, RELEVANCE_THRESHOLD), "fit_s": fit_seconds,
                          "training": rec.history.summary(), "stopped": (rec.sample_history or rec.history).stopped}  # the last weights trained

    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir, ranked_path = out_dir / "model", out_dir / "cold_users_top20.csv"
    rec.save(model_dir)
    write_ranked_lists(served.recommend(split.cold_support, k=K), ranked_path)
    return {"results": results, "model": str(model_dir), "ranked": str(ranked_path), "data": data.source,
            "cold_users": split.n_cold}


def mult_vae_tuned(warm, validation) -> tuple[MultVAE, dict]:
    """Mult-VAE trained on the validation split's warm users until its cold users' nDCG@20 stops improving,
    for each input size of MULT_VAE_INPUT_GRID (and past its ends while the best sits there), then the best
    refitted on `warm` for as many epochs as it took (seeded: the same every run, whatever the machine's
    load); the model and its parameters, epochs included."""
    def ndcg(model: MultVAE) -> float:
        scores = model.score(*support_arrays(validation.cold_support))
        return evaluate_ranking(scores, validation.cold_support, validation.cold_query, K, RELEVANCE_THRESHOLD)[f"ndcg@{K}"]

    epochs = {}

    def best_value(input_items) -> float:
        model = MultVAE(epochs=2000, max_seconds=None, input_items=input_items, **MULT_VAE).fit(validation.warm,
                                                                                                 validate=ndcg)
        epochs[tuple(input_items)] = model.best_epochs
        return max(value for _, value in model.curve)

    best, _, _ = tune(best_value, {"input_items": list(MULT_VAE_INPUT_GRID)})
    params = {**best, **MULT_VAE, "epochs": epochs[tuple(best["input_items"])]}
    return MultVAE(max_seconds=None, **params).fit(warm), params


def format_table(summary: dict) -> str:
    results = summary["results"]
    best_baseline = max((m for m in results if m != "recmaml"), key=lambda m: results[m][f"ndcg@{K}"])
    lines = [f"{'method':<14}{'nDCG@20':>9}{'recall@20':>11}  notes"]
    for name, r in results.items():
        if "params" not in r:
            note = f"meta-trained in {r['fit_s']:.0f} s"
        elif name == "mult_vae":
            note = f"trained until validation users stopped improving: {r['params']}"
        else:
            note = f"tuned on validation users: {r['params']}"
        lines.append(f"{name:<14}{r[f'ndcg@{K}']:>9.4f}{r[f'recall@{K}']:>11.4f}  {note}")
    ratio = results["recmaml"][f"ndcg@{K}"] / results[best_baseline][f"ndcg@{K}"]
    lines.append(f"recmaml / {best_baseline} nDCG@20: {ratio:.3f}")
    return "\n".join(lines)
