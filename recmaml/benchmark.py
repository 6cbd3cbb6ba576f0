"""The cold-start benchmark suite behind `recmaml benchmark`: every protocol, support size K, seed and
system on one log, fitted once per (protocol, seed) and served at every K, written cell by cell so that
an interrupted run resumes where it stopped.

    spec = BenchmarkSpec(name="ml-100k", protocols=("random",), ks=(1, 5, 20), seeds=(0, 1, 2))
    run_benchmark(log, spec, out=Path("bench"))          # bench/cells/ml-100k/random/seed0/ease.json, ...
    report.write_report(Path("bench"))                   # results.md, results.json, plots

Protocols (all user-disjoint; 20% of the users are cold, and validation users are carved from the warm
users the same way with another seed):
- random K-shot: each cold user reveals K random interactions, the rest are hidden;
- temporal K-shot: each cold user reveals its K earliest interactions (needs timestamps);
- melu (Lee et al. 2019): users with 13-100 ratings; a cold user hides 10 random ratings, reveals the rest.
Every baseline is tuned on the validation users with a small grid (never on the test users), refitted on
all warm users, and scored on the cold users of every K; recmaml's systems are fitted once, as shipped. Metrics: see `ranking_cell` and `melu_cell`.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from recmaml import baselines
from recmaml.files import write_json
from recmaml.config import Config
from recmaml.data import Interactions, is_count_column, relevant_rating
from recmaml.errors import DataError
from recmaml.metrics import reciprocal_ranks
from recmaml.protocol import (
    ColdSplit, RankedCatalog, grid_points, kshot_split, melu_split, past_the_edge, query_ndcg_per_user, scores_at,
    support_arrays,
)

PROTOCOLS = ("random", "temporal", "melu")
DEFAULT_KS = (0, 1, 3, 5, 10, 20)  # K = 0: users with no usable history, ranked from the start alone
MELU_K = "melu"  # the one "support size" of the MeLU protocol: all but the 10 hidden ratings
MAE_BINS = ((1, 10), (11, 20), (21, 40), (41, 100))  # MeLU support sizes, for MAE against support size
CELL_FORMAT = 1


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str  # the data set's name in tables and file paths
    protocols: tuple[str, ...] = PROTOCOLS
    ks: tuple[int, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = (0, 1, 2)
    systems: tuple[str, ...] = ()  # () = every system
    relevance_threshold: float | None = None  # None: derived from the log (log_relevance_threshold)
    cold_fraction: float = 0.2
    budget_seconds: float = 300.0  # meta-training budget of each recmaml fit (Mult-VAE stops early instead)
    grid: str = "full"  # "minimal": the first value of every grid, no tuning (smoke runs)
    config: Config = field(default_factory=Config)  # recmaml's systems start from this config
    command: str = ""  # the command line that reproduces the run, recorded in every cell


def has_rating_scale(log: Interactions) -> bool:
    """True for a log of ratings; False without a rating column, and for one of counts (plays): their MAE
    and item means say nothing a user asks for, so the MeLU protocol and the rating models leave them out."""
    return log.rating is not None and not is_count_column(log.rating)


def log_relevance_threshold(log: Interactions) -> float | None:
    """The rating a hidden interaction needs to count as relevant: see data.relevant_rating."""
    return relevant_rating(log.rating)


# ------------------------------------------------------------------------------------------- systems


def user_times(split: ColdSplit) -> np.ndarray:
    """Per cold user, the time it is served at: its latest revealed interaction, or, with none revealed
    (K = 0), its first hidden one (when it arrived, which a live system knows)."""
    support, query = split.cold_support, split.cold_query
    times = np.full(split.n_cold, np.inf)
    np.minimum.at(times, query.user_idx, query.timestamp.astype(np.float64))
    latest = np.full(split.n_cold, -np.inf)
    np.maximum.at(latest, support.user_idx, support.timestamp.astype(np.float64))
    return np.where(np.isfinite(latest), latest, times)


class _Baseline:
    """A fitted baseline, scored through its (support arrays) -> score matrix interface, or, for a
    time-aware one (score_at), from each cold user's time."""

    def __init__(self, model):
        self.model = model

    def scores(self, split: ColdSplit) -> np.ndarray:
        if hasattr(self.model, "score_at"):
            return np.asarray(self.model.score_at(user_times(split)), dtype=np.float32)
        return np.asarray(self.model.score(*support_arrays(split.cold_support)), dtype=np.float32)


class FittedMeta:
    """A fitted MetaRecommender, scored through its public `score` with external ids, told the kind of
    history the protocol reveals ('first' on the temporal protocol, else 'sample'), as a job would."""

    def __init__(self, rec, history_kind: str | None = None):
        self.rec = rec
        self.history_kind = history_kind

    def scores(self, split: ColdSplit) -> np.ndarray:
        support = split.cold_support
        # a user with no revealed row arrives at its first hidden one, as the time-aware baseline is told
        # (a user with rows is served at its latest one: `at` is only for the others, as a job would give it)
        at = None
        if support.timestamp is not None:
            without_rows = np.bincount(support.user_idx, minlength=len(support.users)) == 0
            at = dict(zip(support.users.ids[without_rows], user_times(split)[without_rows])) or None
        return self.rec.score(support, users=support.users.ids, items=support.items.ids,  # the log's item order
                              history_kind=self.history_kind, at=at)

    def for_protocol(self, protocol: str) -> FittedMeta:
        return FittedMeta(self.rec, "first" if protocol == "temporal" else "sample")

    def served(self, **serve) -> FittedMeta:
        """The same fitted weights served with other [serve] settings (a shallow copy shares the model)."""
        return FittedMeta(self.rec.with_serving(**serve), self.history_kind)

    def zero_steps(self) -> FittedMeta:
        """The same meta-learned weights served without adaptation."""
        return self.served(inner_steps=0)


@dataclass
class CellContext:
    """What a system's fit and grid read of the cell they run in (one data set, protocol and seed)."""

    protocol: str
    relevance_threshold: float | None  # the relevant rating of the metrics (None: every hidden row)
    has_ratings: bool = True
    has_timestamps: bool = True
    budget_seconds: float = 0  # a fit's time budget (0: none)
    config: Config = field(default_factory=Config)  # recmaml's config, as shipped unless the run names one
    grid: str = "full"  # "minimal": each system's first grid point, no tuning (smoke runs)
    threads: int = 0  # implicit's ALS threads (0: its own choice)
    shared_fits: dict = field(default_factory=dict)  # recmaml fits shared by cells that differ only in K
    chosen: dict = field(default_factory=dict)  # system name -> the params its finished cell chose (the blend's parts)
    val_fits: dict = field(default_factory=dict)  # system name -> its chosen point fitted on the validation warm log
    test_fits: dict = field(default_factory=dict)  # system name -> its fit on the warm log (this cell's)
    validation: tuple | None = None  # while tuning: (validation splits, protocol, relevance threshold)
    last_fit: dict = field(default_factory=dict)  # _history_rows_baseline's one shared fit per model class


@dataclass(frozen=True)
class System:
    name: str
    family: str  # "baseline", "recmaml", or "reference" (the blend: a reference line, not a single baseline)
    rating: bool  # predicts ratings: MAE/RMSE are reported
    fit: Callable[..., object]  # fit(warm, ctx, **params) -> an object with .scores(support)
    grid: Callable[[CellContext], dict[str, list]] = lambda ctx: {}  # ctx -> {param: values}
    derived_from: str | None = None  # served from another system's fit (zero inner steps)
    doc: str = ""
    needs_ratings: bool = False  # left out on logs without ratings
    needs_timestamps: bool = False  # left out on logs without timestamps
    tune: Callable[..., tuple[dict, list]] | None = None  # (splits, ctx) -> (params, tried): a search of its own


def _baseline(factory):
    return lambda warm, ctx, **params: _Baseline(factory(**params).fit(warm))


def _history_rows_baseline(factory):
    """A baseline whose `support_threshold` (which history rows it reads) changes its scoring, not its fit:
    the grid's points that differ only there share one fit (the grid varies support_threshold fastest)."""
    def fit(warm, ctx, support_threshold=baselines.SAME_ROWS, **params):
        key = (factory, id(warm), repr(sorted(params.items())))
        cached = ctx.last_fit.get(factory)
        if cached is None or cached[0] != key:
            cached = (key, factory(**params).fit(warm), warm)  # warm kept: its id is not reused meanwhile
            ctx.last_fit[factory] = cached
        model = copy.copy(cached[1])
        model.support_threshold = support_threshold
        return _Baseline(model)
    return fit


MULT_VAE_MAX_EPOCHS = 2000  # a cap that early stopping ends first (the cells record what stopped each fit)


def _mult_vae_fit(warm, ctx, **params):
    """Mult-VAE as a careful practitioner trains it: while tuning, until the validation users' nDCG@20
    stops improving (early stopping, no time budget); the refit on every warm user runs the epochs the
    chosen point took (`epochs`, a learned parameter)."""
    if "epochs" in params or ctx.validation is None:
        return _Baseline(baselines.MultVAE(max_seconds=None, **params).fit(warm))
    val_splits, protocol, relevance_threshold = ctx.validation
    model = baselines.MultVAE(max_seconds=None, epochs=MULT_VAE_MAX_EPOCHS, **params)
    model.fit(warm, validate=lambda m: validation_value(_Baseline(m), val_splits, protocol, False,
                                                        relevance_threshold))
    fitted = _Baseline(model)
    fitted.learned = {"epochs": model.best_epochs}
    fitted.notes = {"stopped_by": model.stopped_by, "epochs_run": model.epochs_run,
                    "train_s": round(model.train_seconds, 1)}
    return fitted


def _meta_config(ctx: CellContext, **sections) -> Config:
    cfg: Config = ctx.config
    if ctx.protocol == "melu":
        sections.setdefault("model", {})["objective"] = "rating"
    budget = ctx.budget_seconds
    meta = dict(sections.pop("meta", {}))
    if budget > 0:
        meta["max_seconds"] = budget if cfg.meta.max_seconds <= 0 else min(budget, cfg.meta.max_seconds)
    return cfg.replace(meta=meta, **sections)


def _meta(**sections):
    def fit(warm, ctx, **params):
        from recmaml.recommender import MetaRecommender

        rec = MetaRecommender(_meta_config(ctx, **copy.deepcopy(sections))).fit(warm, progress=False)
        return FittedMeta(rec).for_protocol(ctx.protocol)
    return fit


def _transfer(warm, ctx, **params):
    """Plain transfer: the same network trained on warm users without meta-learning (zero inner steps in
    training, so the outer loss is the query loss of the shared starting point), then fine-tuned on each
    cold user's support with the config's inner steps."""
    from recmaml.recommender import MetaRecommender

    steps = ctx.config.meta.inner_steps
    cfg = _meta_config(ctx, meta={"inner_steps": 0}, serve={"inner_steps": max(steps, 1)})
    return FittedMeta(MetaRecommender(cfg).fit(warm, progress=False)).for_protocol(ctx.protocol)


def _rated(ctx) -> list:
    return [None, ctx.relevance_threshold] if ctx.relevance_threshold is not None and ctx.has_ratings else [None]


BLEND_PARTS = ("popularity", "recent_popularity", "ease", "item_knn", "mult_vae")
BLEND_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # what coordinate ascent tries for each part's weight
BLEND_SWEEPS = 2


def _zscored(scores: np.ndarray) -> np.ndarray:
    """Each row standardized (mean 0, standard deviation 1), float32, so that models on other scales can be added."""
    scores = np.asarray(scores, np.float32)
    mean = scores.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    spread = scores.std(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    return (scores - mean) / (spread + 1e-9)


def _support_size(split: ColdSplit) -> int:
    """The K of a K-shot split: its users' (equal) number of revealed rows."""
    sizes = np.bincount(split.cold_support.user_idx, minlength=split.n_cold)
    return int(sizes.max()) if len(sizes) else 0


class _Blend:
    """A weighted sum of fitted baselines' per-user z-scored scores, with weights per support size K (a
    K not tuned takes the nearest tuned one's)."""

    def __init__(self, parts: dict, weights: dict):
        self.parts, self.weights = parts, {int(k): w for k, w in weights.items()}

    def scores(self, split: ColdSplit) -> np.ndarray:
        k = _support_size(split)
        weights = self.weights[min(self.weights, key=lambda t: (abs(t - k), t))]
        total = np.zeros((split.n_cold, split.cold_support.n_items), np.float32)  # all weights 0: no order
        for name, w in weights.items():
            if w:
                total += np.float32(w) * _zscored(self.parts[name].scores(split))
        return total


def _blend_parts(ctx) -> tuple[str, ...]:
    return tuple(n for n in BLEND_PARTS if ctx.has_timestamps or not SYSTEMS[n].needs_timestamps)


def _fitted_parts(warm, ctx, fits: dict) -> dict:
    """The blend's parts on `warm`, each with the hyperparameters its own cell chose on the validation
    users (ctx.chosen), taken from `fits` (those already fitted on this log) where they are there."""
    parts = {}
    for name in _blend_parts(ctx):
        known = fits.get(name)
        if known is not None and getattr(known, "warm_id", None) == id(warm):
            parts[name] = known
        else:
            parts[name] = SYSTEMS[name].fit(warm, ctx, **ctx.chosen.get(name, _first_point(name, ctx)))
    return parts


def _blend_fit(warm, ctx, **weights):
    """The blend reference line, its parts refitted on all warm users (or the cells' own fits, when they
    ran in this process)."""
    return _Blend(_fitted_parts(warm, ctx, ctx.test_fits), weights)


def _blend_tune(splits: _Splits, ctx) -> tuple[dict, list]:
    """Per support size K, the parts' weights that maximize the validation users' nDCG@20 at that K, by
    coordinate ascent from the best single part (so on validation the blend is never below its best part)."""
    parts = _fitted_parts(splits.val_warm, ctx, ctx.val_fits)
    chosen, tried = {}, []
    for k, split in splits.val.items():
        z = {name: _zscored(part.scores(split)) for name, part in parts.items()}

        def value(weights: dict) -> float:
            total = np.zeros_like(next(iter(z.values())))
            for name, w in weights.items():
                if w:
                    total += np.float32(w) * z[name]
            return ranking_cell(total, split, ctx.relevance_threshold, full=False)["ndcg@20"]

        weights, best = _coordinate_ascent(list(z), value)
        chosen[str(k)] = weights
        tried.append({"k": str(k), "weights": weights, "validation": best})
    return chosen, tried


def _coordinate_ascent(names: list[str], value: Callable[[dict], float]) -> tuple[dict, float]:
    """Weights over `names` from BLEND_WEIGHTS: the best single name at weight 1, then BLEND_SWEEPS passes
    that change one weight at a time when that raises `value` (NaN counts as no value)."""
    def score(weights):
        v = value(weights)
        return v if np.isfinite(v) else -np.inf

    singles = {name: score({n: float(n == name) for n in names}) for name in names}
    start = max(singles, key=singles.get)
    weights, best = {n: float(n == start) for n in names}, singles[start]
    for _ in range(BLEND_SWEEPS):
        for name in names:
            for w in BLEND_WEIGHTS:
                if w == weights[name]:
                    continue
                candidate = {**weights, name: w}
                if not any(candidate.values()):
                    continue
                v = score(candidate)
                if v > best:
                    weights, best = candidate, v
    return weights, best


def _first_point(name: str, ctx) -> dict:
    return grid_points(SYSTEMS[name].grid(ctx))[0]


SYSTEMS: dict[str, System] = {s.name: s for s in [
    System("popularity", "baseline", False, _baseline(baselines.Popularity),
           lambda ctx: {"threshold": _rated(ctx)}, doc="warm interaction counts (or counts of relevant ones)"),
    System("recent_popularity", "baseline", False, _baseline(baselines.RecentPopularity),
           lambda ctx: {"window_days": [7.0, 14.0, 30.0, 91.0, 182.0, 365.0, 730.0, 1095.0, 1825.0, 3650.0],
                        "threshold": _rated(ctx)},
           doc="counts in a window before the cold user's time (its latest revealed interaction, or arrival)",
           needs_timestamps=True),
    System("item_mean", "baseline", True, _baseline(lambda **p: baselines.ItemMean(user_offset=False, **p)),
           lambda ctx: {"damping": [0.0, 5.0, 20.0, 50.0, 200.0, 1000.0]}, doc="damped item mean rating",
           needs_ratings=True),
    System("item_mean_offset", "baseline", True, _baseline(baselines.ItemMean),
           lambda ctx: {"damping": [0.0, 5.0, 20.0, 50.0], "user_damping": [0.0, 2.0, 5.0, 20.0, 50.0, 200.0]},
           doc="damped item mean + the user's damped mean offset on its support", needs_ratings=True),
    System("als", "baseline", False,
           lambda warm, ctx, **p: _Baseline(baselines.ALSFoldIn(num_threads=ctx.threads, **p).fit(warm)),
           lambda ctx: {"factors": [32, 128, 256], "regularization": [10.0, 100.0, 1000.0], "alpha": [1.0, 10.0]},
           doc="implicit ALS, cold users folded in with recalculate_user"),
    System("ease", "baseline", False, _history_rows_baseline(baselines.EASE),
           lambda ctx: {"lam": [0.1, 1.0, 10.0, 100.0, 500.0, 2000.0, 10000.0, 30000.0, 100000.0, 300000.0, 1000000.0,
                                3000000.0, 10000000.0],
                        "threshold": _rated(ctx), "support_threshold": _rated(ctx)},
           doc="EASE (Steck 2019) on every row or the liked rows, of the warm log and of the history"),
    System("item_knn", "baseline", False, _history_rows_baseline(baselines.ItemKNN),
           lambda ctx: {"neighbors": [5, 10, 25, 50, 100, 200, 500, 1000, 5000, 20000],
                        "shrink": [0.0, 10.0, 50.0, 200.0, 1000.0, 3000.0, 10000.0],
                        "threshold": _rated(ctx), "support_threshold": _rated(ctx)},
           doc="item-kNN, cosine, on every row or the liked rows, of the warm log and of the history"),
    System("mult_vae", "baseline", False, _mult_vae_fit,
           lambda ctx: {"input_items": list(baselines.MULT_VAE_INPUT_GRID), "threshold": _rated(ctx),
                        "anneal_steps": [500]},
           doc="Mult-VAE (Liang et al. 2018), trained on few-item inputs until validation stops improving, "
               "encoder fold-in"),
    System("blend", "reference", False, _blend_fit, tune=_blend_tune,
           doc="z-scored popularity, time-aware popularity, EASE, item-kNN and Mult-VAE, each as its cell chose, weights "
               "per K by coordinate ascent on the validation users"),
    System("recmaml_maml", "recmaml", True, _meta(meta={"method": "maml"}),
           doc="second-order MAML: `recmaml fit` with the config given, served as `recommend` serves"),
    System("recmaml_fomaml", "recmaml", True, _meta(meta={"method": "fomaml"}), doc="first-order MAML"),
    System("recmaml_metasgd", "recmaml", True, _meta(meta={"method": "metasgd"}), doc="Meta-SGD"),
    System("recmaml_head", "recmaml", True, _meta(meta={"adapt": "head"}), doc="MAML adapting the user tower only"),
    System("recmaml_0_steps", "recmaml", True, None, derived_from="recmaml_maml",
           doc="the second-order MAML model served with zero inner steps"),
    System("recmaml_transfer", "recmaml", True, _transfer,
           doc="trained without meta-learning, fine-tuned per cold user with the same inner steps"),
]}
"""Every system of the suite. recmaml's systems are rating models on the MeLU protocol (objective
'rating') and ranking models elsewhere; each is what `recmaml fit` with the config given ships, served
as `recommend` serves it (told the protocol's history kind): the benchmark tunes nothing of theirs, since
whatever serving choice is worth making on validation users fit makes and saves (recmaml.calibrate)."""


def resolve_systems(names) -> tuple[str, ...]:
    """Names from a comma-separated list ("all" or empty: every system), in the suite's order."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names or names == ["all"]:
        return tuple(SYSTEMS)
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise DataError(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)} or 'all' (--systems)")
    # a derived system needs its source fitted too
    wanted = set(names) | {SYSTEMS[n].derived_from for n in names if SYSTEMS[n].derived_from}
    return tuple(n for n in SYSTEMS if n in wanted)


# ------------------------------------------------------------------------------------------- metrics


def _round(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in np.asarray(values, np.float64)]


def ranking_cell(scores: np.ndarray, split: ColdSplit, relevance_threshold: float | None, full: bool = True) -> dict:
    """Full-catalog metrics of one score matrix (rows: split's cold users, columns: the log's items):
    nDCG@10, nDCG@20, Recall@20, HR@20 and MRR over the whole list, support items excluded; relevant =
    hidden rows rated >= relevance_threshold (every hidden row when None or the log has no ratings). Users
    without a relevant hidden item are left out. Per-user nDCG@20 is kept for paired comparisons.
    full=False computes nDCG@20 alone (what tuning needs), skipping the whole-list MRR."""
    ranked = RankedCatalog(scores, split.cold_support, split.cold_query, relevance_threshold, np.float32)
    per_user = ranked.metrics(20)
    evaluated = np.isfinite(per_user["ndcg@20"])
    if not full:
        return {"ndcg@20": float(np.mean(per_user["ndcg@20"][evaluated])) if evaluated.any() else float("nan")}
    per_user.update(ranked.metrics(10))
    per_user["mrr"] = reciprocal_ranks(ranked.scores, ranked.rel_user, ranked.rel_item, ranked.scores.shape[0])
    out = {name: float(np.mean(per_user[name][evaluated])) if evaluated.any() else float("nan")
           for name in ("ndcg@10", "ndcg@20", "recall@20", "hit@20", "mrr")}
    out["users"] = int(evaluated.sum())
    out["per_user_ndcg@20"] = _round(per_user["ndcg@20"])  # NaN (None) for users left out
    return out


def rating_cell(scores: np.ndarray, split: ColdSplit) -> dict:
    """MAE and RMSE of predicted ratings (the score matrix) at the hidden rows, and per-user MAE."""
    query = split.cold_query
    err = scores_at(scores, query).astype(np.float64) - query.rating
    per_user = np.bincount(query.user_idx, weights=np.abs(err), minlength=query.n_users) / np.maximum(
        np.bincount(query.user_idx, minlength=query.n_users), 1)
    has_rows = np.bincount(query.user_idx, minlength=query.n_users) > 0
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "per_user_mae": _round(np.where(has_rows, per_user, np.nan))}


def melu_cell(scores: np.ndarray, split: ColdSplit, rating: bool) -> dict:
    """MeLU's metrics: the 10 hidden items of each cold user ranked by score, nDCG@1 and nDCG@3 with gain
    2^r - 1, next to a random order's expectation; for rating models also MAE/RMSE overall and by
    support size (MAE_BINS)."""
    query = split.cold_query
    pred = scores_at(scores, query)
    out = {}
    for k in (1, 3):
        out[f"query_ndcg@{k}"] = float(np.nanmean(query_ndcg_per_user(pred, query, k)))
        out[f"random_query_ndcg@{k}"] = float(np.nanmean(query_ndcg_per_user(pred, query, k, random=True)))
    if rating:
        out.update(rating_cell(scores, split))
        sizes = np.bincount(split.cold_support.user_idx, minlength=split.n_cold)
        per_user = np.array([np.nan if v is None else v for v in out["per_user_mae"]])
        err = np.abs(scores_at(scores, query).astype(np.float64) - query.rating)
        out["mae_by_support"] = {}
        for lo, hi in MAE_BINS:
            in_bin = ((sizes >= lo) & (sizes <= hi))[query.user_idx]
            if in_bin.any():
                out["mae_by_support"][f"{lo}-{hi}"] = {"mae": float(err[in_bin].mean()),
                                                       "users": int(np.isfinite(per_user[(sizes >= lo) & (sizes <= hi)]).sum())}
    return out


def _cell_metrics(scores, split: ColdSplit, protocol: str, rating: bool, relevance_threshold) -> dict:
    out = ranking_cell(scores, split, relevance_threshold)
    if protocol == "melu":
        out.update(melu_cell(scores, split, rating))
    elif rating and split.cold_query.rating is not None:
        out.update(rating_cell(scores, split))
    return out


# ---------------------------------------------------------------------------------------- splitting


@dataclass(frozen=True, eq=False)
class _Splits:
    """One (protocol, seed): the test split per K and the validation split per K, made once."""

    test: dict  # K -> ColdSplit
    val: dict  # K -> ColdSplit
    warm: Interactions
    val_warm: Interactions


def make_splits(log: Interactions, protocol: str, seed: int, ks, cold_fraction: float) -> _Splits:
    if protocol == "melu":
        test = melu_split(log, cold_fraction=cold_fraction, seed=seed)
        val = melu_split(test.warm, cold_fraction=cold_fraction, seed=seed + 1000)
        return _Splits({MELU_K: test}, {MELU_K: val}, test.warm, val.warm)
    order = protocol
    test = kshot_split(log, cold_fraction=cold_fraction, order=order, seed=seed)
    val = kshot_split(test.warm, cold_fraction=cold_fraction, order=order, seed=seed + 1000)
    return _Splits({k: test.at(k) for k in ks}, {k: val.at(k) for k in ks}, test.warm, val.warm)


# ------------------------------------------------------------------------------------------- running


def validation_value(fitted, splits: dict, protocol: str, rating: bool, relevance_threshold) -> float:
    """What tuning maximizes, averaged over the Ks: -MAE for rating models (whose ranking by predicted
    rating is the same with or without a user offset), else validation nDCG@20, or on the MeLU protocol
    the hidden items' nDCG@3."""
    values = []
    for split in splits.values():
        scores = fitted.scores(split)
        if rating:
            values.append(-rating_cell(scores, split)["mae"])
        elif protocol == "melu":
            values.append(melu_cell(scores, split, False)["query_ndcg@3"])
        else:
            values.append(ranking_cell(scores, split, relevance_threshold, full=False)["ndcg@20"])
    return float(np.mean(values))


def run_system(system: System, log: Interactions, splits: _Splits, ctx: CellContext, fitted_cache: dict) -> dict:
    """Tune `system` on the validation users, refit on all warm users, score every K; one cell's record."""
    protocol, relevance_threshold = ctx.protocol, ctx.relevance_threshold
    # recmaml's systems predict ratings only where they are fitted with the rating objective (MeLU)
    rating = system.rating and ctx.has_ratings and (system.family == "baseline" or protocol == "melu")
    record: dict = {"system": system.name, "family": system.family, "rating": rating}
    if system.derived_from is not None:
        fitted = fitted_cache[system.derived_from].zero_steps()
        record.update(params={}, fit_s=0.0, tune_s=0.0, grid=[])
    else:
        start = time.perf_counter()
        if system.tune is not None:
            best, tried = system.tune(splits, ctx)
        else:
            best, tried = _grid_search(system, splits, ctx, rating)
        record["tune_s"] = time.perf_counter() - start
        record["grid"] = tried
        record["params"] = best
        ctx.chosen[system.name] = best  # the blend reuses its parts' choices
        start = time.perf_counter()
        # recmaml's fits depend on the warm users alone (nothing tuned on the protocol's validation users):
        # the random and temporal splits of one seed hold out the same users, so one fit serves both
        shared = ctx.shared_fits if system.family == "recmaml" and protocol != "melu" else {}
        key = (system.name, _fingerprint(splits.warm))
        if key in shared:
            fitted = shared[key].for_protocol(protocol)
            record["fit_shared"] = True
        else:
            fitted = system.fit(splits.warm, ctx, **best)
            if system.family == "recmaml" and protocol != "melu":
                ctx.shared_fits[key] = fitted
        record["fit_s"] = time.perf_counter() - start
        fitted.warm_id = id(splits.warm)  # the blend reuses this fit on the same warm log
        fitted_cache[system.name] = fitted
        if isinstance(fitted, FittedMeta) and fitted.rec.history is not None:
            record["epochs"] = len(fitted.rec.history.epochs)
            record["stopped"] = fitted.rec.history.summary()
            record["resolved_config"] = fitted.rec.config.to_dict()  # with the log-derived values fit chose
    start = time.perf_counter()
    record["per_k"] = {str(k): _cell_metrics(fitted.scores(split), split, protocol, rating, relevance_threshold)
                       for k, split in splits.test.items()}
    record["serve_s"] = time.perf_counter() - start
    return record


def _grid_search(system: System, splits: _Splits, ctx: CellContext, rating: bool) -> tuple[dict, list]:
    """The grid point with the best validation value, with what its fit learned while tuning (a Mult-VAE's
    epochs); every point tried, with its value. The best point's validation fit is kept in ctx.val_fits."""
    points = grid_points(system.grid(ctx))[: 1 if ctx.grid == "minimal" else None]
    if len(points) == 1:
        return points[0], []
    tried, best_value = [], -np.inf
    ctx.validation = (splits.val, ctx.protocol, ctx.relevance_threshold)

    def evaluate(params: dict) -> None:
        nonlocal best_value
        fitted = system.fit(splits.val_warm, ctx, **params)
        value = validation_value(fitted, splits.val, ctx.protocol, rating, ctx.relevance_threshold)
        entry = {"params": params, "validation": value}
        entry.update({k: v for k, v in (("learned", getattr(fitted, "learned", None)),
                                        ("notes", getattr(fitted, "notes", None))) if v})
        tried.append(entry)
        if np.isfinite(value) and value > best_value:
            best_value = value
            fitted.warm_id = id(splits.val_warm)
            ctx.val_fits[system.name] = fitted

    def best() -> dict:
        return max(tried, key=lambda t: t["validation"] if np.isfinite(t["validation"]) else -np.inf)

    try:
        for params in points:
            evaluate(params)
        if ctx.grid != "minimal":
            for params in iter(lambda: past_the_edge(best()["params"], [t["params"] for t in tried], points), None):
                evaluate(params)
    finally:
        ctx.validation = None
    chosen = best()
    return {**chosen["params"], **chosen.get("learned", {})}, tried


def _fingerprint(log: Interactions) -> str:
    """A digest of a log's users and rows: two splits with equal digests have the same warm users."""
    import hashlib

    digest = hashlib.sha1()
    for array in (log.users.ids.astype(str), log.user_idx, log.item_idx):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def cell_path(out: Path, name: str, protocol: str, seed: int, system: str) -> Path:
    return Path(out) / "cells" / name / protocol / f"seed{seed}" / f"{system}.json"


def _environment() -> dict:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("implicit", "scipy", "polars"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "torch_threads": torch.get_num_threads(), "versions": versions}


def run_benchmark(log: Interactions, spec: BenchmarkSpec, out: Path, progress=None) -> list[Path]:
    """Run every (protocol, seed, system) cell of `spec` on `log` that `out` does not already hold, and
    return the paths of all its cells. Each cell is written atomically when done, so an interrupted run
    resumes at the first missing cell. progress: optional tqdm-like object (update, set_description)."""
    rated = has_rating_scale(log)
    systems = tuple(s for s in resolve_systems(spec.systems) if (rated or not SYSTEMS[s].needs_ratings)
                    and (log.timestamp is not None or not SYSTEMS[s].needs_timestamps))
    protocols = list(spec.protocols)
    for p in protocols:
        if p not in PROTOCOLS:
            raise DataError(f"unknown protocol {p!r}; choose from {list(PROTOCOLS)} (--protocol)")
    if "melu" in protocols and not rated:
        what = "none" if log.rating is None else "counts (plays), not ratings"
        raise DataError(f"{spec.name}: the MeLU protocol evaluates ratings and this log has {what}; leave 'melu' "
                        "out of --protocol (or give the log a rating column: --rating-col)")
    if "temporal" in protocols and log.timestamp is None:
        raise DataError(f"{spec.name}: the temporal protocol needs timestamps and this log has none; leave "
                        "'temporal' out of --protocol (or give the log a timestamp column: --timestamp-col)")
    if not spec.ks or min(spec.ks) < 0:
        raise DataError(f"support sizes must be >= 0 (0: users with no history), got {list(spec.ks)} (--k)")
    if spec.grid not in ("full", "minimal"):
        raise DataError(f"grid must be 'full' or 'minimal', got {spec.grid!r} (--grid)")
    if len(spec.seeds) < 1:
        raise DataError("give at least one seed (--seeds); 3 or more for confidence intervals")
    relevance_threshold = spec.relevance_threshold if spec.relevance_threshold is not None else log_relevance_threshold(log)
    import torch

    env = _environment()
    paths = []
    shared_fits: dict = {}  # recmaml fits shared by the protocols of one seed (see run_system)
    # seed-major: a run stopped early still has every protocol for its first seeds
    for seed in spec.seeds:
        shared_fits.clear()
        for protocol in protocols:
            # the blend of baselines ranks; the MeLU protocol's rating metrics have nothing to compare it with
            here = [s for s in systems if protocol != "melu" or SYSTEMS[s].family != "reference"]
            todo = [s for s in here if not cell_path(out, spec.name, protocol, seed, s).is_file()]
            paths += [cell_path(out, spec.name, protocol, seed, s) for s in here]
            if progress is not None:
                progress.update(len(here) - len(todo))
            if not todo:
                continue
            splits = make_splits(log, protocol, seed, spec.ks, spec.cold_fraction)
            ctx = CellContext(protocol, relevance_threshold, has_ratings=rated,
                              has_timestamps=log.timestamp is not None, budget_seconds=spec.budget_seconds,
                              config=spec.config, grid=spec.grid,
                              threads=torch.get_num_threads(),  # implicit's ALS: as many threads as torch
                              shared_fits=shared_fits)
            fitted_cache: dict = ctx.test_fits
            for name in SYSTEMS:  # finished cells' choices, for the blend (its parts may be another run's cells)
                path = cell_path(out, spec.name, protocol, seed, name)
                if name not in todo and path.is_file():
                    ctx.chosen[name] = json.loads(path.read_text(encoding="utf-8")).get("params") or {}
            # a derived system needs its source's fit: refit the source when only the derived cell is missing
            needed = [s for s in here if s in todo or any(SYSTEMS[t].derived_from == s for t in todo)]
            for name in needed:
                if progress is not None:
                    progress.set_description(f"{spec.name} {protocol} seed {seed} {name}")
                record = run_system(SYSTEMS[name], log, splits, ctx, fitted_cache)
                if name not in todo:
                    continue
                record.update(format=CELL_FORMAT, data=spec.name, protocol=protocol, seed=seed, grid_mode=spec.grid,
                              relevance_threshold=relevance_threshold, budget_seconds=spec.budget_seconds,
                              cold_users={str(k): s.n_cold for k, s in splits.test.items()},
                              warm_users=splits.warm.n_users, log=repr(log), command=spec.command,
                              config=spec.config.to_dict() if SYSTEMS[name].family == "recmaml" else None,
                              environment=env, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
                path = cell_path(out, spec.name, protocol, seed, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, record, compact=True)
                if progress is not None:
                    progress.update(1)
    return paths


def read_cells(out: Path) -> list[dict]:
    """Every finished cell under `out`, sorted by (data set, protocol, seed, system)."""
    cells = []
    for path in sorted((Path(out) / "cells").glob("*/*/seed*/*.json")):
        with open(path, encoding="utf-8") as f:
            cells.append(json.load(f))
    return cells


__all__ = ["BenchmarkSpec", "PROTOCOLS", "SYSTEMS", "log_relevance_threshold", "read_cells", "resolve_systems",
           "run_benchmark"]
