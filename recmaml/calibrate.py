"""fit's last step: the serving choices worth making on validation users, made by fit on its own
validation users and saved in the model, so that what the benchmark measures is what `recmaml fit` ships.

0. Which history rows are dislikes (serve.dislike_threshold 'auto': the middle of the warm log's rating
   scale, recmaml.scoring.resolved_dislike_threshold), first, so that what follows is chosen serving them.
1. How far serving moves a cold user (serve.first_scales, serve.sample_scales). One inner step suits the
   support sizes a model was trained on as a whole, not each of them: one item is too little evidence for
   a full step (it can score below not adapting at all), twenty may want a longer one. So for every
   support-size bucket (config.SIZE_BUCKETS) and history kind, the multiplier of the inner learning rate
   is picked from config.SCALE_GRID by validation nDCG@20 of the served model (minus the MAE of a rating
   model), 0 (no step) unless a step beats it.
2. The serving priors (recmaml.priors, implicit objective): which rows EASE reads (every row, or those
   rated at least the positive threshold) and its strength (priors.EASE_LAMBDAS), by the validation
   nDCG@20 of EASE alone on 5-item histories; which rows the popularity counts and its window
   (priors.WINDOWS_DAYS), by that of the windowed popularity alone on users with no history; then, per
   history kind, the weight of each prior beside the served scorer, first EASE's, then the window's
   given EASE's: for histories of 1 to 20 items a smooth function of the size (a weight at 1 item and
   one at 20, from config.PRIOR_GRID, joined on the log of the size), chosen on every size's users
   together; for users with no history the window's weight on its own. 0 unless a weight beats it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from recmaml.config import PRIOR_BUCKETS, PRIOR_GRID, SCALE_GRID, SIZE_BUCKETS
from recmaml.data import Interactions
from recmaml.metrics import mean_metrics, ranking_metrics
from recmaml.priors import EASE_LAMBDAS, WINDOWS_DAYS, ease_table, fit_priors, refit_priors, standardize_
from recmaml.rank import exclude_items, top_k
from recmaml.scoring import adapted_users, resolved_dislike_threshold, with_dislikes
from recmaml.tasks import TaskBatch, TaskSampler, split_users

log = logging.getLogger(__name__)

MAX_USERS = 2000  # validation users per (kind, size) evaluation: bounds the cost on large logs
MIN_USERS = 20  # fewer users with that many interactions: the bucket takes the previous bucket's choice
DEFAULT_LAMBDA = 500.0  # EASE's strength when there are no validation users to choose it
DEFAULT_WINDOW_DAYS = 365.0  # and the popularity window's
RATING_STEPS = (1, 2, 3, 4)  # serving inner steps fit tries for a rating model (the MeLU protocol's MAE)
FILTER_LAMBDA = 2000.0  # the EASE strength at which fit decides whether EASE reads every row or the liked ones


def ndcg(scores: torch.Tensor, batch: TaskBatch, k: int = 20) -> float:
    """Validation nDCG@k of catalog `scores` (B, n_items) of the batch's users, their support excluded."""
    support = batch.support()
    items, _ = top_k(exclude_items(scores, support.items, support.mask), k)
    per_user = ranking_metrics(items.cpu().numpy(), batch.query_items.cpu().numpy(), batch.query_mask.cpu().numpy(), k)
    return mean_metrics(per_user)[f"ndcg@{k}"]


def _served_value(rec, batch: TaskBatch, scale: float) -> float:
    """What a serving scale is judged by, higher is better: validation nDCG@20 of `rec` serving the batch's
    users (their support, then the catalog; the scorer alone) with every per-size scale set to `scale`; for
    a rating model, minus the MAE of its predicted ratings of the users' query items (the MeLU protocol's)."""
    support = batch.support()
    served = rec.with_scales((scale,) * len(SIZE_BUCKETS))
    with torch.no_grad():
        if rec.config.model.objective == "rating":
            predicted = adapted_users(served, support).scores(batch.query_items)
            keep = batch.query_mask > 0
            return -float((predicted[keep] - batch.query_ratings[keep]).abs().mean())
        return ndcg(adapted_users(served, support).model_scores(), batch)


def _best(values: dict):
    """The key with the highest finite value; ties go to the first key in the dict's order (the grids are
    ascending, so to the smallest: 0, nothing added)."""
    return max(values, key=lambda key: values[key] if np.isfinite(values[key]) else -np.inf)


class _ValidationTasks:
    """The validation users' tasks per (history kind, support size), built once and shared by every choice.
    A size's users are those with more interactions than it (so each keeps a query), at most MAX_USERS."""

    def __init__(self, rec, warm: Interactions, val_users: np.ndarray, user_feats: dict[str, torch.Tensor]):
        cfg = rec.config
        self.rec, self.warm, self.val_users = rec, warm, val_users
        self.counts = np.bincount(warm.user_idx, minlength=warm.n_users)
        self.samplers = {}
        for kind, order in (("sample", "random"), ("first", "temporal")):
            if order == "temporal" and warm.timestamp is None:
                continue  # no 'first' histories to measure: the 'sample' choices serve both
            tasks_cfg = replace(cfg.tasks, order=order, query_max=10**9)
            self.samplers[kind] = TaskSampler(warm, val_users, tasks_cfg, user_feats, seed=cfg.meta.seed + 2)
        self._cache = {}

    @property
    def kinds(self) -> list[str]:
        return list(self.samplers)

    def batch(self, kind: str, size: int) -> TaskBatch | None:
        if (kind, size) not in self._cache:
            users = self.val_users[self.counts[self.val_users] > size]
            if len(users) > MAX_USERS:
                rng = np.random.default_rng(self.rec.config.meta.seed + 2 + size)
                users = np.sort(rng.choice(users, MAX_USERS, replace=False))
            batch = None
            if len(users) >= MIN_USERS:
                batch = self.samplers[kind].tasks(users, support_size=size).to(self.rec.device)
            self._cache[(kind, size)] = batch
        return self._cache[(kind, size)]


def choose_scales(rec, tasks: _ValidationTasks) -> dict:
    """serve.first_scales and serve.sample_scales (see the module docstring); for a rating model whose
    serve.inner_steps is unset, also serve.inner_steps from RATING_STEPS (the count whose per-size scales
    give the best sum of the buckets' values)."""
    if rec.config.model.objective != "rating" or rec.config.serve.inner_steps is not None:
        return _scales_for(rec, tasks)[0]
    tried = {steps: _scales_for(rec.with_serving(inner_steps=steps), tasks) for steps in RATING_STEPS}
    steps = max(tried, key=lambda s: tried[s][1])  # the first of equals: the fewest steps
    log.debug("serving steps of the rating model: %s -> %d", {s: v[1] for s, v in tried.items()}, steps)
    return {**tried[steps][0], "inner_steps": steps}


def _scales_for(rec, tasks: _ValidationTasks) -> tuple[dict, float]:
    """(the scale fields, the sum over kinds and sizes of the chosen scales' validation values)."""
    chosen, total = {}, 0.0
    for kind in tasks.kinds:
        served = rec.with_history_kind(kind)
        scales = []
        for size in SIZE_BUCKETS:
            batch = tasks.batch(kind, size)
            if batch is None:
                scales.append(scales[-1] if scales else 1.0)
                continue
            values = {scale: _served_value(served, batch, scale) for scale in SCALE_GRID}
            log.debug("serving scale, %s histories of %d items: %s", kind, size, values)
            scales.append(_best(values))
            total += values[scales[-1]] if np.isfinite(values[scales[-1]]) else -np.inf
        chosen[kind] = tuple(scales)
    chosen.setdefault("first", chosen["sample"])
    return {"first_scales": chosen["first"], "sample_scales": chosen["sample"]}, total


def fit_calibrated_priors(rec, warm: Interactions, tasks: _ValidationTasks | None):
    """The serving priors of `rec`'s warm log, with the rows each reads (every row, or the liked ones),
    EASE's strength and the popularity window chosen on the validation users (the defaults without them)."""
    threshold = rec.config.tasks.positive_threshold
    if tasks is None:
        priors = fit_priors(warm, threshold, DEFAULT_LAMBDA, threshold).to(rec.device)
        # without timestamps the window stays the whole log's, as fit_priors set it
        return priors.with_window(DEFAULT_WINDOW_DAYS) if priors.has_time else priors
    kind = "first" if "first" in tasks.kinds else "sample"
    filters = (threshold, None) if threshold is not None else (None,)
    priors = fit_priors(warm, threshold, FILTER_LAMBDA, threshold).to(rec.device)
    batch = tasks.batch(kind, 5) or tasks.batch(kind, 1)
    if batch is not None:
        support = with_dislikes(rec.config, batch.support())  # EASE subtracts a dislike's row, as served

        def ease_value(lam: float, rows: float | None) -> float:
            if (float(priors.ease_lambda), priors.ease_rows()) != (lam, rows):
                priors.set_ease(*ease_table(warm, rows, lam), lam, rows)
            return ndcg(priors.ease(support.items, support.signed(), support.ratings), batch)

        # which rows EASE reads, at a middle strength, then its strength with those rows
        values = {(FILTER_LAMBDA, rows): ease_value(FILTER_LAMBDA, rows) for rows in filters}
        rows = _best(values)[1]
        values.update({(lam, rows): ease_value(lam, rows) for lam in EASE_LAMBDAS if lam != FILTER_LAMBDA})
        lam, rows = _best(values)
        log.debug("serving priors, EASE (strength, rows rated at least): %s -> %s", values, (lam, rows))
        ease_value(lam, rows)
    if priors.has_popularity:
        # a log without times has one window, the whole log: only its rows are chosen
        windows = WINDOWS_DAYS if priors.has_time else (float("inf"),)
        batch = tasks.batch(kind, 0)
        values = {}
        for rows in filters if batch is not None else ():
            priors.set_time(warm, rows)
            support = batch.support()
            values.update({(days, rows): ndcg(priors.with_window(days).popularity(support.user_feats, len(support.items)),
                                              batch) for days in windows})
        days, rows = _best(values) if values else (DEFAULT_WINDOW_DAYS if priors.has_time else windows[0], threshold)
        log.debug("serving priors, popularity (window, rows rated at least): %s -> %s", values, (days, rows))
        priors.set_time(warm, rows)
        priors.with_window(days)
    return priors


def describe(priors) -> str:
    """The priors' settings in words, for fit's log."""
    def rows(threshold: float | None) -> str:
        return "every row" if threshold is None else f"rows rated >= {threshold:g}"

    text = f"EASE strength {float(priors.ease_lambda):g} on {rows(priors.ease_rows())}"
    if priors.has_time:
        text += (f"; popularity over the {float(priors.window_seconds) / 86400:g} days before a user's time, "
                 f"on {rows(priors.recent_rows())}")
    elif priors.has_popularity:
        text += f"; popularity over the whole log (no timestamps), on {rows(priors.recent_rows())}"
    return text


def smooth_weights(at_one: float, at_most: float) -> tuple[float, ...]:
    """A prior's weights for the support sizes of PRIOR_BUCKETS from 1 item up: on the line from `at_one`
    (1 item) to `at_most` (SIZE_BUCKETS[-1] items and more) in the log of the size."""
    position = np.log(SIZE_BUCKETS) / np.log(SIZE_BUCKETS[-1])
    return tuple(round(float(at_one + (at_most - at_one) * t), 4) for t in position)


SMOOTH_PAIRS = tuple((a, b) for a in PRIOR_GRID for b in PRIOR_GRID)  # (weight at 1 item, at 20 or more)
SMOOTH_CURVES = {pair: smooth_weights(*pair) for pair in SMOOTH_PAIRS}  # each pair's weights, sizes 1 to 20+


def choose_prior_weights(rec, tasks: _ValidationTasks) -> dict:
    """serve.{first,sample}_{ease,recent}_weights for `rec` (its scales chosen, its priors fitted): per
    history kind, EASE's weights, then the popularity's given EASE's (_prior_curve)."""
    chosen = {}
    for kind in tasks.kinds:
        served = rec.with_history_kind(kind)
        ease_w = _prior_curve(served, tasks, kind, "ease", None)
        recent_w = (_prior_curve(served, tasks, kind, "recent", ease_w) if served.priors.has_popularity
                    else (0.0,) * len(PRIOR_BUCKETS))
        chosen[kind] = (ease_w, recent_w)
    chosen.setdefault("first", chosen["sample"])
    return {"first_ease_weights": chosen["first"][0], "first_recent_weights": chosen["first"][1],
            "sample_ease_weights": chosen["sample"][0], "sample_recent_weights": chosen["sample"][1]}


def _prior_curve(served, tasks: _ValidationTasks, kind: str, prior: str, ease_w: tuple | None) -> tuple[float, ...]:
    """One prior's weight per PRIOR_BUCKETS size, for one history kind. Users with some history get a smooth
    function of their history's size (smooth_weights: a weight at 1 item and one at 20, from PRIOR_GRID),
    the pair with the best validation nDCG@20 summed over every size's users: two choices made on all the
    validation users, where a free weight per size, each chosen on one size's users, followed their noise
    (two fits of one log chose EASE weights 0 and 0.5 for 5-9 items). Users with no history get the
    popularity's best weight of PRIOR_GRID on their own (EASE has nothing to say to them). 0 unless a
    weight beats it."""
    values, users = {}, {}
    for bucket, size in enumerate(PRIOR_BUCKETS):
        batch = tasks.batch(kind, size)
        if batch is None or (prior == "ease" and size == 0):
            continue
        base, signal = _scorer_and_prior(served, batch, prior, ease_w[bucket] if ease_w else 0.0)
        if signal is None:
            continue
        weights = PRIOR_GRID if size == 0 else sorted({curve[bucket - 1] for curve in SMOOTH_CURVES.values()})
        with torch.no_grad():
            values[bucket] = {w: ndcg(base + w * signal, batch) for w in weights}
        users[bucket] = int((batch.query_mask.sum(1) > 0).sum())
    at_zero = _best(values.pop(0)) if 0 in values else 0.0

    def total(curve) -> float:
        return sum(users[b] * values[b][curve[b - 1]] for b in values if np.isfinite(values[b][curve[b - 1]]))

    pair = _best({pair: total(curve) for pair, curve in SMOOTH_CURVES.items()}) if values else (0.0, 0.0)
    log.debug("serving priors, %s histories, %s: %s items -> %s; none -> %s", kind, prior,
              {PRIOR_BUCKETS[b]: users[b] for b in users}, SMOOTH_CURVES[pair], at_zero)
    return (at_zero, *SMOOTH_CURVES[pair])


def _scorer_and_prior(served, batch: TaskBatch, prior: str, ease_weight: float):
    """(the served scorer's standardized scores of the batch's users, plus `ease_weight` times EASE's when
    `prior` is the popularity; the prior's standardized scores, None when it has nothing to say)."""
    priors = served.priors
    with torch.no_grad():
        users = adapted_users(served, batch.support())
        support = users.support  # with its dislikes' labels
        base = standardize_(users.model_scores())
        has_history = bool(support.mask.any())
        if prior == "ease":
            return base, priors.ease(support.items, support.signed(), support.ratings) if has_history else None
        if ease_weight and has_history:
            base.add_(priors.ease(support.items, support.signed(), support.ratings), alpha=ease_weight)
        return base, priors.popularity(support.user_feats, len(support.items))


def calibrate(rec, warm: Interactions, user_feats: dict[str, torch.Tensor], val_users: np.ndarray | None = None) -> dict:
    """Every serving choice of fit for the fitted `rec` (the module docstring), measured on the validation
    users that meta-training held out (the same users, split with the same seed): sets rec.priors and
    returns the [serve] fields left 'auto' to set. val_users: those users, as recmaml.build.prepare split
    them (None: split here). Without validation users the scales stay one rate for
    every size (1.0) and the priors' weights 0."""
    # which history rows are dislikes, first: the scales and weights below are chosen serving them so
    fields = {"dislike_threshold": resolved_dislike_threshold(rec.config, warm.rating)}
    rec.config = rec.config.replace(serve=fields)
    cfg = rec.config
    if val_users is None:
        _, val_users = split_users(warm, cfg.tasks.validation_users, cfg.meta.seed)
    tasks = _ValidationTasks(rec, warm, val_users, user_feats) if len(val_users) else None
    if tasks is None:
        fields.update(first_scales=(1.0,) * len(SIZE_BUCKETS), sample_scales=(1.0,) * len(SIZE_BUCKETS))
    else:
        fields.update(choose_scales(rec, tasks))
    rec.config = cfg.replace(serve={k: v for k, v in fields.items() if getattr(cfg.serve, k) in ("auto", None)})
    rec.priors = None
    if cfg.serve.priors and cfg.model.objective == "implicit":
        zeros = (0.0,) * len(PRIOR_BUCKETS)
        weights = dict.fromkeys(("first_ease_weights", "first_recent_weights", "sample_ease_weights",
                                 "sample_recent_weights"), zeros)
        if tasks is None:
            rec.priors = fit_calibrated_priors(rec, warm, None)
        else:
            # chosen with priors that do not know the validation users' rows: EASE fitted on them would
            # have seen the hidden items (on CiaoDVD its validation nDCG@20 read 0.60, its test 0.09)
            unseen = np.isin(warm.user_idx, val_users)
            rec.priors = fit_calibrated_priors(rec, warm.take(np.flatnonzero(~unseen)), tasks)
            weights = choose_prior_weights(rec, tasks)
            rec.priors = refit_priors(rec.priors, warm)  # served: the same settings, the whole warm log
        log.debug("serving priors: %s", describe(rec.priors))  # the CLI's fit says it once the bars are closed
        fields.update(weights)
    return {k: v for k, v in fields.items() if getattr(cfg.serve, k) in ("auto", None) or k == "dislike_threshold"}
