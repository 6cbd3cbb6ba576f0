"""fit's last step: how far serving moves a cold user, chosen on fit's own validation users and saved in
the model (serve.first_scales, serve.sample_scales), so that what the benchmark measures is what
`recmaml fit` ships.

One inner step suits the support sizes a model was trained on as a whole, not each of them: one item is
too little evidence for a full step (it can score below not adapting at all), twenty may want a longer
one. So for every support-size bucket (config.SIZE_BUCKETS) and history kind, the multiplier of the inner
learning rate is picked from config.SCALE_GRID by validation nDCG@20 of the served model (minus the MAE of
a rating model), 0 (no step) unless a step beats it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from recmaml.config import SCALE_GRID, SIZE_BUCKETS
from recmaml.data import Interactions
from recmaml.metrics import mean_metrics, ranking_metrics
from recmaml.rank import exclude_items, top_k
from recmaml.tasks import TaskBatch, TaskSampler, split_users

log = logging.getLogger(__name__)

MAX_USERS = 2000  # validation users per (kind, size) evaluation: bounds the cost on large logs
MIN_USERS = 20  # fewer users with that many interactions: the bucket takes the previous bucket's scale


def _ndcg(rec, batch: TaskBatch, scale: float, k: int = 20) -> float:
    """What a serving scale is judged by, higher is better: validation nDCG@k of `rec` serving the batch's
    users (their support, then the catalog) with every per-size scale set to `scale`; for a rating model,
    minus the MAE of its predicted ratings of the users' query items (what the MeLU protocol reports)."""
    support = batch.support()
    served = rec.with_scales((scale,) * len(SIZE_BUCKETS))
    with torch.no_grad():
        if rec.config.model.objective == "rating":
            predicted = served._scores(support, batch.query_items)
            keep = batch.query_mask > 0
            return -float((predicted[keep] - batch.query_ratings[keep]).abs().mean())
        scores = served._scores(support)
        items, _ = top_k(exclude_items(scores, support.items, support.mask), k)
    per_user = ranking_metrics(items.cpu().numpy(), batch.query_items.cpu().numpy(), batch.query_mask.cpu().numpy(), k)
    return mean_metrics(per_user)[f"ndcg@{k}"]


def _best_scale(rec, batch: TaskBatch) -> tuple[float, dict]:
    """The scale of SCALE_GRID with the best validation nDCG@20 (0, no step, unless one beats it)."""
    values = {scale: _ndcg(rec, batch, scale) for scale in SCALE_GRID}
    best = max(SCALE_GRID, key=lambda s: (values[s] if np.isfinite(values[s]) else -np.inf, -s))
    return best, values


def choose_scales(rec, warm: Interactions, user_feats: dict[str, torch.Tensor]) -> dict:
    """serve.first_scales and serve.sample_scales for the fitted `rec`, measured on the validation users
    that meta-training held out (the same users, split with the same seed). Returns the [serve] fields
    to set; both stay one rate for every size (1.0) when there are no validation users. A log without
    timestamps has no 'first' histories to measure: the 'sample' scales serve both."""
    cfg = rec.config
    _, val_users = split_users(warm, cfg.tasks.validation_users, cfg.meta.seed)
    if len(val_users) == 0:
        ones = (1.0,) * len(SIZE_BUCKETS)
        return {"first_scales": ones, "sample_scales": ones}
    rng = np.random.default_rng(cfg.meta.seed + 2)
    counts = np.bincount(warm.user_idx, minlength=warm.n_users)
    chosen = {}
    for kind, order in (("sample", "random"), ("first", "temporal")):
        if order == "temporal" and warm.timestamp is None:
            chosen["first"] = chosen["sample"]
            continue
        tasks_cfg = replace(cfg.tasks, order=order, query_max=10**9)
        sampler = TaskSampler(warm, val_users, tasks_cfg, user_feats, seed=cfg.meta.seed + 2)
        served = rec.with_history_kind(kind)
        scales = []
        for size in SIZE_BUCKETS:
            users = val_users[counts[val_users] > size]
            if len(users) > MAX_USERS:
                users = np.sort(rng.choice(users, MAX_USERS, replace=False))
            if len(users) < MIN_USERS:
                scales.append(scales[-1] if scales else 1.0)
                continue
            batch = sampler.tasks(users, support_size=size).to(rec.device)
            best, values = _best_scale(served, batch)
            log.debug("serving scale, %s histories of %d items: %s -> %s", kind, size, values, best)
            scales.append(best)
        chosen[kind] = tuple(scales)
    return {"first_scales": chosen["first"], "sample_scales": chosen["sample"]}
