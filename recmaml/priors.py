"""Serving priors: two signals of the warm log that serving adds to the scorer's scores, each with a weight
that fit chooses per support size and history kind on its own validation users (recmaml.calibrate).

    ease(u)    the support's EASE scores (Steck 2019): the sum of its items' rows of EASE's item-item matrix,
               each row cut to its NEIGHBORS largest weights, so a catalog of any size keeps a table of
               n_items x NEIGHBORS; fit chooses EASE's L2 strength and whether it reads every row or only
               the liked ones (rated at least the positive threshold), in the warm log and the support alike
    recent(u)  what was popular when the user arrived: the log count of each item's rows (every row, or the
               liked ones: fit chooses) in a window before the user's time (the latest timestamp of its
               history, or the caller's `at`), rounded down to the last of up to TIME_EDGES quantiles of
               the log's times; the rows are saved in time bins and serving's table of every window's
               standardized counts is built at first use. A log without timestamps keeps one bin and an
               endless window: the popularity of the whole log, the same for every user

    served scores = z(scorer) + w_ease * z(ease) + w_recent * z(recent)      (z: per user, over the catalog)

Why beside the scorer rather than inside it: EASE is the strongest baseline on sparse logs (CiaoDVD), and a
meta-learned weight inside the inner loop did not reach it (EXPERIMENTS.md, "the item-item signal"); with
no history at all (K = 0) nothing but the user's time tells users apart, and without times the log's
popularity is the classic answer (on FilmTrust and Last.fm it beat the scorer's zero-step scores). A weight
chosen on validation users is 0 wherever a signal does not help, so the priors never cost what the scorer
alone would score there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recmaml.data import Interactions
from recmaml.memo import kept_while_unchanged
from recmaml.ordered import rows_mm

NEIGHBORS = 256  # EASE weights kept per item row
TIME_EDGES = 2048  # at most this many times at which the popularity is kept (quantiles of the warm log's times)
TIME_TABLE_BYTES = 64 * 2**20  # fewer on a large catalog: serving's table (times x items, float32) stays under this
EASE_LAMBDAS = (100.0, 500.0, 2000.0, 10000.0, 50000.0)  # EASE's L2 strengths fit tries (as the benchmark's)
WINDOWS_DAYS = (30.0, 91.0, 182.0, 365.0, 730.0, 1095.0)  # windows fit tries (as the benchmark's baseline)


BLOCK_ROWS = 256  # users blended at a time: the temporaries stay small (a multiple of ordered.SERVING_ROWS)


def standardize_(x: torch.Tensor) -> torch.Tensor:
    """Each row (B, n) minus its mean, over its standard deviation (a constant row becomes zeros), in place
    (callers pass tensors of their own). The row sums are products with a ones vector through ordered.rows_mm, whose
    order is the same in every batch and with any thread count (torch's row reductions split a long row
    between threads when B is small)."""
    n = x.shape[1]
    ones = x.new_ones(n, 1)
    x.sub_(rows_mm(x, ones) / n)
    spread = (rows_mm(x * x, ones) / max(n - 1, 1)).sqrt_()
    return x.div_(spread.add_(1e-6))


def blend_(scores: torch.Tensor, priors: ServingPriors, support, ease_w: torch.Tensor | None,
           recent_w: torch.Tensor | None) -> torch.Tensor:
    """The served scores, in place: each user's scorer scores standardized, plus its weighted standardized
    priors (a weight None: that prior is left out). Done BLOCK_ROWS users at a time, which gives every row
    the same values as the whole batch at once and keeps serving's (B, n_items) temporaries to one block."""
    for lo in range(0, scores.shape[0], BLOCK_ROWS):
        hi = min(lo + BLOCK_ROWS, scores.shape[0])
        block = standardize_(scores[lo:hi])
        if ease_w is not None:
            block.addcmul_(ease_w[lo:hi, None], priors.ease(support.items[lo:hi], support.signed()[lo:hi],
                                                            support.ratings[lo:hi]))
        if recent_w is not None:
            times = {"time": support.user_feats["time"][lo:hi]} if priors.has_time else {}
            block.addcmul_(recent_w[lo:hi, None], priors.popularity(times, hi - lo))
    return scores


class ServingPriors(nn.Module):
    """The tables of the two priors, saved with a model (weights file entries 'priors.*')."""

    def __init__(self, n_items: int, neighbors: int, time_edges: int, time_entries: int = 0):
        super().__init__()
        self.register_buffer("ease_index", torch.zeros(n_items, neighbors, dtype=torch.int32))
        self.register_buffer("ease_weight", torch.zeros(n_items, neighbors))
        # the popularity's rows, in time bins: bin b > 0 holds the rows after time_edges[b - 2] up to
        # time_edges[b - 1], as (item, count) entries time_items[p], time_counts[p] for p in
        # time_starts[b]:time_starts[b + 1] (sparse: a few entries per row of the log, where a dense table
        # of counts per edge and item would weigh 64 MB on CiaoDVD)
        self.register_buffer("time_edges", torch.zeros(time_edges, dtype=torch.float64))
        self.register_buffer("time_starts", torch.zeros(time_edges + 2 if time_edges else 0, dtype=torch.int64))
        self.register_buffer("time_items", torch.zeros(time_entries, dtype=torch.int32))
        self.register_buffer("time_counts", torch.zeros(time_entries))
        self.register_buffer("window_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ease_lambda", torch.zeros((), dtype=torch.float64))
        # the rating a support row needs to count in EASE's term; NaN: every row counts
        self.register_buffer("ease_threshold", torch.full((), float("nan"), dtype=torch.float64))
        self.register_buffer("recent_threshold", torch.full((), float("nan"), dtype=torch.float64))  # the same

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ServingPriors:
        """The priors of a saved state (strict: a missing or unknown entry raises). A state saved before the
        time bins (a dense table of cumulative counts, (edges + 1, n_items)) is read as its bins."""
        state = dict(state)
        if state.get("time_counts") is not None and state["time_counts"].dim() == 2:
            state.update(_bins_of_cumulative(state.pop("time_counts")))
        n_items, neighbors = state["ease_index"].shape
        priors = cls(n_items, neighbors, state["time_edges"].shape[0], state["time_items"].shape[0])
        priors.load_state_dict(state, strict=True)
        return priors

    @property
    def has_popularity(self) -> bool:
        """Whether the popularity prior has a table (not for an empty log, nor in a model of a log without
        timestamps saved before such logs had one)."""
        return self.time_edges.numel() > 0

    @property
    def has_time(self) -> bool:
        """Whether the popularity reads a user's time: a log without timestamps keeps one bin at time 0 and an
        endless window, the popularity of its whole log."""
        return self.has_popularity and bool(torch.isfinite(self.window_seconds))

    def popularity(self, user_feats: dict[str, torch.Tensor], n_users: int) -> torch.Tensor:
        """(n_users, n_items): recent() at each user's time, or, without times, the whole log's popularity
        (one row, shared by every user)."""
        if self.has_time:
            return self.recent(user_feats["time"])
        return self.recent_table()[-1].expand(n_users, -1)

    def ease_rows(self) -> float | None:
        """The rating a row needs to count in EASE (warm log and support alike); None: every row counts."""
        return _none_if_nan(self.ease_threshold)

    def recent_rows(self) -> float | None:
        """The rating a row needs to count in the popularity; None: every row counts."""
        return _none_if_nan(self.recent_threshold)

    def latest_time(self) -> float:
        """The end of the warm log: the time of a user with no timestamp and no `at`."""
        return float(self.time_edges[-1]) if self.has_time else 0.0

    def ease(self, items: torch.Tensor, labels: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the standardized sum of the EASE rows of each user's support items, each row times its
        label (PaddedSet.signed(): 1 a like, -w a dislike, whose row is subtracted; 0 padding); a like rated
        below ease_threshold left out (a missing rating, NaN, is no dislike)."""
        return standardize_(self._ease_sums(items, self._ease_labels(labels, ratings)))

    def _ease_labels(self, labels: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """(B, S) how much each support row's EASE row counts: its label, 0 for padding and for a like rated
        below the threshold."""
        threshold = float(self.ease_threshold)
        if threshold == threshold:  # not NaN
            return labels * (~((ratings < threshold) & (labels > 0))).to(labels.dtype)
        return labels

    def _ease_sums(self, items: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        """(B, n_items): each user's EASE rows times `counted`, added in support order. Only the rows that
        count are gathered (padding and left-out likes would add zeros, which change no bit), and their
        entries go into the flat (B * n_items) output by one scatter_add, which adds in index order: an
        output entry gets its terms in the order of the user's support, as one row at a time would."""
        batch, n_items = items.shape[0], self.ease_index.shape[0]
        users, positions = counted.nonzero(as_tuple=True)  # row-major: by user, then support position
        rows = items[users, positions]
        flat = self._long_index().index_select(0, rows).add_((users * n_items).unsqueeze(1))
        weight = self.ease_weight.index_select(0, rows).mul_(counted[users, positions].unsqueeze(1))
        out = torch.zeros(batch * n_items, device=items.device)
        return out.scatter_add_(0, flat.flatten(), weight.flatten()).view(batch, n_items)

    def _long_index(self) -> torch.Tensor:
        """ease_index as int64, which gather and scatter take (saved as int32: half the file), kept while the
        buffer is unchanged."""
        return kept_while_unchanged(self, "_long_kept", [self.ease_index], self.ease_index.long)

    def recent(self, times: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the standardized log count of each item's rows in the window before each time. A time
        is rounded down to the last of the time edges (quantiles of the warm log's times) at or before it, so
        that serving gathers one precomputed row per user (recent_table)."""
        end = torch.searchsorted(self.time_edges, times.to(torch.float64).contiguous(), right=True)
        return self.recent_table()[end]

    def recent_table(self) -> torch.Tensor:
        """(len(time_edges) + 1, n_items): row e is recent() for a time in [time_edges[e - 1], time_edges[e])
        (row 0: before the log, all zeros); computed once per window and kept (not saved)."""
        return kept_while_unchanged(self, "_recent_kept", [self.time_counts], self._window_table,
                                    float(self.window_seconds))

    def _window_table(self, chunk: int = 256) -> torch.Tensor:
        """recent_table's rows: the cumulative counts up to each edge, then, from the last row down, each row
        minus the row where its window starts (which is at or before it, so still cumulative), in place."""
        edges = self.time_edges
        rows = len(edges) + 1
        table = torch.from_numpy(cumulative_counts(self.time_starts.cpu().numpy(), self.time_items.cpu().numpy(),
                                                   self.time_counts.cpu().numpy(), self.ease_index.shape[0]))
        table = table.to(edges.device)
        edge_times = torch.cat([edges[:1] - 1.0, edges])  # row 0: before the first edge
        starts = torch.searchsorted(edges, edge_times - self.window_seconds, right=True)
        for hi in range(rows, 0, -chunk):
            lo = max(hi - chunk, 0)
            table[lo:hi] = table[lo:hi] - table[starts[lo:hi]]  # the right side is read before any row changes
            standardize_(table[lo:hi].clamp_(min=0.0).log1p_())
        return table

    def set_ease(self, index: np.ndarray, weight: np.ndarray, lam: float, threshold: float | None) -> None:
        """Install an ease_table (of this instance's shape) and the strength and threshold it was fitted with."""
        self.ease_index.copy_(torch.from_numpy(index))
        self.ease_weight.copy_(torch.from_numpy(weight))
        self.ease_lambda.fill_(lam)
        self.ease_threshold.fill_(float("nan") if threshold is None else threshold)

    def set_time(self, warm: Interactions, threshold: float | None) -> None:
        """Install the time bins of the warm log's rows rated >= `threshold` (None: every row), at most as many
        edges as this instance has."""
        edges, starts, items, counts = time_bins(warm, threshold, self.time_edges.shape[0])
        self.time_edges = torch.from_numpy(edges).to(self.time_edges.device)
        self.time_starts = torch.from_numpy(starts).to(self.time_edges.device)
        self.time_items = torch.from_numpy(items).to(self.time_edges.device)
        self.time_counts = torch.from_numpy(counts).to(self.time_edges.device)
        self._recent_kept = None  # new buffers: a freed one's address may come back, so the table is rebuilt
        self.recent_threshold.fill_(float("nan") if threshold is None else threshold)

    def with_window(self, days: float) -> ServingPriors:
        """This instance with its window set to `days` (in place; returned for chaining)."""
        self.window_seconds.fill_(days * 86400.0)
        return self


def fit_priors(warm: Interactions, threshold: float | None, lam: float,
               recent_threshold: float | None = None) -> ServingPriors:
    """The priors' tables from the warm log: EASE (strength `lam`, on the rows rated >= `threshold`, or every
    row when None) cut to NEIGHBORS per row, and the cumulative counts of each item's rows (rated >=
    `recent_threshold`, or every row) in time bins, with the longest window of WINDOWS_DAYS; without
    timestamps one bin and an endless window (fit's calibration chooses the strength, the thresholds and the
    window)."""
    has_time = warm.timestamp is not None
    edges = (time_edges_for(warm.n_items) if has_time else 1) if len(warm) else 0
    priors = ServingPriors(warm.n_items, max(min(NEIGHBORS, warm.n_items - 1), 1), edges)
    priors.set_ease(*ease_table(warm, threshold, lam), lam, threshold)
    if edges:
        priors.set_time(warm, recent_threshold)
        priors.with_window(WINDOWS_DAYS[-1] if has_time else float("inf"))
    return priors


def refit_priors(priors: ServingPriors, warm: Interactions) -> ServingPriors:
    """Priors of the same settings (EASE's strength and rows, the popularity's rows and window) fitted on
    `warm`: fit chooses the settings on priors that do not know its validation users' rows, then serves
    priors that know the whole warm log."""
    out = fit_priors(warm, priors.ease_rows(), float(priors.ease_lambda), priors.recent_rows())
    if out.has_time:
        out.with_window(float(priors.window_seconds) / 86400.0)
    return out.to(priors.ease_index.device)


def _bins_of_cumulative(cumulative: torch.Tensor) -> dict[str, torch.Tensor]:
    """time_starts, time_items and time_counts of a dense cumulative table (row 0 all zeros)."""
    increments = cumulative.diff(dim=0, prepend=torch.zeros_like(cumulative[:1]))
    bins, items = increments.nonzero(as_tuple=True)  # row-major: sorted by bin
    starts = torch.searchsorted(bins, torch.arange(cumulative.shape[0] + 1), right=False)
    return {"time_starts": starts, "time_items": items.int(), "time_counts": increments[bins, items]}


def _none_if_nan(value: torch.Tensor) -> float | None:
    return None if torch.isnan(value) else float(value)


def ease_table(warm: Interactions, threshold: float | None, lam: float,
               neighbors: int = NEIGHBORS) -> tuple[np.ndarray, np.ndarray]:
    """(index int32, weight float32), each (n_items, `neighbors` or fewer): every item's largest EASE weights
    (baselines.EASE, on its 5,000 most frequent items; the others have rows of weight 0)."""
    from recmaml.baselines import EASE

    ease = EASE(lam=lam, threshold=threshold).fit(warm)
    kept = np.arange(warm.n_items) if ease.items is None else ease.items
    m = min(neighbors, len(kept) - 1)
    width = max(min(neighbors, warm.n_items - 1), 1)
    index = np.zeros((warm.n_items, width), np.int32)
    weight = np.zeros((warm.n_items, width), np.float32)
    if m > 0:
        top = np.argpartition(-ease.B, m - 1, axis=1)[:, :m]
        index[kept, :m] = kept[top]
        weight[kept, :m] = np.take_along_axis(ease.B, top, axis=1)
    return index, weight


def time_edges_for(n_items: int) -> int:
    """How many time edges the popularity prior keeps: TIME_EDGES, or as many as keep serving's table under
    TIME_TABLE_BYTES (at least 64). Finer edges matter on logs whose favourites change within weeks: on
    CiaoDVD's temporal split (seed 0, users with no history) the time-aware popularity's nDCG@20 read 0.082
    with 256 edges, 0.088 with 512 and 0.089 with 2,048 (benchmarks/recipes/priors/time_edges.py)."""
    return int(min(TIME_EDGES, max(64, TIME_TABLE_BYTES // (4 * max(n_items, 1)))))


def time_bins(warm: Interactions, threshold: float | None, n_edges: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(edges float64, starts int64, items int32, counts float32): up to n_edges quantiles of the timestamps
    of the rows rated >= `threshold` (None: every row), and those rows counted per (time bin, item), a row
    in bin b + 1 where edges[b] is the first edge at or after its time (as baselines.RecentPopularity)."""
    from recmaml.baselines import liked_rows

    liked = liked_rows(warm, threshold)
    # a log without timestamps: every row at time 0, one bin (the popularity of the whole log)
    times = np.zeros(len(liked)) if liked.timestamp is None else liked.timestamp.astype(np.float64)
    edges = np.unique(np.quantile(times, np.linspace(0.0, 1.0, n_edges))) if len(times) else np.zeros(1)
    bins = np.searchsorted(edges, times, side="left") + 1
    keys, counts = np.unique(bins * np.int64(warm.n_items) + liked.item_idx, return_counts=True)
    starts = np.searchsorted(keys // warm.n_items, np.arange(len(edges) + 2), side="left")
    return edges, starts.astype(np.int64), (keys % warm.n_items).astype(np.int32), counts.astype(np.float32)


def time_table(warm: Interactions, threshold: float | None, n_edges: int = TIME_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """time_bins as a dense table (model.time_prior's): up to n_edges edges and each item's cumulative count up
    to each edge ((n_edges + 1, n_items), row 0 zeros), padded to n_edges by repeating the last edge."""
    edges, starts, items, counts = time_bins(warm, threshold, n_edges)
    cumulative = cumulative_counts(starts, items, counts, warm.n_items)
    pad = n_edges - len(edges)
    edges = np.concatenate([edges, np.repeat(edges[-1:], pad)])
    cumulative = np.concatenate([cumulative, np.repeat(cumulative[-1:], pad, axis=0)])
    return edges, cumulative


def cumulative_counts(starts: np.ndarray, items: np.ndarray, counts: np.ndarray, n_items: int) -> np.ndarray:
    """(len(starts) - 1, n_items) float32: each item's count of rows in the time bins up to each (time_bins'
    entries; row 0, before the log, zeros)."""
    table = np.zeros((len(starts) - 1, n_items), np.float32)
    table[np.repeat(np.arange(len(starts) - 1), np.diff(starts)), items] = counts  # one entry per (bin, item)
    return np.cumsum(table, axis=0, out=table)
