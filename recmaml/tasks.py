"""Interactions -> batches of user tasks. Each user is one MAML task: a support set (what the inner loop
sees) and a query set (what the outer loss judges). Variable sizes become padded tensors with masks.

Everything is vectorized over users (sorts, scatters); there is no per-user Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from recmaml.config import TaskConfig
from recmaml.data import Interactions, relevant_rating


KIND_FIRST, KIND_SAMPLE = 0, 1  # a task's history kind: its earliest interactions, or a random sample


def _empty(dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(0, 0, dtype=dtype)


@dataclass
class PaddedSet:
    """One padded set of items per user, for B users: a support (what the inner loop adapts on) or a
    query (what the outer loss judges). The same structure in training (TaskBatch.support(), .query())
    and serving (MetaRecommender's chunks). `*_mask` is 1.0 for real entries and 0.0 for padding."""

    user_feats: dict[str, torch.Tensor]  # the user tower's per-user inputs (side features; the set encoder's)
    items: torch.Tensor  # (B, S) long
    ratings: torch.Tensor  # (B, S) float
    mask: torch.Tensor  # (B, S) float
    negatives: torch.Tensor = field(default_factory=lambda: _empty(torch.long))  # (B, N); N = 0: whole catalog
    negative_logq: torch.Tensor = field(default_factory=_empty)  # (B, N) log of the sampling odds
    negative_mask: torch.Tensor = field(default_factory=_empty)
    exclude: torch.Tensor | None = None  # (B, E) items a query's ranking loss skips (the support's)
    exclude_mask: torch.Tensor | None = None
    # (B, S) per row, how much it counts for its item: 1 a like, -dislike_weight a dislike, 0 padding
    # (dislike_labels); None: every real row a like (the mask)
    labels: torch.Tensor | None = None

    def __post_init__(self):
        batch = self.items.shape[0]
        if self.negatives.shape[0] != batch:  # no sampled negatives: the exact softmax over the catalog
            self.negatives = torch.zeros(batch, 0, dtype=torch.long, device=self.items.device)
            self.negative_logq = torch.zeros(batch, 0, device=self.items.device)
            self.negative_mask = torch.zeros(batch, 0, device=self.items.device)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def signed(self) -> torch.Tensor:
        """(B, S) how much each row counts for its item: labels, else the mask (every row a like)."""
        return self.mask if self.labels is None else self.labels

    def tree(self) -> dict:
        """The fields as a dict of tensors, the pytree that torch.func.vmap splits into one user's set."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in out.items() if v is not None}

    def rows(self, index) -> PaddedSet:
        """The sets of some users (a slice or index tensor over the first dimension)."""
        return _each_tensor(self, lambda t: t[index])

    def to(self, device) -> PaddedSet:
        return _each_tensor(self, lambda t: t.to(device))


def _each_tensor(batch, fn):
    """A copy of a dataclass of tensors (PaddedSet, TaskBatch) with `fn` applied to each tensor field and to
    each tensor of its dict fields (None fields stay None)."""
    def apply(value):
        if value is None:
            return None
        return {n: fn(t) for n, t in value.items()} if isinstance(value, dict) else fn(value)

    return replace(batch, **{f.name: apply(getattr(batch, f.name)) for f in fields(batch)})


@dataclass
class TaskBatch:
    """Padded tasks of B users. `*_mask` is 1.0 for real entries and 0.0 for padding."""

    user_feats: dict[str, torch.Tensor]
    support_items: torch.Tensor  # (B, S) long
    support_ratings: torch.Tensor  # (B, S) float
    support_mask: torch.Tensor  # (B, S) float
    query_items: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    query_ratings: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    query_mask: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    negatives: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    negative_logq: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # log of sampling odds
    negative_mask: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    def __len__(self) -> int:
        return int(self.support_items.shape[0])

    def rows(self, index) -> TaskBatch:
        """The tasks of some users (a slice or index tensor over the batch's first dimension)."""
        batch = len(self)
        return _each_tensor(self, lambda t: t[index] if t.shape[0] == batch else t)  # an unset (0, 0) field stays

    def to(self, device) -> TaskBatch:
        return _each_tensor(self, lambda t: t.to(device))

    def support(self) -> PaddedSet:
        """The inputs of the inner loop."""
        return PaddedSet(self.user_feats, self.support_items, self.support_ratings, self.support_mask,
                         self.negatives, self.negative_logq, self.negative_mask)

    def query(self) -> PaddedSet:
        """The inputs of the outer loss; the support items are passed too, to exclude them from rankings."""
        return PaddedSet(self.user_feats, self.query_items, self.query_ratings, self.query_mask,
                         self.negatives, self.negative_logq, self.negative_mask,
                         exclude=self.support_items, exclude_mask=self.support_mask)


def dislike_labels(ratings: torch.Tensor, mask: torch.Tensor, threshold: float | None, weight: float) -> torch.Tensor:
    """(B, S) labels of padded rows: 1 for a like, -weight for a dislike (rated below `threshold`; a NaN
    rating, no rating given, is a like), 0 for padding. threshold None: every row a like."""
    if threshold is None:
        return mask
    disliked = ratings < threshold  # False for NaN
    return torch.where(disliked, -weight * mask, mask)


def group_positions(user_idx: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort rows by user, then by `keys` (last key most significant after the user, as np.lexsort).
    Returns the row order and each sorted row's 0-based position within its user."""
    order = np.lexsort((*keys, user_idx)) if keys else np.argsort(user_idx, kind="stable")
    users = user_idx[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    pos = np.arange(len(users)) - np.repeat(starts, counts)
    return order, pos


def pad(rows_batch: np.ndarray, pos: np.ndarray, values: np.ndarray, n_rows: int, width: int, fill=0) -> np.ndarray:
    """Scatter `values` into a (n_rows, width) array at (rows_batch, pos); the rest is `fill`."""
    out = np.full((n_rows, max(width, 1)), fill, dtype=values.dtype)
    out[rows_batch, pos] = values
    return out


def padded_sets(batch_row: np.ndarray, pos: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_rows: int):
    """(items, ratings, mask) tensors of shape (n_rows, max set size) from rows with their batch row
    and position in the set."""
    width = int(pos.max()) + 1 if len(pos) else 1
    return (
        torch.from_numpy(pad(batch_row, pos, items.astype(np.int64), n_rows, width)),
        torch.from_numpy(pad(batch_row, pos, ratings.astype(np.float32), n_rows, width)),
        torch.from_numpy(pad(batch_row, pos, np.ones(len(pos), np.float32), n_rows, width)),
    )


def split_users(log: Interactions, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Warm users (with >= 2 interactions, so they can have a query) split into (train, validation)."""
    counts = np.bincount(log.user_idx, minlength=log.n_users)
    eligible = np.flatnonzero(counts >= 2)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(eligible)
    n_val = int(round(fraction * len(shuffled)))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


class TaskSampler:
    """Draws support/query tasks for a fixed set of warm users, deterministically given a seed."""

    def __init__(self, log: Interactions, users: np.ndarray, cfg: TaskConfig, user_feats: dict[str, torch.Tensor], seed: int):
        self.cfg = cfg
        self.n_items = log.n_items
        self.user_feats = user_feats  # one row per user index of `log`
        self.rng = np.random.default_rng(seed)
        keep = np.isin(log.user_idx, users)
        # one row per (user, item), the last one: a repeated pair must not sit in both support and query
        keys = log.user_idx.astype(np.int64) * log.n_items + log.item_idx
        _, last_from_end = np.unique(keys[::-1], return_index=True)
        is_last = np.zeros(len(keys), dtype=bool)
        is_last[len(keys) - 1 - last_from_end] = True
        keep &= is_last
        self.users = np.asarray(users)
        self.user_idx = log.user_idx[keep].astype(np.int64)
        self.item_idx = log.item_idx[keep].astype(np.int64)
        self.rating = log.rating[keep] if log.rating is not None else np.ones(keep.sum(), np.float32)
        self.timestamp = log.timestamp[keep] if log.timestamp is not None else None
        self.counts = np.bincount(self.user_idx, minlength=log.n_users)
        # 'auto' (MetaRecommender.fit resolves it first, and saves the value): the log's own relevant rating
        self.positive_threshold = (relevant_rating(log.rating) if cfg.positive_threshold == "auto"
                                   else cfg.positive_threshold)
        # sorted (user, item) keys of every interaction: negatives must never be a positive of their user
        self.positive_keys = np.sort(self.user_idx * self.n_items + self.item_idx)
        popularity = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64) + 1.0
        self.item_probs = popularity / popularity.sum()

    def epoch(self, batch_size: int):
        """One pass over the users in random order, as TaskBatches of `batch_size` users."""
        users = self.rng.permutation(self.users)
        for start in range(0, len(users), batch_size):
            yield self.tasks(users[start : start + batch_size])

    def tasks(self, users: np.ndarray, support_size: int | None = None) -> TaskBatch:
        """Tasks for `users`. Support sizes are drawn from [support_min, support_max] unless
        `support_size` is given; each user keeps at least one query interaction."""
        cfg = self.cfg
        batch_of_user = np.full(len(self.counts), -1, dtype=np.int64)
        batch_of_user[users] = np.arange(len(users))
        rows = np.flatnonzero(batch_of_user[self.user_idx] >= 0)
        b = batch_of_user[self.user_idx[rows]]

        n_u = self.counts[users]
        if support_size is None:
            high = np.minimum(cfg.support_max, n_u - 1)
            low = np.minimum(cfg.support_min, high)
            size = self.rng.integers(low, high + 1)
        else:
            size = np.minimum(support_size, n_u - 1)

        # stage 1: the support is the first `size` rows in random or temporal order
        first_key, first = self._support_order_key(rows, b, len(users))  # drawn before the tie-break, as it always was
        order, pos = group_positions(b, self.rng.random(len(rows)), first_key)
        rows, b = rows[order], b[order]
        in_support = pos < size[b]
        # stage 2: the query is a random subset of the rest
        order, _ = group_positions(b, self.rng.random(len(rows)), ~in_support)
        rows, b, in_support, pos = rows[order], b[order], in_support[order], pos[order]
        in_query = ~in_support
        if self.positive_threshold is not None:
            in_query &= self.rating[rows] >= self.positive_threshold
        query_pos = _positions_within(b, in_query)
        in_query &= query_pos < cfg.query_max
        s_items, s_ratings, s_mask = padded_sets(b[in_support], pos[in_support], self.item_idx[rows[in_support]],
                                                 self.rating[rows[in_support]], len(users))
        q_items, q_ratings, q_mask = padded_sets(b[in_query], query_pos[in_query], self.item_idx[rows[in_query]],
                                                 self.rating[rows[in_query]], len(users))
        negatives, logq, neg_mask = self.negatives(users)
        user_feats = {k: v[torch.as_tensor(users)] for k, v in self.user_feats.items()}
        # the support, also as an input of the user tower's set encoder (model.support_encoder)
        user_feats.update(support_items=s_items, support_mask=s_mask,
                          history_kind=torch.from_numpy(np.where(first, KIND_FIRST, KIND_SAMPLE)))
        if self.timestamp is not None:  # the task's time (the time prior's): its latest support row, or
            user_feats["time"] = torch.from_numpy(self._task_times(rows, b, in_support, len(users)))  # its first
        return TaskBatch(
            user_feats=user_feats,
            support_items=s_items, support_ratings=s_ratings, support_mask=s_mask,
            query_items=q_items, query_ratings=q_ratings, query_mask=q_mask,
            negatives=negatives, negative_logq=logq, negative_mask=neg_mask,
        )

    def _task_times(self, rows: np.ndarray, b: np.ndarray, in_support: np.ndarray, n_users: int) -> np.ndarray:
        """Per task, the time its user is served at: its latest support row, or, with an empty support, its
        earliest row (when it arrived)."""
        times = self.timestamp[rows].astype(np.float64)
        latest = np.full(n_users, -np.inf)
        np.maximum.at(latest, b[in_support], times[in_support])
        earliest = np.full(n_users, np.inf)
        np.minimum.at(earliest, b, times)
        return np.where(np.isfinite(latest), latest, earliest)

    def _support_order_key(self, rows: np.ndarray, b: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the key whose smallest values within its user form the support: its timestamp for a
        temporal task (earliest first), a random number otherwise; and per task, whether it is temporal
        (its history kind: 'first' interactions, else a 'sample'). A log without timestamps has only random
        tasks."""
        if self.timestamp is None or self.cfg.order == "random":
            return self.rng.random(len(rows)), np.zeros(n_users, bool)
        temporal = self.timestamp[rows].astype(np.float64)
        if self.cfg.order == "temporal":
            return temporal, np.ones(n_users, bool)
        random_key = self.rng.random(len(rows))
        is_temporal = self.rng.random(n_users) < self.cfg.temporal_fraction  # per task, not per row
        return np.where(is_temporal[b], temporal, random_key), is_temporal

    def negatives(self, users: np.ndarray):
        """Sampled negatives per user (masked where they collide with that user's positives)."""
        n = self.cfg.negatives
        if n == 0:
            empty = torch.zeros(len(users), 0)
            return empty.long(), empty, empty
        if self.cfg.negative_sampling == "popularity":
            items = self.rng.choice(self.n_items, size=(len(users), n), p=self.item_probs)
            logq = np.log(n * self.item_probs[items])
        else:
            items = self.rng.integers(0, self.n_items, size=(len(users), n))
            logq = np.full(items.shape, np.log(n / self.n_items))
        keys = users[:, None].astype(np.int64) * self.n_items + items
        hit = np.searchsorted(self.positive_keys, keys)
        collides = self.positive_keys[np.minimum(hit, len(self.positive_keys) - 1)] == keys
        return (torch.from_numpy(items.astype(np.int64)), torch.from_numpy(logq.astype(np.float32)),
                torch.from_numpy((~collides).astype(np.float32)))


def _positions_within(group: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """0-based position of each selected row among the selected rows of its group (rows sorted by group)."""
    csum = np.cumsum(selected)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    before = np.repeat(csum[starts] - selected[starts], np.diff(np.r_[starts, len(group)]))
    return csum - before - 1
