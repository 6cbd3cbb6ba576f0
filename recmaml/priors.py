"""Serving priors: two signals of the warm log that serving adds to the scorer's scores, each with a weight
that fit chooses per support size and history kind on its own validation users (recmaml.calibrate).

    ease(u)    the support's EASE scores (Steck 2019): the sum of its items' rows of EASE's item-item matrix,
               each row cut to its NEIGHBORS largest weights, so a catalog of any size keeps a table of
               n_items x NEIGHBORS; fit chooses EASE's L2 strength and whether it reads every row or only
               the liked ones (rated at least the positive threshold), in the warm log and the support alike
    recent(u)  what was popular when the user arrived: the log count of each item's rows (every row, or the
               liked ones: fit chooses) in a window before the user's time (the latest timestamp of its
               history, or the caller's `at`)

    served scores = z(scorer) + w_ease * z(ease) + w_recent * z(recent)      (z: per user, over the catalog)

Why beside the scorer rather than inside it: EASE is the strongest baseline on sparse logs (CiaoDVD), and a
meta-learned weight inside the inner loop did not reach it (EXPERIMENTS.md, "the item-item signal"); with
no history at all (K = 0) nothing but the user's time tells users apart. A weight chosen on validation users
is 0 wherever a signal does not help, so the priors never cost what the scorer alone would score there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recmaml.data import Interactions
from recmaml.model import rows_mm

NEIGHBORS = 256  # EASE weights kept per item row
TIME_EDGES = 256  # times at which the cumulative counts are kept (quantiles of the warm log's timestamps)
EASE_LAMBDAS = (100.0, 500.0, 2000.0, 10000.0, 50000.0)  # EASE's L2 strengths fit tries (as the benchmark's)
WINDOWS_DAYS = (30.0, 91.0, 182.0, 365.0, 730.0, 1095.0)  # windows fit tries (as the benchmark's baseline)


BLOCK_ROWS = 256  # users blended at a time: the temporaries stay small (a multiple of model.SERVING_ROWS)


def standardize_(x: torch.Tensor) -> torch.Tensor:
    """Each row (B, n) minus its mean, over its standard deviation (a constant row becomes zeros), in place
    (callers pass tensors of their own). The row sums are products with a ones vector through model.rows_mm, whose
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
            block.addcmul_(ease_w[lo:hi, None], priors.ease(support.items[lo:hi], support.mask[lo:hi],
                                                            support.ratings[lo:hi]))
        if recent_w is not None:
            block.addcmul_(recent_w[lo:hi, None], priors.recent(support.user_feats["time"][lo:hi]))
    return scores


class ServingPriors(nn.Module):
    """The tables of the two priors, saved with a model (weights file entries 'priors.*')."""

    def __init__(self, n_items: int, neighbors: int, time_edges: int):
        super().__init__()
        self.register_buffer("ease_index", torch.zeros(n_items, neighbors, dtype=torch.int32))
        self.register_buffer("ease_weight", torch.zeros(n_items, neighbors))
        self.register_buffer("time_edges", torch.zeros(time_edges, dtype=torch.float64))
        self.register_buffer("time_counts", torch.zeros(time_edges + 1 if time_edges else 0, n_items))
        self.register_buffer("window_seconds", torch.zeros((), dtype=torch.float64))
        self.register_buffer("ease_lambda", torch.zeros((), dtype=torch.float64))
        # the rating a support row needs to count in EASE's term; NaN: every row counts
        self.register_buffer("ease_threshold", torch.full((), float("nan"), dtype=torch.float64))
        self.register_buffer("recent_threshold", torch.full((), float("nan"), dtype=torch.float64))  # the same

    @classmethod
    def shaped_like(cls, state: dict[str, torch.Tensor]) -> ServingPriors:
        """An empty instance with the shapes of a saved state (load_state_dict fills it)."""
        n_items, neighbors = state["ease_index"].shape
        return cls(n_items, neighbors, state["time_edges"].shape[0])

    @property
    def has_time(self) -> bool:
        return self.time_edges.numel() > 0

    def ease_rows(self) -> float | None:
        """The rating a row needs to count in EASE (warm log and support alike); None: every row counts."""
        return _none_if_nan(self.ease_threshold)

    def recent_rows(self) -> float | None:
        """The rating a row needs to count in the popularity; None: every row counts."""
        return _none_if_nan(self.recent_threshold)

    def latest_time(self) -> float:
        """The end of the warm log: the time of a user with no timestamp and no `at`."""
        return float(self.time_edges[-1]) if self.has_time else 0.0

    def ease(self, items: torch.Tensor, mask: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the standardized sum of the EASE rows of each user's support items (mask > 0), those
        rated below ease_threshold left out (a missing rating, NaN, is no dislike)."""
        threshold = float(self.ease_threshold)
        if threshold == threshold:  # not NaN
            mask = mask * (~(ratings < threshold)).to(mask.dtype)
        index = self.ease_index[items].long().flatten(1)  # (B, S * NEIGHBORS)
        weight = (self.ease_weight[items] * mask.unsqueeze(-1)).flatten(1)
        out = torch.zeros(items.shape[0], self.ease_index.shape[0], device=items.device)
        # scatter_add adds a row's entries in their order: the padding (weight 0) comes last and changes nothing
        return standardize_(out.scatter_add_(1, index, weight))

    def recent(self, times: torch.Tensor) -> torch.Tensor:
        """(B, n_items): the standardized log count of each item's rows in the window before each time. A time
        is rounded down to the last of the time edges (quantiles of the warm log's times) at or before it, so
        that serving gathers one precomputed row per user (recent_table)."""
        end = torch.searchsorted(self.time_edges, times.to(torch.float64).contiguous(), right=True)
        return self.recent_table()[end]

    def recent_table(self) -> torch.Tensor:
        """(len(time_edges) + 1, n_items): row e is recent() for a time in [time_edges[e - 1], time_edges[e])
        (row 0: before the log, all zeros); computed once per window and kept (not saved)."""
        key = (float(self.window_seconds), self.time_counts.data_ptr(), self.time_counts._version)
        if getattr(self, "_recent_key", None) != key:
            ends = torch.arange(len(self.time_edges) + 1, device=self.time_edges.device)
            edge_times = torch.cat([self.time_edges[:1] - 1.0, self.time_edges])  # row 0: before the first edge
            starts = torch.searchsorted(self.time_edges, edge_times - self.window_seconds, right=True)
            counts = (self.time_counts[ends] - self.time_counts[starts]).clamp_(min=0.0)
            self._recent_rows, self._recent_key = standardize_(torch.log1p_(counts)), key
        return self._recent_rows

    def set_ease(self, index: np.ndarray, weight: np.ndarray, lam: float, threshold: float | None) -> None:
        """Install an ease_table (of this instance's shape) and the strength and threshold it was fitted with."""
        self.ease_index.copy_(torch.from_numpy(index))
        self.ease_weight.copy_(torch.from_numpy(weight))
        self.ease_lambda.fill_(lam)
        self.ease_threshold.fill_(float("nan") if threshold is None else threshold)

    def set_time(self, warm: Interactions, threshold: float | None) -> None:
        """Install the time_table of the warm log's rows rated >= `threshold` (None: every row)."""
        edges, cumulative = time_table(warm, threshold, self.time_edges.shape[0])
        self.time_edges.copy_(torch.from_numpy(edges))
        self.time_counts.copy_(torch.from_numpy(cumulative))
        self.recent_threshold.fill_(float("nan") if threshold is None else threshold)

    def with_window(self, days: float) -> ServingPriors:
        """This instance with its window set to `days` (in place; returned for chaining)."""
        self.window_seconds.fill_(days * 86400.0)
        return self


def fit_priors(warm: Interactions, threshold: float | None, lam: float,
               recent_threshold: float | None = None) -> ServingPriors:
    """The priors' tables from the warm log: EASE (strength `lam`, on the rows rated >= `threshold`, or every
    row when None) cut to NEIGHBORS per row, and, when the log has timestamps, the cumulative counts of each
    item's rows (rated >= `recent_threshold`, or every row), with the longest window of WINDOWS_DAYS
    (fit's calibration chooses the strength, the thresholds and the window)."""
    has_time = warm.timestamp is not None and len(warm) > 0
    priors = ServingPriors(warm.n_items, max(min(NEIGHBORS, warm.n_items - 1), 1), TIME_EDGES if has_time else 0)
    priors.set_ease(*ease_table(warm, threshold, lam), lam, threshold)
    if has_time:
        priors.set_time(warm, recent_threshold)
        priors.with_window(WINDOWS_DAYS[-1])
    return priors


def refit_priors(priors: ServingPriors, warm: Interactions) -> ServingPriors:
    """Priors of the same settings (EASE's strength and rows, the popularity's rows and window) fitted on
    `warm`: fit chooses the settings on priors that do not know its validation users' rows, then serves
    priors that know the whole warm log."""
    out = fit_priors(warm, priors.ease_rows(), float(priors.ease_lambda), priors.recent_rows())
    if out.has_time:
        out.with_window(float(priors.window_seconds) / 86400.0)
    return out.to(priors.ease_index.device)


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


def time_table(warm: Interactions, threshold: float | None, n_edges: int = TIME_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """n_edges quantiles of the positives' timestamps and each item's cumulative count up to each edge
    ((n_edges + 1, n_items), row 0 zeros), padded by repeating the last edge."""
    from recmaml.baselines import RecentPopularity

    recent = RecentPopularity(threshold=threshold)
    recent.EDGES = n_edges
    recent.fit(warm)
    pad = n_edges - len(recent.edges)
    edges = np.concatenate([recent.edges, np.repeat(recent.edges[-1:], pad)])
    cumulative = np.concatenate([recent.cumulative, np.repeat(recent.cumulative[-1:], pad, axis=0)])
    return edges.astype(np.float64), cumulative.astype(np.float32)
