"""Cold-start evaluation protocols, shared by benchmarks and tests.

    split = cold_split(log, cold_fraction=0.2, n_support=5, order="random", seed=0)
    val = cold_split(split.warm, seed=1)            # validation users carved from the warm users
    scores = EASE(200).fit(split.warm).score(*support_arrays(split.cold_support), split.n_cold)
    evaluate_ranking(scores, split.cold_support, split.cold_query, k=20)

Splits are user-disjoint: cold users never appear in `warm`. `cold_support` and `cold_query` share one
user vocabulary (the cold users, so row i of a score matrix is cold user i) and the log's item
vocabulary (so columns are the warm log's items).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from recmaml.data import Interactions, Vocabulary
from recmaml.errors import DataError
from recmaml.metrics import mae, mean_metrics, random_ndcg, ranking_metrics, rmse
from recmaml.tasks import group_positions, pad


@dataclass(frozen=True, eq=False)
class ColdSplit:
    warm: Interactions  # warm users' rows, users re-indexed over warm users only
    cold_support: Interactions  # cold users' revealed rows
    cold_query: Interactions  # cold users' hidden rows (same user vocabulary as cold_support)

    @property
    def n_cold(self) -> int:
        return self.cold_support.n_users


# ------------------------------------------------------------------------------------------ helpers


def _reindex_users(log: Interactions, rows: np.ndarray, users: np.ndarray) -> Interactions:
    """Rows `rows` of `log` over a user vocabulary of just `users` (sorted old user indices)."""
    new_index = np.full(log.n_users, -1, dtype=np.int64)
    new_index[users] = np.arange(len(users))
    sub = log.take(rows)
    # Passing the original user features with a smaller vocabulary realigns them (Interactions.__post_init__)
    return Interactions(
        user_idx=new_index[sub.user_idx].astype(log.user_idx.dtype), item_idx=sub.item_idx,
        users=Vocabulary(log.users.ids[users]), items=log.items, rating=sub.rating, timestamp=sub.timestamp,
        user_features=log.user_features, item_features=log.item_features,
    )


def _rank_within_user(user_idx: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Each row's 0-based position among its user's rows when ordered by `keys` (as np.lexsort: the last
    key is the primary one; remaining ties: row order)."""
    order, pos = group_positions(user_idx, *keys)
    rank = np.empty(len(user_idx), dtype=np.int64)
    rank[order] = pos
    return rank


def _split_users(log: Interactions, cold: np.ndarray, is_support: np.ndarray) -> ColdSplit:
    """A ColdSplit from a boolean per-user `cold` mask and a per-row `is_support` mask (cold rows only)."""
    cold_users = np.flatnonzero(cold)
    has_rows = np.bincount(log.user_idx, minlength=log.n_users) > 0
    warm_users = np.flatnonzero(~cold & has_rows)
    cold_row = cold[log.user_idx]
    return ColdSplit(
        warm=_reindex_users(log, np.flatnonzero(~cold_row), warm_users),
        cold_support=_reindex_users(log, np.flatnonzero(cold_row & is_support), cold_users),
        cold_query=_reindex_users(log, np.flatnonzero(cold_row & ~is_support), cold_users),
    )


def _pick_users(eligible: np.ndarray, fraction: float, gen: np.random.Generator) -> np.ndarray:
    """A boolean mask of round(fraction * #eligible) users drawn at random among `eligible`."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"cold_fraction must be in (0, 1), got {fraction}")
    candidates = np.flatnonzero(eligible)
    n = int(round(fraction * len(candidates)))
    if n == 0:
        raise DataError(f"no cold users: {len(candidates)} eligible users x cold_fraction {fraction} rounds to 0")
    mask = np.zeros(len(eligible), bool)
    mask[gen.choice(candidates, size=n, replace=False)] = True
    return mask


# ------------------------------------------------------------------------------------------- splits


def cold_split(log: Interactions, *, cold_fraction: float = 0.2, n_support: int = 5, order: str = "random",
               seed: int = 0) -> ColdSplit:
    """Hold out a random `cold_fraction` of the users with more than `n_support` rows as cold users.

    Each cold user reveals `n_support` rows (the support): random ones, or with order="temporal" the
    earliest by timestamp; the rest of its rows are the query. Applied to `split.warm` (with another
    seed) it carves validation users for tuning out of the warm users.
    """
    if order not in ("random", "temporal"):
        raise DataError(f"order must be 'random' or 'temporal', got {order!r}")
    if order == "temporal" and log.timestamp is None:
        raise DataError("order='temporal' needs a log with timestamps")
    gen = np.random.default_rng(seed)
    counts = np.bincount(log.user_idx, minlength=log.n_users)
    cold = _pick_users(counts > n_support, cold_fraction, gen)
    key = log.timestamp if order == "temporal" else gen.random(len(log))
    is_support = _rank_within_user(log.user_idx, key) < n_support
    return _split_users(log, cold, is_support)


def melu_split(log: Interactions, *, min_ratings: int = 13, max_ratings: int = 100, n_query: int = 10,
               cold_fraction: float = 0.2, seed: int = 0) -> ColdSplit:
    """The MeLU (Lee et al. 2019) user cold-start protocol: only users with min_ratings..max_ratings
    ratings are kept (warm and cold alike, as MeLU filters its data set); each cold user hides `n_query`
    random ratings as the query and reveals all the others as the support."""
    if min_ratings <= n_query:
        raise DataError(f"min_ratings ({min_ratings}) must exceed n_query ({n_query}) to leave a support")
    gen = np.random.default_rng(seed)
    counts = np.bincount(log.user_idx, minlength=log.n_users)
    in_range = (counts >= min_ratings) & (counts <= max_ratings)
    log = _reindex_users(log, np.flatnonzero(in_range[log.user_idx]), np.flatnonzero(in_range))
    cold = _pick_users(np.ones(log.n_users, bool), cold_fraction, gen)
    rank = _rank_within_user(log.user_idx, gen.random(len(log)))
    is_support = rank >= n_query  # the first n_query of a random order are hidden
    return _split_users(log, cold, is_support)


@dataclass(frozen=True, eq=False)
class KShotSplit:
    """Cold users held out once, with every row's position in the user's reveal order, so that one
    fitted model serves every support size K: `split.at(k)` reveals the first k rows of each cold user
    that has more than k, and hides the rest.

    The cold users do not depend on K (a model is fitted once per split), but the users evaluated at K
    are those with more than K rows; `at(k).n_cold` says how many.
    """

    warm: Interactions  # warm users' rows, users re-indexed over warm users only
    cold: Interactions  # every row of the cold users (users re-indexed over the cold users)
    position: np.ndarray  # per row of `cold`: 0-based position in its user's reveal order

    def at(self, k: int) -> ColdSplit:
        if k < 0:
            raise DataError(f"support size must be >= 0, got {k}")
        counts = np.bincount(self.cold.user_idx, minlength=self.cold.n_users)
        users = np.flatnonzero(counts > k)
        if len(users) == 0:
            raise DataError(f"no cold user has more than {k} interactions; use smaller support sizes (--k)")
        rows = np.flatnonzero((counts > k)[self.cold.user_idx])
        support = rows[self.position[rows] < k]
        query = rows[self.position[rows] >= k]
        return ColdSplit(warm=self.warm, cold_support=_reindex_users(self.cold, support, users),
                         cold_query=_reindex_users(self.cold, query, users))


def kshot_split(log: Interactions, *, cold_fraction: float = 0.2, order: str = "random", seed: int = 0,
                min_rows: int = 2) -> KShotSplit:
    """Hold out a random `cold_fraction` of the users with at least `min_rows` rows as cold users, and
    order each cold user's rows at random (order="random") or by timestamp, earliest first
    (order="temporal"; ties in random order). Applied to `split.warm` with another seed it carves
    validation users out of the warm users the same way."""
    if order not in ("random", "temporal"):
        raise DataError(f"order must be 'random' or 'temporal', got {order!r}")
    if order == "temporal" and log.timestamp is None:
        raise DataError("the temporal protocol reveals each cold user's earliest interactions, but this log has "
                        "no timestamps; use the random protocol (--protocol random), or give the log a timestamp "
                        "column (--timestamp-col)")
    gen = np.random.default_rng(seed)
    counts = np.bincount(log.user_idx, minlength=log.n_users)
    cold = _pick_users(counts >= min_rows, cold_fraction, gen)
    tiebreak = gen.random(len(log))
    keys = (tiebreak,) if order == "random" else (tiebreak, log.timestamp)  # earliest first, ties at random
    position = _rank_within_user(log.user_idx, *keys)
    split = _split_users(log, cold, np.ones(len(log), bool))
    cold_rows = np.flatnonzero(cold[log.user_idx])
    return KShotSplit(warm=split.warm, cold=split.cold_support, position=position[cold_rows])


def support_arrays(support: Interactions) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """(user_idx, item_idx, n_users, rating): the positional arguments of a baseline's score()."""
    return support.user_idx, support.item_idx, support.n_users, support.rating


# --------------------------------------------------------------------------------------- evaluation


def padded_by_user(user_idx: np.ndarray, n_users: int, *columns: np.ndarray, fill=-1):
    """Group rows by user into (n_users, max rows) matrices (one per column) and a 0/1 mask."""
    order, pos = group_positions(user_idx)
    users = user_idx[order]
    width = int(pos.max()) + 1 if len(pos) else 1
    mask = pad(users, pos, np.ones(len(pos), np.float32), n_users, width)
    out = [pad(users, pos, col[order].astype(np.result_type(col, type(fill))), n_users, width, fill) for col in columns]
    return (*out, mask)


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """(U, k) item indices by descending score; -inf entries (excluded items) become -1."""
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), top, -1)


def evaluate_ranking(scores: np.ndarray, support: Interactions, query: Interactions, k: int = 20,
                     relevance_threshold: float | None = 4.0) -> dict[str, float]:
    """Mean ndcg/recall/hit/mrr@k of a (n_cold x n_items) score matrix over the whole catalog.

    Support items are excluded (a user has already shown them); relevant items are the query rows rated
    at least `relevance_threshold` (all query rows for implicit logs or threshold None). Users without a
    relevant query item are left out of the means; `users` counts those evaluated.
    """
    ranked = RankedCatalog(scores, support, query, relevance_threshold, np.float64)
    per_user = ranked.metrics(k)
    out = mean_metrics(per_user)
    out["users"] = int(np.isfinite(per_user[f"ndcg@{k}"]).sum())
    return out


class RankedCatalog:
    """A score matrix (n_cold x n_items) made ready for full-catalog metrics, the one core of
    evaluate_ranking and the benchmark's cells: a copy in `dtype` with each user's support items set to
    -inf, and the relevant query rows (rated >= relevance_threshold; all of them when None or unrated)."""

    def __init__(self, scores: np.ndarray, support: Interactions, query: Interactions,
                 relevance_threshold: float | None, dtype=np.float64):
        self.scores = np.array(scores, dtype=dtype)  # a copy: support items are set to -inf
        self.scores[support.user_idx, support.item_idx] = -np.inf
        relevant = np.ones(len(query), bool)
        if relevance_threshold is not None and query.rating is not None:
            relevant = query.rating >= relevance_threshold
        self.rel_user, self.rel_item = query.user_idx[relevant], query.item_idx[relevant]
        self.rel_items, self.rel_mask = padded_by_user(self.rel_user, self.scores.shape[0], self.rel_item)
        self._top = None

    def metrics(self, k: int) -> dict[str, np.ndarray]:
        """Per-user ndcg/recall/hit/mrr@k (NaN for users without a relevant item)."""
        if self._top is None or self._top.shape[1] < k:
            self._top = top_k_items(self.scores, k)
        return ranking_metrics(self._top[:, :k], self.rel_items, self.rel_mask, k)


def evaluate_ratings(pred, truth) -> dict[str, float]:
    return {"mae": mae(pred, truth), "rmse": rmse(pred, truth)}


def query_ndcg(pred: np.ndarray, query: Interactions, k: int = 3) -> float:
    """MeLU's ranking metric: each user's query items ranked by predicted rating (`pred`, one value per
    query row), graded gain 2^rating - 1, mean nDCG@k over users."""
    return float(np.nanmean(query_ndcg_per_user(pred, query, k)))


def query_ndcg_per_user(pred: np.ndarray, query: Interactions, k: int = 3, random: bool = False) -> np.ndarray:
    """Per-user nDCG@k of MeLU's metric (NaN for users without query rows); random=True gives instead the
    expectation of a uniformly random order of the same query items (what a model must beat)."""
    pred = np.asarray(pred, np.float64)
    items, pred_m, gain_m, mask = padded_by_user(query.user_idx, query.n_users, query.item_idx, pred,
                                          2.0 ** query.rating.astype(np.float64) - 1.0, fill=-1)
    if random:
        return random_ndcg(gain_m, mask, k)
    pred_m = np.where(mask > 0, pred_m, -np.inf)  # padding ranks last
    ranked = np.take_along_axis(items, np.argsort(-pred_m, axis=1, kind="stable"), axis=1)
    out = np.full(query.n_users, np.nan)
    has_rows = mask.sum(axis=1) > 0
    per_user = ranking_metrics(ranked[has_rows], items[has_rows], mask[has_rows], k, gains=gain_m[has_rows])
    out[has_rows] = per_user[f"ndcg@{k}"]
    return out


def scores_at(scores: np.ndarray, rows: Interactions) -> np.ndarray:
    """The entries of a (n_cold x n_items) score matrix at the (user, item) pairs of `rows`."""
    return np.asarray(scores)[rows.user_idx, rows.item_idx]


# ------------------------------------------------------------------------------ models and tuning


def metarec_scores(rec, cold_support: Interactions, batch_size: int | None = None) -> np.ndarray:
    """Dense (n_cold x n_items) scores of a fitted MetaRecommender, each cold user adapted once on its
    support (rows: cold_support's users, a user without rows scored from the meta-learned start;
    columns: the model's items), through the public MetaRecommender.score."""
    return rec.score(cold_support, users=cold_support.users.ids, batch_size=batch_size)


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of a grid's values, as parameter dicts (an empty grid: one empty point)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def tune(fit_and_score: Callable[..., float], grid: dict[str, list]) -> tuple[dict, float, list[tuple[dict, float]]]:
    """The grid point with the highest `fit_and_score(**params)` (e.g. validation nDCG@20), the search
    going past the grid's ends while the best point sits at one (past_the_edge).

    Returns (best params, best value, every (params, value) tried, in the order tried)."""
    points = grid_points(grid)
    results = [(params, float(fit_and_score(**params))) for params in points]

    def best():
        return max(results, key=lambda r: r[1] if np.isfinite(r[1]) else -np.inf)

    while (params := past_the_edge(best()[0], [r[0] for r in results], points)) is not None:
        results.append((params, float(fit_and_score(**params))))
    return best()[0], best()[1], results


def tune_baseline(factory: Callable, grid: dict[str, list], val: ColdSplit, k: int = 20,
                  relevance_threshold: float | None = 4.0) -> tuple[dict, float, list[tuple[dict, float]]]:
    """Pick a baseline's hyperparameters by validation nDCG@k: fit `factory(**params)` on `val.warm`,
    score `val.cold_support`, evaluate on `val.cold_query`."""
    def ndcg(**params) -> float:
        model = factory(**params).fit(val.warm)
        scores = model.score(*support_arrays(val.cold_support))
        return evaluate_ranking(scores, val.cold_support, val.cold_query, k, relevance_threshold)[f"ndcg@{k}"]

    return tune(ndcg, grid)


GRID_EXTENSIONS = 3  # values a search adds past each end of a numeric axis while its optimum sits there


def past_the_edge(params: dict, seen: list[dict], grid: list[dict]) -> dict | None:
    """The next point to try when the best point so far, `params`, sits at an end of a numeric axis of the
    `grid` (a scale of two or more numbers, such as EASE's L2 strength or ALS's factors): that point with
    the axis moved one step further out, the step the two outermost values make (a factor), until the
    optimum is inside or GRID_EXTENSIONS values were added at that end. A line search from the optimum,
    not a new slice of the grid, so that a grid which stops short of the optimum no longer decides it.
    An axis that starts at 0 (no shrink, no damping) has its natural end there. A range axis, pairs
    (low, high) with one low in the whole grid (Mult-VAE's input sizes), is the axis of its highs, moved
    to (low, further). `seen`: the points tried so far (the grid's among them). None: nothing to try."""
    for name, value in params.items():
        low = _fixed_low(name, grid)
        number = _axis_number(value, low)
        original = sorted({n for p in grid if _is_number(n := _axis_number(p.get(name), low))})
        if len(original) < 2 or not _is_number(number):
            continue
        value = number
        axis = sorted({n for p in seen if _is_number(n := _axis_number(p.get(name), low))})
        ends = []  # (end, the factor past it, values added there so far); a factor needs positive values
        if axis[-2] > 0:
            ends.append((axis[-1], axis[-1] / axis[-2], sum(v > original[-1] for v in axis)))
        if original[0] > 0:
            ends.append((axis[0], axis[0] / axis[1], sum(v < original[0] for v in axis)))
        for end, step, added in ends:
            if value != end or added >= GRID_EXTENSIONS:
                continue
            further = value * step
            further = int(round(further)) if isinstance(value, int) else float(f"{further:.6g}")
            candidate = {**params, name: further if low is None else (low, further)}
            if further > 0 and further != value and candidate not in seen:
                return candidate
    return None


def _fixed_low(name: str, grid: list[dict]):
    """The one low of a range axis (every grid value a pair (low, high) of numbers with the same low), else
    None."""
    values = [p.get(name) for p in grid]
    pairs = all(isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_is_number, v)) for v in values)
    lows = {v[0] for v in values} if pairs and values else set()
    return lows.pop() if len(lows) == 1 else None


def _axis_number(value, low):
    """A value's place on its axis: the value, or a range's high where the axis is a range's (`low` set)."""
    if low is None:
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == low:
        return value[1]
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
