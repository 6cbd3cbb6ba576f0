"""Top-k over the catalog or over given candidates, excluding items a user has already shown."""

from __future__ import annotations

import torch

_EXCLUDED = float("-inf")


def exclude_items(scores: torch.Tensor, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores (B, n) with the masked entries of `items` (B, S) set to -inf (a new tensor)."""
    return exclude_items_(scores.clone(), items, mask)


def exclude_items_(scores: torch.Tensor, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exclude_items in place: only the real (mask 1) entries are written, so padding never hides an item
    even when its index is also a real item of the row; no full-size temporary is made."""
    rows, cols = torch.nonzero(mask > 0, as_tuple=True)
    scores[rows, items[rows, cols]] = _EXCLUDED
    return scores


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(items, scores), each (B, min(k, n)), best first. Excluded (-inf) entries may appear at the end of
    a short row; `valid_entries` tells which to keep, so lists are never padded with excluded items."""
    k = min(k, scores.shape[1])
    values, items = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    return items, values


def rank_candidates(scores: torch.Tensor, candidates: torch.Tensor, candidate_mask: torch.Tensor, k: int):
    """Rank each user's candidates (B, C) by their scores (B, C); padding (mask 0) never appears."""
    masked = torch.where(candidate_mask > 0, scores, torch.full_like(scores, _EXCLUDED))
    k = min(k, masked.shape[1])
    values, pos = torch.topk(masked, k, dim=1, largest=True, sorted=True)
    return torch.gather(candidates, 1, pos), values


def valid_entries(values: torch.Tensor) -> torch.Tensor:
    """Which ranked entries are real recommendations (not excluded or padding)."""
    return torch.isfinite(values)
