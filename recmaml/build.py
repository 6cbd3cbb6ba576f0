"""Building a model: the warm log's settings resolved once (PreparedLog), then each set of weights built
at its data-derived start and meta-trained (trained_scorer). MetaRecommender.fit is these two steps and
fit's calibration (recmaml.calibrate)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from recmaml import distributed
from recmaml import resume as resume_files
from recmaml.config import Config
from recmaml.data import UNKNOWN, Interactions, Vocabulary, is_count_column, relevant_rating
from recmaml.errors import ConfigError, DataError, warn_caller
from recmaml.meta import TrainHistory, meta_train, training_length
from recmaml.model import TIME_EDGES, FeatureSpec, Scorer, feature_tensors
from recmaml.progress import optional_bar
from recmaml.resume import EpochCheckpoint
from recmaml.tasks import split_users
from recmaml.times import in_seconds

log = logging.getLogger(__name__)

MIN_POSITIVE_SHARE = 0.05
"""A tasks.positive_threshold that leaves fewer of the warm log's rows positive than this is warned about."""


class FewPositivesWarning(UserWarning):
    """tasks.positive_threshold (derived or given) leaves few of the warm log's rows positive (under
    MIN_POSITIVE_SHARE): meta-training learns from almost nothing. `share` is the positive share."""

    def __init__(self, message: str, share: float = 0.0):
        super().__init__(message)
        self.share = share


@dataclass
class PreparedLog:
    """The warm log as fit trains on it: its side features in model terms (numeric ones standardized
    with its statistics; `user_layout` keeps how, so that cold users' features are read the same way),
    the config with every log-derived setting concrete, and its users split once into training and
    validation users (what meta-training and fit's calibration both use)."""

    log: Interactions
    config: Config
    user_layout: dict | None
    user_feats: dict[str, torch.Tensor]  # the user tower's inputs, one row per warm user
    train_users: np.ndarray
    val_users: np.ndarray

    @property
    def rating_range(self) -> tuple[float, float] | None:
        rating = self.log.rating
        return None if rating is None else (float(rating.min()), float(rating.max()))


def prepare(config: Config, warm: Interactions, rating_col: str | None = None) -> PreparedLog:
    """Check the warm log against the config and resolve what the log decides (resolve_for_log, whose
    messages name `rating_col`, the warm log's rating column, when given)."""
    if len(warm) == 0:
        raise DataError("fit: the warm log is empty")
    if config.model.objective == "rating" and warm.is_implicit:
        raise DataError("fit: model.objective = 'rating' needs a log with ratings; "
                        "set objective = 'implicit' in the config for logs without ratings")
    if warm.timestamp is not None:  # read logs are seconds already; an Interactions built by hand may not be
        warm = replace(warm, timestamp=in_seconds(warm.timestamp, "the warm log's timestamps"))
    config = resolve_for_log(config, warm, rating_col=rating_col)
    if distributed.launched():  # one of torchrun's ranks: join the group, train on this rank's device
        config = config.replace(meta={"device": distributed.init_from_env(config.meta.device)})
    user_layout = warm.user_features.layout() if warm.user_features else None
    user_features = warm.user_features.conformed(user_layout) if warm.user_features else None
    item_features = warm.item_features.conformed(warm.item_features.layout()) if warm.item_features else None
    warm = replace(warm, user_features=user_features, item_features=item_features)
    _check_model_fits_in_memory(config, warm.n_items)
    train_users, val_users = split_users(warm, config.tasks.validation_users, config.meta.seed)
    user_feats = feature_tensors(warm.user_features, FeatureSpec.of(warm.user_features), warm.n_users)
    return PreparedLog(warm, config, user_layout, user_feats, train_users, val_users)


def item_factors_for(prepared: PreparedLog, item_factors):
    """The (item ids, factors) the item embeddings start from: the caller's, else an ALS fit's when
    model.item_init = 'als', else None (a random start)."""
    if item_factors is None and prepared.config.model.item_init == "als":
        return _als_item_factors(prepared.log, prepared.config)
    return item_factors


def trained_scorer(prepared: PreparedLog, item_factors, progress, checkpoint_dir, resume: bool,
                   sample: bool = False) -> tuple[Scorer, TrainHistory]:
    """A scorer built at its data-derived start and meta-trained; `sample`: the weights that serve
    'sample' histories, trained on random supports alone, with their checkpoints in a subfolder.
    progress: True (a bar here), or the caller's callable(epoch, record); one with a `finished(what,
    history)` method is also told when these weights stop (the CLI logs why there, in order)."""
    config = prepared.config
    if sample:
        config = config.replace(tasks={"order": "random"})
        checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / resume_files.SAMPLE_WEIGHTS
    torch.manual_seed(config.meta.seed)  # the initial weights are part of what a seed fixes
    model = new_scorer(prepared.log, config, item_factors)
    what = "sample weights" if sample else "meta-training"
    with optional_bar(progress, config.meta.epochs, "epoch", what) as bar:
        checkpoint = None if checkpoint_dir is None else EpochCheckpoint.in_folder(checkpoint_dir, resume)
        history = meta_train(model, prepared.log, config, prepared.user_feats, checkpoint=checkpoint,
                             progress=epoch_progress(bar) if bar is not None else (progress or None),
                             split=(prepared.train_users, prepared.val_users))
        if bar is not None:
            if len(history.epochs) < bar.total:  # stopped early: close the bar at the stop, not short of it
                bar.total = len(history.epochs)
                bar.set_description(f"{what} stopped ({history.stopped})")
                bar.refresh()
            bar.write(f"{what} {history.summary()}", file=bar.fp)
    finished = getattr(progress, "finished", None)
    if callable(finished):  # the caller's display says why these weights stopped before the next set starts
        finished(what, history)
    return model.eval(), history


def new_scorer(warm: Interactions, config: Config, item_factors) -> Scorer:
    """A scorer of the config's shape at its data-derived start: item biases at the log's popularity
    (or mean ratings), item embeddings at `item_factors`, the item-kNN and time-prior tables filled."""
    model = Scorer(warm.n_items, config.model, item_features=warm.item_features,
                   user_spec=FeatureSpec.of(warm.user_features))
    if config.model.objective == "rating":
        _init_rating_biases(model, warm)
    else:
        _init_popularity_biases(model, warm)
    if item_factors is not None:
        _init_item_embeddings(model, warm.items, *item_factors)
    if config.model.item_knn:
        model.set_item_knn(*_item_knn_table(warm, config))
    if config.model.time_prior:
        model.set_time_prior(*_time_table(warm, config))
    return model


def epoch_progress(bar):
    """fit's progress callable(epoch, record) that moves `bar`, with the meta-loss and validation figure."""
    def update(epoch: int, record: dict) -> None:
        if record.get("of") and bar.total != record["of"]:  # meta.epochs = 'auto' is known once fit starts
            bar.total = record["of"]
        postfix = {"meta_loss": f"{record['train_loss']:.4f}"}
        if "metric" in record:
            postfix[f"val_{record['metric'].lower()}"] = f"{record['metric_value']:.4f}"
        bar.set_postfix(postfix)
        bar.update(1)
    return update


def _init_rating_biases(model: Scorer, warm: Interactions, damping: float = 5.0) -> None:
    """Start the rating scorer at 'global mean + damped item mean deviation': meta-learning then refines
    a sensible predictor instead of spending its first epochs walking the biases to the rating scale."""
    mean = float(warm.rating.mean())
    sums = np.bincount(warm.item_idx, weights=warm.rating - mean, minlength=warm.n_items)
    counts = np.bincount(warm.item_idx, minlength=warm.n_items)
    with torch.no_grad():
        model.global_bias.fill_(mean)
        model.item_bias.copy_(torch.from_numpy((sums / (counts + damping)).astype(np.float32)))


def _check_model_fits_in_memory(config: Config, n_items: int) -> None:
    """Refuse, before any allocation, a model whose item tables (weights, the gradient summed over the
    gradient groups and one group's, Adam's two moments) would not fit in this machine's memory: a
    mistyped model.embedding_dim would otherwise take minutes to fail deep inside torch."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    m = config.model
    per_item = m.embedding_dim + m.support_encoder + 1 + m.item_knn
    needed = 4 * 5 * n_items * per_item  # float32 x (weights, two gradients, two Adam moments)
    if needed > memory:
        raise ConfigError(f"model.embedding_dim = {m.embedding_dim} (with support_encoder = {m.support_encoder}) "
                          f"needs about {needed / 2**30:.0f} GiB for {n_items:,} items, more than this machine's "
                          f"{memory / 2**30:.0f} GiB; use a smaller width (64 is the default)")


def resolve_for_log(config: Config, warm: Interactions, *, rating_col: str | None = None) -> Config:
    """The config with its log-derived settings made concrete (saved with the model, so it says what was
    used): tasks.positive_threshold = 'auto' becomes the log's relevant rating (None for the rating
    objective, whose query is every rating, for logs without ratings and for a rating column of counts,
    with a note); meta.epochs and meta.patience = 'auto' become counts that follow the number of training
    users (recmaml.meta.training_length). A threshold that leaves few rows positive is a FewPositivesWarning
    naming `rating_col`."""
    if config.model.time_prior and (warm.timestamp is None or config.model.objective == "rating"):
        # nothing to date the log's popularity by; and a rating is no popularity contest
        config = config.replace(model={"time_prior": False})
    if config.model.history_kind and warm.timestamp is None:  # every task a random one: no kind to tell apart
        config = config.replace(model={"history_kind": False})
    if config.serve.history_kind == "auto":  # a real new user shows its first interactions, when they are known
        config = config.replace(serve={"history_kind": "first" if warm.timestamp is not None else "sample"})
    derived = config.tasks.positive_threshold == "auto"
    if derived:
        threshold = None if config.model.objective == "rating" else relevant_rating(warm.rating)
        if config.model.objective == "implicit" and is_count_column(warm.rating):
            log.warning("note: %s", _counts_note(warm.rating, rating_col))
        config = config.replace(tasks={"positive_threshold": threshold})
    threshold = config.tasks.positive_threshold
    if (config.model.objective == "implicit" and isinstance(threshold, (int, float)) and warm.rating is not None
            and len(warm.rating)):
        _check_positive_share(warm.rating, threshold, rating_col, derived)
    if "auto" in (config.meta.epochs, config.meta.patience):
        train_users, _ = split_users(warm, config.tasks.validation_users, config.meta.seed)
        meta = training_length(config.meta, len(train_users))
        config = config.replace(meta={"epochs": meta.epochs, "patience": meta.patience})
    return config


def _column(rating_col: str | None) -> str:
    return f"rating column {rating_col!r}" if rating_col else "rating column"


def _counts_note(rating: np.ndarray, rating_col: str | None) -> str:
    return (f"the warm log's {_column(rating_col)} holds counts, not a rating scale (whole numbers from "
            f"{float(rating.min()):,.0f} to {float(rating.max()):,.0f}, median {float(np.median(rating)):,.0f}): "
            "tasks.positive_threshold = 'auto' counts every row as a positive (implicit feedback; the counts "
            "are not read). To keep only rows with at least some count, set tasks.positive_threshold to that "
            "count in the config")


def _check_positive_share(rating: np.ndarray, threshold: float, rating_col: str | None, derived: bool) -> None:
    """A ConfigError when `threshold` leaves no row positive, a FewPositivesWarning when it leaves fewer than
    MIN_POSITIVE_SHARE of them (`derived`: by 'auto'): a model meta-trained on a handful of positives is a
    silent wrong answer."""
    positives = int(np.count_nonzero(rating >= threshold))
    span = f"[{float(rating.min()):g}, {float(rating.max()):g}]"
    if positives == 0:
        raise ConfigError(f"tasks.positive_threshold = {threshold:g} leaves no positive interaction: the warm log's "
                          f"{_column(rating_col)} lies in {span}; use 'auto' (the log's own scale) or a rating "
                          "in that range")
    share = positives / len(rating)
    if share < MIN_POSITIVE_SHARE:
        if derived:
            fix = (f"set tasks.positive_threshold in the config to a lower rating ({float(rating.min()):g}: every "
                   "row a positive)")
        elif is_count_column(rating):
            fix = "leave tasks.positive_threshold out ('auto': every row a positive, as counts such as plays need)"
        else:
            fix = "use tasks.positive_threshold = 'auto' (the log's own scale) or a lower rating"
        warn_caller(FewPositivesWarning(
            f"tasks.positive_threshold = {threshold:g} leaves {positives:,} of the warm log's {len(rating):,} rows "
            f"({100 * share:.2g}%) positive in its {_column(rating_col)} (values in {span}): meta-training "
            f"learns from almost nothing; {fix}", share=share))


def _init_popularity_biases(model: Scorer, warm: Interactions) -> None:
    """Start the implicit scorer's item biases at the log of each item's warm count (plus one), centred:
    the softmax of the start then ranks by popularity, the best a user with no history can get before
    meta-learning refines it, instead of an arbitrary order that puts obscure items first."""
    counts = np.bincount(warm.item_idx, minlength=warm.n_items).astype(np.float64)
    log_counts = np.log1p(counts)
    with torch.no_grad():
        model.item_bias.copy_(torch.from_numpy((log_counts - log_counts.mean()).astype(np.float32)))


def _item_knn_table(warm: Interactions, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weight) of each item's model.item_knn cosine neighbours on the warm log (its positives
    only, by tasks.positive_threshold), padded with weight 0: what model.item_knn adds to the scores."""
    from recmaml.baselines import ItemKNN

    m = config.model.item_knn
    if config.model.item_item == "ease":
        from recmaml.priors import ease_table

        index, weight = ease_table(warm, config.tasks.positive_threshold, config.model.item_item_lam, neighbors=m)
        pad = m - index.shape[1]  # a catalog smaller than m + 1 items
        return (torch.from_numpy(np.pad(index.astype(np.int64), ((0, 0), (0, pad)))),
                torch.from_numpy(np.pad(weight, ((0, 0), (0, pad)))))
    W = ItemKNN(neighbors=m, shrink=config.model.item_knn_shrink,
                threshold=config.tasks.positive_threshold).fit(warm).W.tocsr()  # resolved: a rating or None
    counts = np.diff(W.indptr)
    rows = np.repeat(np.arange(W.shape[0]), counts)
    slots = np.arange(len(rows)) - np.repeat(W.indptr[:-1], counts)
    index = np.zeros((W.shape[0], m), np.int64)
    weight = np.zeros((W.shape[0], m), np.float32)
    index[rows, slots], weight[rows, slots] = W.indices, W.data
    return torch.from_numpy(index), torch.from_numpy(weight)


def _time_table(warm: Interactions, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """model.time_prior's table: TIME_EDGES quantiles of the warm log's timestamps and the cumulative count of
    each item's positives (tasks.positive_threshold) up to each (recmaml.priors.time_table)."""
    from recmaml.priors import time_table

    return time_table(warm, config.tasks.positive_threshold, TIME_EDGES)


def _als_item_factors(warm: Interactions, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, factors) of an implicit ALS model fitted on the warm log, as wide as the embeddings."""
    from recmaml.baselines import ALSFoldIn

    als = ALSFoldIn(factors=config.model.embedding_dim, regularization=config.model.als_regularization,
                    seed=config.meta.seed).fit(warm)
    return warm.items.ids, np.asarray(als.model.item_factors)


def _init_item_embeddings(model: Scorer, items: Vocabulary, item_ids, factors) -> None:
    """Copy given item factors into the item embeddings (matched by item id), rescaled to the
    embeddings' initial scale so that the meta-learning rates keep their meaning."""
    factors = np.asarray(factors, dtype=np.float32)
    d = model.item_embedding.weight.shape[1]
    if factors.ndim != 2 or factors.shape[1] != d or len(factors) != len(item_ids):
        raise DataError(f"item_factors must be (n_items, {d}) with one id per row, got {factors.shape} "
                        f"for {len(item_ids)} ids; set model.embedding_dim to the factor count")
    rows = items.index(item_ids)
    known = rows != UNKNOWN
    scale = model.cfg.init_std / max(float(factors[known].std()), 1e-12)
    with torch.no_grad():
        model.item_embedding.weight[torch.as_tensor(rows[known], dtype=torch.long)] = torch.from_numpy(factors[known] * scale)
