"""What a fitted model can say about its own lists, from what it already holds:

    similar items   the items most like given items, by one of two signals the model has:
                    'embedding'  the cosine of the item tower's vectors (the vectors the scorer's dot product
                                 uses): the default, as its neighbours are the more specific ones on ML-100K
                                 (docs/python-api.md gives the figures)
                    'ease'       EASE's learned item-item weights (the serving prior's kept neighbours, priors.py):
                                 the EASE term a user who showed only that item would get on each other item;
                                 at the strong L2 serving chooses, they lean to the most popular items
    reasons         for each recommended item, the history items that raised its served score most: the drop
                    of that item's served score when one history item is left out (leave-one-out)

Leave-one-out rather than a gradient: serving's score of an item is the adapted scorer's (inner steps on
the history, a set encoding of it) blended with the standardized EASE term; a gradient through all of that
is one linear guess at each removal, while leave-one-out is the removal itself, read through the same
pipeline (recmaml.scoring), and costs one more adaptation per history row of the users explained. `rec`
below is a fitted MetaRecommender.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recmaml.cold import ColdUsers, user_batches
from recmaml.data import UNKNOWN, RankedLists
from recmaml.errors import DataError, spelled
from recmaml.scoring import adapted_users
from recmaml.tasks import PaddedSet, group_positions, pad

SIGNALS = ("embedding", "ease")  # similar_items' signals, the default first
SIMILAR_ROWS = 1024  # query items scored against the catalog at a time: a (rows, n_items) temporary


# ---- similar items --------------------------------------------------------------------------------------

def check_signal(rec, signal: str) -> None:
    """A DataError unless `signal` is one of SIGNALS that this model holds."""
    if signal not in SIGNALS:
        raise DataError(f"{spelled('signal=', '--signal')} {signal!r}; use one of {list(SIGNALS)}")
    if signal == "ease" and rec.priors is None:
        raise DataError(f"this model has no EASE table (fitted with serve.priors off); use "
                        f"{spelled('signal=', '--signal')} 'embedding'")


def similar_rows(rec, items: np.ndarray, k: int, signal: str, allowed: torch.Tensor | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores), each (len(items), k'), best first, for model item positions `items`: the most
    similar items by `signal` ('embedding' or 'ease', see the module's docstring), the item itself and those
    outside `allowed` (a (n_items,) mask) left out. k' = min(k, the items every row can offer), so no row
    is padded. Under 'ease', the items beyond an item's kept neighbours score 0, and an item EASE has no
    row for (beyond the 5,000 most frequent) is ranked by the embeddings."""
    k = min(k, _items_each_row_offers(rec, items, allowed))
    out_pos = np.zeros((len(items), k), np.int64)
    out_scores = np.zeros((len(items), k), np.float32)
    with torch.no_grad():
        unit = _unit_vectors(rec)  # the catalog's item tower once, not once per block
        for lo in range(0, len(items), SIMILAR_ROWS):
            rows = torch.as_tensor(items[lo:lo + SIMILAR_ROWS], device=rec.device)
            scores = _similarities(rec, unit, rows, signal)
            scores[torch.arange(len(rows), device=scores.device), rows] = float("-inf")  # not its own neighbour
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            values, top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
            out_pos[lo:lo + len(rows)], out_scores[lo:lo + len(rows)] = top.cpu().numpy(), values.cpu().numpy()
    return out_pos, out_scores


def _items_each_row_offers(rec, items: np.ndarray, allowed: torch.Tensor | None) -> int:
    """How many neighbours every query item has: the allowed items, less one when a query item is one of them."""
    if allowed is None:
        return len(rec.items) - 1
    pool = allowed.cpu().numpy()
    return int(pool.sum()) - int(pool[items].any()) if len(items) else int(pool.sum())


def _similarities(rec, unit: torch.Tensor, rows: torch.Tensor, signal: str) -> torch.Tensor:
    """(len(rows), n_items) similarities of the items at `rows` to every item (unit: _unit_vectors)."""
    embedded = unit[rows] @ unit.T
    if signal == "embedding":
        return embedded
    priors = rec.priors
    weights = priors.ease_weight[rows]
    ease = torch.zeros_like(embedded).scatter_add_(1, priors.ease_index[rows].long(), weights)
    has_row = (weights != 0).any(dim=1, keepdim=True)
    return torch.where(has_row, ease, embedded)


def _unit_vectors(rec) -> torch.Tensor:
    """The item tower's vectors of the whole catalog, each scaled to length 1 (their products: cosines)."""
    vectors = rec.serving_scorer.catalog_vectors()
    return vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)


# ---- reasons: leave-one-out over the history ------------------------------------------------------------

@dataclass
class Reasons:
    """Per row of a ranked list, its n strongest reasons: `items` (rows, n) model item positions of the
    user's history, strongest first, UNKNOWN past the last, and `drops` (rows, n) how much the listed item's
    served score falls when that history item is left out (NaN past the last)."""

    items: np.ndarray
    drops: np.ndarray


def list_reasons(rec, cold: ColdUsers, ranked: RankedLists, n: int, batch_size: int | None = None) -> Reasons:
    """The reasons of every row of `ranked` (its users must be users of `cold`): for the row's item, the
    history items of its user whose leave-one-out drop is largest, up to `n`, only those with a drop > 0
    (a history item that did not raise the item's score is no reason for it). Items of `ranked` the model
    does not know get no reasons."""
    rows_user = cold.users.index(ranked.user_id).astype(np.int64)
    if (rows_user == UNKNOWN).any():
        missing = ranked.user_id[rows_user == UNKNOWN][:3].tolist()
        raise DataError(f"ranked lists name users absent from the history (e.g. {missing}); explain the lists "
                        "with the history they were recommended from")
    rows_item = rec.items.index(ranked.item_id).astype(np.int64)
    order, pos = group_positions(rows_user)  # ranked rows by user, and each one's slot in its user's list
    width = int(pos.max()) + 1 if len(pos) else 1
    listed = pad(rows_user[order], pos, rows_item[order], len(cold.users), width, fill=UNKNOWN)
    items = np.full((len(ranked), n), UNKNOWN, np.int64)
    drops = np.full((len(ranked), n), np.nan, np.float32)
    sorted_users = rows_user[order]
    for users, support in user_batches(rec, cold, batch_size):
        best, drop = _batch_reasons(rec, support, torch.as_tensor(listed[users], device=rec.device), n, batch_size)
        lo, hi = np.searchsorted(sorted_users, [users[0], users[-1] + 1])
        batch_row, slot = sorted_users[lo:hi] - users[0], pos[lo:hi]
        items[order[lo:hi]], drops[order[lo:hi]] = best[batch_row, slot], drop[batch_row, slot]
    return Reasons(items, drops)


def _batch_reasons(rec, support: PaddedSet, listed: torch.Tensor, n: int, batch_size: int | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(items, drops), each (B, k, n), for one batch of users and their listed items (B, k) (UNKNOWN:
    padding): see list_reasons."""
    valid = listed != UNKNOWN
    listed = torch.where(valid, listed, torch.zeros_like(listed))
    with torch.no_grad():
        sizes = support.mask.sum(dim=1)
        full = adapted_users(rec, support).scores(listed)  # (B, k)
        drops = torch.full((*support.items.shape, listed.shape[1]), float("-inf"), device=full.device)  # (B, S, k)
        user, slot = torch.nonzero(support.mask > 0, as_tuple=True)  # one leave-one-out user per history row
        step = rec.config.serve.batch_size if batch_size is None else batch_size
        for lo in range(0, len(user), step):
            u, s = user[lo:lo + step], slot[lo:lo + step]
            # the whole history's serving settings (step size, priors' weights), chosen by its size, are
            # held: a shorter history falls in another size bucket, which would move every score at once
            without = adapted_users(rec, _without_one(support, u, s), sizes[u]).scores(listed[u])
            drops[u, s] = full[u] - without
    drops = drops.transpose(1, 2)  # (B, k, S)
    n_kept = min(n, drops.shape[2])
    top, where = torch.topk(drops, n_kept, dim=2, largest=True, sorted=True)
    names = torch.gather(support.items[:, None, :].expand_as(drops), 2, where)
    reason = (top > 0) & valid[:, :, None]
    out_items = np.full((*listed.shape, n), UNKNOWN, np.int64)
    out_drops = np.full((*listed.shape, n), np.nan, np.float32)
    out_items[:, :, :n_kept] = torch.where(reason, names, torch.full_like(names, UNKNOWN)).cpu().numpy()
    out_drops[:, :, :n_kept] = torch.where(reason, top, torch.full_like(top, float("nan"))).cpu().numpy()
    return out_items, out_drops


def _without_one(support: PaddedSet, user: torch.Tensor, slot: torch.Tensor) -> PaddedSet:
    """Copies of the supports of `user` (indices into the batch), each with its history row `slot` masked out:
    the same user with one history item fewer, for the adaptation, the set encoder and EASE's term alike
    (the user's time, read from its whole history, stays)."""
    rows = support.rows(user)
    mask = rows.mask.clone()
    mask[torch.arange(len(user), device=mask.device), slot] = 0.0
    return PaddedSet({**rows.user_feats, "support_mask": mask}, rows.items, rows.ratings, mask)


__all__ = ["SIGNALS", "Reasons", "check_signal", "list_reasons", "similar_rows"]
