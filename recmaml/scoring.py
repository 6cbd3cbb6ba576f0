"""Serving's adapt and score steps: AdaptedUsers, a batch of cold users each adapted on its support (the
shape of implicit's `recalculate_user`), which then scores the catalog or given items.

A user is adapted by serving's fast path when the model adapts only the user side
(recmaml.fast_adapt), else by recmaml.adapt's inner loop. Its scores are the scorer's, or, where the
serving priors have weight for its support size, the standardized scorer's plus the weighted
standardized priors (recmaml.priors).
"""

from __future__ import annotations

import weakref
from dataclasses import replace

import numpy as np
import torch

from recmaml.adapt import adapt, adapted_names, batched_scores
from recmaml.config import PRIOR_BUCKETS, SIZE_BUCKETS, Config
from recmaml.data import is_count_column
from recmaml.fast_adapt import fast_path_applies, fast_user_vectors
from recmaml.model import Scorer
from recmaml.ordered import item_dots, rows_mm
from recmaml.priors import ServingPriors, blend_
from recmaml.tasks import PaddedSet, dislike_labels


class AdaptedUsers:
    """B users adapted on `support` (a PaddedSet) by `scorer` under `config`'s [meta] and [serve] settings;
    `kind` is the history kind served as the scorer's code (0 first, 1 sample). Adapting happens once,
    here; `scores` and `model_scores` may then be called for any items. `sizes` (B,): the support sizes whose
    serving settings (inner-rate scale, priors' weights) apply, when not the supports' own (recmaml.explain
    holds a whole history's settings while it leaves one item out)."""

    def __init__(self, scorer: Scorer, config: Config, priors: ServingPriors | None, support: PaddedSet, kind: int,
                 sizes: torch.Tensor | None = None):
        support = with_dislikes(config, support)
        self.scorer, self.config, self.priors, self.support, self.kind = scorer, config, priors, support, kind
        self.sizes = support.mask.sum(dim=1) if sizes is None else sizes
        m = config.meta
        names = _adapted_names(scorer, m.adapt)
        lr_scale = lr_scales(config, support, self.sizes)
        with torch.no_grad():  # torch.func.grad still differentiates inside; no graph to the meta-weights
            if fast_path_applies(scorer, names):
                self.item_vectors = scorer.catalog_vectors()
                self.vectors, self.bias = fast_user_vectors(
                    scorer, support, names=names, steps=serving_steps(config), inner_lr=m.inner_lr * lr_scale,
                    reduction=m.support_reduction, item_vectors=self.item_vectors, kind=kind)
                self.weights = None
            else:
                self.weights = adapt(scorer, support, names=names, steps=serving_steps(config), inner_lr=m.inner_lr,
                                     first_order=True, reduction=m.support_reduction, lr_scale=lr_scale)

    def scores(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Served scores (B, n_items), or (B, C) of per-user `items`: the scorer's blended with the serving
        priors where they have weight."""
        weights = None if self.config.model.objective == "rating" else prior_weights(self.config, self.priors,
                                                                                     self.support, self.sizes)
        if weights is None:
            return self.model_scores(items)
        scores = blend_(self.model_scores().float(), self.priors, self.support, *weights)
        return scores if items is None else scores.gather(1, items)

    def model_scores(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The adapted scorer's scores alone (B, n_items), or (B, C) of per-user `items`."""
        model = self.scorer
        with torch.no_grad():
            if self.weights is not None:
                return batched_scores(model, self.weights, self.support.user_feats, items)
            vectors = self.item_vectors
            item_bias = model.item_biases(kind=self.kind)
            if items is None:  # products of one fixed shape: a user's scores do not depend on its batch
                scores = rows_mm(self.vectors, vectors.T, item_bias)
            else:
                scores = item_dots(vectors, items, self.vectors) + item_bias[items]
            if model.cfg.objective == "rating":
                scores = scores + self.bias[:, None] + model.global_bias
            return scores


def dislike_threshold(config: Config) -> float | None:
    """The rating below which a history row is a dislike (serve.dislike_threshold, which fit resolves), or
    None when no row is: the rating objective (ratings are its targets), a log without ratings, or
    serve.dislike_threshold None or never resolved ('auto': a model saved before dislikes, whose serving
    scales and prior weights were chosen with every row a like)."""
    threshold = config.serve.dislike_threshold
    if config.model.objective != "implicit" or threshold is None or isinstance(threshold, str):
        return None
    return float(threshold)


def resolved_dislike_threshold(config: Config, ratings: np.ndarray | None) -> float | None:
    """serve.dislike_threshold 'auto' for a warm log's `ratings`: the middle of their range (None for the
    rating objective, a log without ratings or with one rating value, and a column of counts, which says
    how much, not whether a user liked it: recmaml.data.is_count_column); a set value stays."""
    threshold = config.serve.dislike_threshold
    if threshold != "auto":
        return threshold
    if config.model.objective != "implicit" or ratings is None or len(ratings) == 0 or is_count_column(ratings):
        return None
    lo, hi = float(np.min(ratings)), float(np.max(ratings))
    return None if lo == hi else (lo + hi) / 2


def with_dislikes(config: Config, support: PaddedSet) -> PaddedSet:
    """`support` with its rows' labels (recmaml.tasks.dislike_labels): a dislike is left out of the inner step
    and the EASE prior (serve.dislike_weight 0) or counts against its item there, and the set encoder reads
    the liked rows only (it was never trained to tell a dislike from a like). Unchanged when no row is a
    dislike."""
    threshold = dislike_threshold(config)
    if support.labels is not None or threshold is None or not bool((support.ratings < threshold).any()):
        return support
    labels = dislike_labels(support.ratings, support.mask, threshold, config.serve.dislike_weight)
    user_feats = dict(support.user_feats)
    if "support_mask" in user_feats:
        user_feats["support_mask"] = user_feats["support_mask"] * (labels > 0).to(labels.dtype)
    return replace(support, labels=labels, user_feats=user_feats)


_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # scorer -> {meta.adapt: its names}


def _adapted_names(scorer: Scorer, adapt: str) -> list[str]:
    """adapted_names, looked up once per scorer (a one-user call would spend a tenth of its time there)."""
    per_setting = _NAMES.setdefault(scorer, {})
    if adapt not in per_setting:
        per_setting[adapt] = adapted_names(scorer, adapt)
    return per_setting[adapt]


def adapted_users(rec, support: PaddedSet, sizes: torch.Tensor | None = None) -> AdaptedUsers:
    """The users of `support` adapted by the fitted MetaRecommender `rec` as it serves now (its history
    kind, serving settings and priors); `sizes` as AdaptedUsers takes them."""
    return AdaptedUsers(rec.serving_scorer, rec.config, rec.priors, support, rec.history_kind_index, sizes)


def serving_steps(config: Config) -> int:
    """Inner steps at serving: serve.inner_steps, else meta.inner_steps."""
    steps = config.serve.inner_steps
    return config.meta.inner_steps if steps is None else steps


def lr_scales(config: Config, support: PaddedSet, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """Per user, the multiplier of the inner learning rate: serve.inner_lr_scale times the scale of its
    support size (or of `sizes`) for the kind of history served (serve.first_scales / sample_scales, chosen
    by fit)."""
    serve = config.serve
    scales = serve.first_scales if serve.history_kind == "first" else serve.sample_scales
    sizes = (support.mask.sum(dim=1) if sizes is None else sizes).cpu().numpy()
    if isinstance(scales, str):  # 'auto' never resolved (a model saved before fit chose them): one rate
        per_user = np.where(sizes > 0, 1.0, 0.0)
    else:
        bucket = np.searchsorted(SIZE_BUCKETS, sizes, side="right") - 1
        per_user = np.where(bucket >= 0, np.asarray(scales, np.float64)[np.maximum(bucket, 0)], 0.0)
    return torch.as_tensor(per_user * serve.inner_lr_scale, dtype=torch.float32, device=support.items.device)


def prior_weights(config: Config, priors: ServingPriors | None, support: PaddedSet, sizes: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
    """Per user, the weights of the serving priors (EASE, popularity) for its support size (or `sizes`) and
    the kind of history served (serve.*_ease_weights, *_recent_weights), each None when all 0 in this batch;
    None when the model serves without priors (none fitted, serve.priors off, or every weight 0)."""
    serve = config.serve
    if priors is None or not serve.priors:
        return None
    prefix = "first" if serve.history_kind == "first" else "sample"
    ease, recent = getattr(serve, f"{prefix}_ease_weights"), getattr(serve, f"{prefix}_recent_weights")
    if isinstance(ease, str) or isinstance(recent, str) or not any(ease) and not any(recent):
        return None  # 'auto' never resolved (a model saved before fit chose them): the scorer alone
    sizes = support.mask.sum(dim=1) if sizes is None else sizes
    bucket = np.searchsorted(PRIOR_BUCKETS, sizes.cpu().numpy(), side="right") - 1
    if not priors.has_popularity:  # a model fitted before logs without times had a popularity prior
        recent = (0.0,) * len(PRIOR_BUCKETS)
    per_user = [np.asarray(w, np.float32)[bucket] for w in (ease, recent)]
    # never None for a batch whose users all have weight 0: every user's scores are standardized, so that a
    # user's scores do not depend on the batch it is served in. None for a prior without weight in this
    # batch: its scores are not computed
    return tuple(torch.as_tensor(w, device=support.items.device) if w.any() else None for w in per_user)
