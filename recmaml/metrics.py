"""Ranking and rating metrics, vectorized over users. Users without a relevant item are left out of
ranking means (their value is NaN), as in common evaluation practice."""

from __future__ import annotations

import numpy as np


def _hits(top_items: np.ndarray, relevant: np.ndarray, relevant_mask: np.ndarray):
    """(U, k) gain index of each ranked item among the user's relevant ones (-1: not relevant)."""
    eq = (top_items[:, :, None] == relevant[:, None, :]) & (relevant_mask[:, None, :] > 0) & (top_items[:, :, None] >= 0)
    return np.where(eq.any(axis=2), eq.argmax(axis=2), -1)


def ranking_metrics(top_items, relevant, relevant_mask, k: int, gains=None) -> dict[str, np.ndarray]:
    """Per-user ndcg@k, recall@k, hit@k and mrr@k.

    top_items: (U, >=k) ranked item indices, -1 for padding. relevant: (U, Q) relevant item indices with
    relevant_mask (U, Q) marking real entries. gains: (U, Q) graded gains (default 1 for binary relevance).
    """
    top_items = np.asarray(top_items)[:, :k]
    relevant = np.asarray(relevant)
    relevant_mask = np.asarray(relevant_mask) > 0
    gains = np.ones(relevant.shape) if gains is None else np.asarray(gains, dtype=np.float64)
    gains = np.where(relevant_mask, gains, 0.0)
    hit_idx = _hits(top_items, relevant, relevant_mask)
    is_hit = hit_idx >= 0
    discount = 1.0 / np.log2(np.arange(top_items.shape[1]) + 2.0)
    hit_gain = np.where(is_hit, np.take_along_axis(gains, np.maximum(hit_idx, 0), axis=1), 0.0)
    dcg = (hit_gain * discount).sum(axis=1)
    ideal = -np.sort(-gains, axis=1)[:, : top_items.shape[1]]
    idcg = (ideal * discount[: ideal.shape[1]]).sum(axis=1)
    n_rel = relevant_mask.sum(axis=1)
    has_rel = n_rel > 0
    first = np.where(is_hit.any(axis=1), is_hit.argmax(axis=1) + 1, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            f"ndcg@{k}": np.where(has_rel, dcg / idcg, np.nan),
            f"recall@{k}": np.where(has_rel, is_hit.sum(axis=1) / np.minimum(n_rel, k), np.nan),
            f"hit@{k}": np.where(has_rel, is_hit.any(axis=1).astype(float), np.nan),
            f"mrr@{k}": np.where(has_rel, 1.0 / first, np.nan),
        }


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan") for name, values in per_user.items()}


def mae(pred, truth) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))))


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def reciprocal_ranks(scores: np.ndarray, rel_user: np.ndarray, rel_item: np.ndarray, n_users: int,
                     chunk: int = 2048) -> np.ndarray:
    """Per-user 1 / (rank of the best-ranked relevant item) over the whole list (NaN: no relevant item).

    scores: (U, n_items), excluded items at -inf; the rank of an item is 1 + the number of items scored
    strictly higher (ties share the better rank). rel_user, rel_item: the relevant (user, item) pairs."""
    rel_user, rel_item = np.asarray(rel_user, np.int64), np.asarray(rel_item, np.int64)
    best = np.full(n_users, np.inf)
    for start in range(0, len(rel_user), chunk):
        users, items = rel_user[start:start + chunk], rel_item[start:start + chunk]
        rows = scores[users]
        rank = (rows > rows[np.arange(len(users)), items][:, None]).sum(axis=1) + 1.0
        np.minimum.at(best, users, rank)
    return np.where(np.isfinite(best), 1.0 / best, np.nan)


def random_ndcg(gains: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Per-user expected nDCG@k of a uniformly random order of each user's items (graded `gains`, (U, Q)
    with `mask` marking real entries): every position holds an item drawn uniformly, so
    E[DCG@k] = mean gain x sum of the first min(k, n) discounts, and the ideal DCG is fixed."""
    gains = np.where(np.asarray(mask) > 0, np.asarray(gains, np.float64), 0.0)
    n = (np.asarray(mask) > 0).sum(axis=1)
    discount = 1.0 / np.log2(np.arange(gains.shape[1]) + 2.0)
    cum = np.r_[0.0, np.cumsum(discount)]
    expected = gains.sum(axis=1) / np.maximum(n, 1) * cum[np.minimum(n, k)]
    ideal = -np.sort(-gains, axis=1)[:, :k]
    idcg = (ideal * discount[: ideal.shape[1]]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n > 0) & (idcg > 0), expected / idcg, np.nan)
