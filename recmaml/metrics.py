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
