"""Non-meta baselines for cold-start users: popularity, item mean (+ user offset), implicit ALS fold-in,
EASE, item-based kNN and Mult-VAE (trained to imitate cold users, scored by encoder fold-in).

Every baseline is fitted on a warm log and then scores COLD users, who are not in that log, from their
few support rows. They share one small interface:

    model = EASE(lam=200).fit(warm)
    scores = model.score(support_user_idx, support_item_idx, n_users, support_rating)   # (n_users, n_items)

`support_*_idx` index the cold users (rows 0..n_users-1 of the result) and the warm log's items (columns),
so every score matrix lives in the warm log's item index space.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from recmaml.data import Interactions
from recmaml.errors import DataError


def _support_csr(user_idx, item_idx, n_users: int, n_items: int, values=None) -> sp.csr_matrix:
    """The cold users' support as a (n_users x n_items) CSR; duplicate (user, item) rows are summed."""
    user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
    data = np.ones(len(user_idx), np.float32) if values is None else np.asarray(values, np.float32)
    return sp.csr_matrix((data, (user_idx, item_idx)), shape=(n_users, n_items), dtype=np.float32)


def liked_rows(log: Interactions, threshold: float | None) -> Interactions:
    """The rows rated at least `threshold` when it is set and the log has ratings; else the whole log."""
    if threshold is None or log.rating is None:
        return log
    return log.take(log.rating >= threshold)


SAME_ROWS = "same"  # a history's rows read as the warm log's are (support_threshold's default)


def _history_threshold(threshold: float | None, support_threshold) -> float | None:
    """The rating a history row needs to count: the warm log's threshold unless support_threshold is set
    (None: every history row counts, whatever the warm log reads)."""
    return threshold if support_threshold == SAME_ROWS else support_threshold


def _binary_csr(log: Interactions) -> sp.csr_matrix:
    """users x items CSR of ones: a repeated (user, item) row is still one interaction."""
    X = log.to_csr("ones")
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def _binary_support(support_user_idx, support_item_idx, n_users: int, n_items: int, support_rating,
                    threshold: float | None) -> sp.csr_matrix:
    """The cold users' support as a binary CSR, keeping only rows rated >= threshold when both are given."""
    support_user_idx, support_item_idx = np.asarray(support_user_idx), np.asarray(support_item_idx)
    if threshold is not None and support_rating is not None:
        keep = np.asarray(support_rating) >= threshold
        support_user_idx, support_item_idx = support_user_idx[keep], support_item_idx[keep]
    X = _support_csr(support_user_idx, support_item_idx, n_users, n_items)
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


class Popularity:
    """Score every item by its number of warm interactions; the same list for every cold user.

    `threshold` counts only rows rated at least that (e.g. 4.0: "liked" counts), when the log has ratings.
    """

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold
        self.counts: np.ndarray | None = None

    def fit(self, warm: Interactions) -> Popularity:
        rows = np.ones(len(warm), bool)
        if self.threshold is not None and warm.rating is not None:
            rows = warm.rating >= self.threshold
        self.counts = np.bincount(warm.item_idx[rows], minlength=warm.n_items).astype(np.float32)
        return self

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        return np.tile(self.counts, (n_users, 1))


class RecentPopularity:
    """Time-aware popularity: items counted in the `window_days` before each cold user's time (its latest
    revealed interaction, or when it arrived), so that a user who joined in 2005 gets 2005's favourites.

    Counts come from a cumulative table over EDGES quantiles of the warm timestamps, so the window's ends
    are rounded to those quantiles; the all-time count breaks ties (a window before the log has no rows).
    `threshold` counts only rows rated at least that, as Popularity's does."""

    EDGES = 512

    def __init__(self, window_days: float = 365.0, threshold: float | None = None):
        self.window_days = window_days
        self.threshold = threshold
        self.edges: np.ndarray | None = None
        self.cumulative: np.ndarray | None = None  # (len(edges) + 1, n_items): counts up to each edge
        self.all_time: np.ndarray | None = None

    def fit(self, warm: Interactions) -> RecentPopularity:
        if warm.timestamp is None:
            raise DataError("time-aware popularity needs timestamps; this log has none")
        liked = liked_rows(warm, self.threshold)
        times = liked.timestamp.astype(np.float64)
        self.edges = np.unique(np.quantile(times, np.linspace(0.0, 1.0, self.EDGES)))
        edge_of_row = np.searchsorted(self.edges, times, side="left")  # first edge at or after the row
        counts = np.zeros((len(self.edges) + 1, warm.n_items), np.float32)
        np.add.at(counts, (edge_of_row + 1, liked.item_idx), 1.0)
        self.cumulative = np.cumsum(counts, axis=0)
        self.all_time = self.cumulative[-1]
        return self

    def counts_at(self, times: np.ndarray) -> np.ndarray:
        """(len(times), n_items): each item's count in the window that ends at each time."""
        times = np.asarray(times, np.float64)
        end = np.searchsorted(self.edges, times, side="right")
        start = np.searchsorted(self.edges, times - self.window_days * 86400.0, side="right")
        return self.cumulative[end] - self.cumulative[start]

    def score_at(self, times: np.ndarray) -> np.ndarray:
        return self.counts_at(times) + self.all_time / (self.all_time.max() + 1.0)


class ItemMean:
    """Rating baseline: the item's mean rating plus the user's mean offset on the support.

        item_mean[i] = (sum of i's ratings + damping * global_mean) / (count[i] + damping)
        offset[u]    = sum over u's support of (rating - item_mean[item]) / (n_support[u] + user_damping)

    Damping shrinks rarely rated items towards the global mean (and, with `user_damping`, a user's few
    offsets towards 0), which is what keeps a 3-rating item from topping the list. Since the offset is a
    per-user constant, ranking by these scores is the MeLU protocol's "item-mean ranking".

    `user_offset=False` leaves the offset out: every cold user gets the plain (damped) item means.
    """

    def __init__(self, damping: float = 5.0, user_damping: float = 0.0, user_offset: bool = True):
        self.damping = damping
        self.user_damping = user_damping
        self.user_offset = user_offset
        self.global_mean = 0.0
        self.item_mean: np.ndarray | None = None

    def fit(self, warm: Interactions) -> ItemMean:
        if warm.rating is None:
            raise ValueError("ItemMean needs a log with ratings")
        rating = warm.rating.astype(np.float64)
        self.global_mean = float(rating.mean()) if len(rating) else 0.0
        sums = np.bincount(warm.item_idx, weights=rating, minlength=warm.n_items)
        counts = np.bincount(warm.item_idx, minlength=warm.n_items)
        self.item_mean = (sums + self.damping * self.global_mean) / np.maximum(counts + self.damping, 1e-12)
        # an item never rated with damping 0 would be 0/0; fall back to the global mean
        self.item_mean[counts + self.damping == 0] = self.global_mean
        return self

    def user_offsets(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        if support_rating is None:
            return np.zeros(n_users)
        support_user_idx = np.asarray(support_user_idx)
        residual = np.asarray(support_rating, np.float64) - self.item_mean[np.asarray(support_item_idx)]
        sums = np.bincount(support_user_idx, weights=residual, minlength=n_users)
        counts = np.bincount(support_user_idx, minlength=n_users)
        return sums / np.maximum(counts + self.user_damping, 1e-12)

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        if not self.user_offset:
            return np.tile(self.item_mean.astype(np.float32), (n_users, 1))
        offset = self.user_offsets(support_user_idx, support_item_idx, n_users, support_rating)
        return (self.item_mean[None, :] + offset[:, None]).astype(np.float32)


def _one_blas_thread():
    """OpenBLAS limited to one thread for a call into implicit. implicit's solvers run in their own
    OpenMP threads; an OpenBLAS thread pool inside them slows them down, and OpenBLAS prints "OpenBLAS
    Warning : Detect OpenMP Loop" on every such call (thousands of lines on stderr) unless the process
    was started with OPENBLAS_NUM_THREADS=1. Wrap every implicit call that solves (fit,
    recalculate_user), so that no caller needs the variable."""
    return threadpool_limits(limits=1, user_api="blas")


class ALSFoldIn:
    """Implicit ALS (Hu, Koren, Volinsky 2008) fitted on warm users; cold users are folded in by solving
    their least-squares user factors against the fixed item factors (implicit's `recalculate_user`).

    `threshold`: when set and the log has ratings, only rows rated at least that count as interactions.
    """

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, threshold: float | None = None, seed: int = 0, num_threads: int = 0):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.threshold, self.seed, self.num_threads = iterations, threshold, seed, num_threads
        self.model = None

    def _keep(self, rating) -> np.ndarray | None:
        if self.threshold is None or rating is None:
            return None
        return np.asarray(rating) >= self.threshold

    def fit(self, warm: Interactions) -> ALSFoldIn:
        # implicit.cpu explicitly: implicit.als.AlternatingLeastSquares would probe for a GPU
        from implicit.cpu.als import AlternatingLeastSquares

        keep = self._keep(warm.rating)
        log = warm if keep is None else warm.take(keep)
        X = log.to_csr("ones")
        X.data[:] = 1.0  # binary: a repeated (user, item) row is still one interaction
        with _one_blas_thread():
            self.model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, random_state=self.seed, num_threads=self.num_threads)
            self.model.fit(X, show_progress=False)
        return self

    def user_factors(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        keep = self._keep(support_rating)
        if keep is not None:
            support_user_idx, support_item_idx = np.asarray(support_user_idx)[keep], np.asarray(support_item_idx)[keep]
        item_factors = self.model.item_factors
        csr = _support_csr(support_user_idx, support_item_idx, n_users, item_factors.shape[0])
        csr.data[:] = 1.0  # binary confidence, as in fit
        with _one_blas_thread():  # one batched solve for all cold users, in implicit's OpenMP threads
            return self.model.recalculate_user(np.arange(n_users), csr)

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        factors = self.user_factors(support_user_idx, support_item_idx, n_users, support_rating)
        return factors @ self.model.item_factors.T


class EASE:
    """EASE (Steck 2019): a closed-form item-item model with a zero diagonal.

        P = (X^T X + lam I)^-1,   B = I - P diag(1 / diag(P))   (so diag(B) = 0),   score(u) = x_u B

    It needs no user factors, so a cold user is scored straight from the support row x_u.

    Large catalogs: the inversion is O(n^3) (16k items take minutes on 2 cores), so when the warm log has
    more than `max_items` items (None: no limit), EASE is fitted on the `max_items` most frequent warm items
    only (counted after the `threshold` filter; ties go to the lower item index). `self.items` then holds
    the kept item indices (None when all are kept) and `B` is (max_items x max_items); support rows on
    dropped items are ignored, and every dropped item scores below every kept item of that user: the user's
    lowest kept score minus 1, plus a tie-break in [0, 0.5) by warm popularity. The inverse comes from a
    Cholesky factorization (the regularized Gram matrix is symmetric positive definite), in float64 up to
    `FLOAT32_ABOVE` items and in float32 above (about 5x faster than a float64 general inverse at 5000
    items; the top-20 lists agree with float64 on ML-100K-size random data, ml-latest-small and CiaoDVD).

    `threshold` keeps the warm log's rows rated at least that; `support_threshold` the history's (default:
    the same as the warm log's; None: every history row). The two are separate choices: tuned on validation
    users, the benchmark's EASE fits the liked warm rows of ML-100K and FilmTrust and reads every row of a
    history on every log (benchmarks/EXPERIMENTS.md, issue 28).
    """

    FLOAT32_ABOVE = 2000

    def __init__(self, lam: float = 200.0, threshold: float | None = None, max_items: int | None = 5000,
                 support_threshold: float | None | str = SAME_ROWS):
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be None or >= 1, got {max_items}")
        self.lam = lam
        self.threshold = threshold
        self.support_threshold = support_threshold
        self.max_items = max_items
        self.B: np.ndarray | None = None
        self.items: np.ndarray | None = None
        self.n_items = 0
        self.dropped_bonus: np.ndarray | None = None

    def fit(self, warm: Interactions) -> EASE:
        X = _binary_csr(liked_rows(warm, self.threshold))
        self.n_items = X.shape[1]
        self.items, self.dropped_bonus = None, None
        if self.max_items is not None and self.n_items > self.max_items:
            counts = np.bincount(X.indices, minlength=self.n_items)
            self.items = np.sort(np.argsort(-counts, kind="stable")[: self.max_items])
            dropped = np.ones(self.n_items, bool)
            dropped[self.items] = False
            self.dropped_bonus = np.where(dropped, 0.5 * counts / (counts.max() + 1.0), 0.0).astype(np.float32)
            X = X[:, self.items]
        n = X.shape[1]
        dtype = np.float32 if n > self.FLOAT32_ABOVE else np.float64
        gram = (X.T @ X).toarray().astype(dtype)
        gram[np.diag_indices_from(gram)] += self.lam
        P = self._inverse(gram)
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0.0)
        self.B = B.astype(np.float32)
        return self

    @staticmethod
    def _inverse(gram: np.ndarray) -> np.ndarray:
        """Inverse of a symmetric positive definite matrix via Cholesky (LAPACK potrf + potri); a general
        inverse when the factorization fails (lam <= 0 on a singular Gram matrix)."""
        potrf, potri = (lapack.spotrf, lapack.spotri) if gram.dtype == np.float32 else (lapack.dpotrf, lapack.dpotri)
        factor, info = potrf(gram, lower=False, overwrite_a=False)
        if info == 0:
            inverse, info = potri(factor, lower=False, overwrite_c=True)
            if info == 0:
                upper = np.triu(inverse)
                return upper + np.triu(upper, 1).T
        return np.linalg.inv(gram.astype(np.float64))

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        X = _binary_support(support_user_idx, support_item_idx, n_users, self.n_items, support_rating,
                            _history_threshold(self.threshold, self.support_threshold))
        if self.items is None:
            return np.asarray(X @ self.B, dtype=np.float32)
        kept = np.asarray(X[:, self.items] @ self.B, dtype=np.float32)
        scores = np.empty((n_users, self.n_items), np.float32)
        floor = kept.min(axis=1, keepdims=True) - 1.0 if kept.size else np.zeros((n_users, 1), np.float32)
        scores[:] = floor + self.dropped_bonus[None, :]
        scores[:, self.items] = kept
        return scores


class ItemKNN:
    """Item-based kNN (Sarwar et al. 2001; Deshpande & Karypis 2004) on binary interactions.

        sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)      (cosine; shrink damps rare pairs)

    Each item keeps its `neighbors` most similar other items (the rest of its row is set to 0; the
    diagonal is 0), and a cold user scores  score(u) = sum over u's support items j of sim(j, .).
    `threshold`: when set and the log has ratings, only rows rated at least that count in the warm log, and
    in the support too unless `support_threshold` says otherwise (None: every history row). The similarity rows are computed a chunk of items at a time (a sparse X^T X
    block per chunk; rows with more than `neighbors` similar items are pruned together by argpartition),
    so memory stays bounded and nothing loops per item.
    """

    CHUNK_ENTRIES = 1 << 23  # dense similarity entries per chunk (32 MB of float32)

    def __init__(self, neighbors: int = 100, shrink: float = 0.0, threshold: float | None = None,
                 support_threshold: float | None | str = SAME_ROWS):
        if int(neighbors) != neighbors or neighbors < 1:
            raise ValueError(f"neighbors must be an integer >= 1, got {neighbors}")
        if shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {shrink}")
        self.neighbors, self.shrink, self.threshold = int(neighbors), float(shrink), threshold
        self.support_threshold = support_threshold
        self.W: sp.csr_matrix | None = None

    def fit(self, warm: Interactions) -> ItemKNN:
        X = _binary_csr(liked_rows(warm, self.threshold))
        n_items = X.shape[1]
        Xt = X.T.tocsr()  # items x users
        norms = np.sqrt(np.diff(Xt.indptr).astype(np.float32))
        k = min(self.neighbors, max(n_items - 1, 0))
        chunk = max(1, self.CHUNK_ENTRIES // max(n_items, 1))
        rows, cols, vals = [], [], []
        for r0 in range(0, n_items, chunk):
            r1 = min(r0 + chunk, n_items)
            co = Xt[r0:r1] @ X  # sparse co-occurrence counts of items r0..r1 with every item
            row = np.repeat(np.arange(r0, r1), np.diff(co.indptr))
            col = co.indices
            # an entry means both items were seen, so both norms are > 0
            val = co.data / (norms[row] * norms[col] + self.shrink)
            keep = (val > 0) & (row != col)  # an item is not its own neighbour
            row, col, val = row[keep], col[keep], val[keep]
            # rows with at most k similar items keep them all; only the others need a top-k
            heavy = np.bincount(row - r0, minlength=r1 - r0) > k
            light = ~heavy[row - r0]
            rows.append(row[light])
            cols.append(col[light])
            vals.append(val[light])
            heavy_rows = np.flatnonzero(heavy)
            if k == 0 or not len(heavy_rows):
                continue
            slot = np.full(r1 - r0, -1)
            slot[heavy_rows] = np.arange(len(heavy_rows))
            dense = np.zeros((len(heavy_rows), n_items), np.float32)
            dense[slot[row[~light] - r0], col[~light]] = val[~light]
            # (partitioning the negated rows at k - 1 is several times faster than at n_items - k: the
            # many zeros sit on the far side of the split)
            top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
            top_vals = np.take_along_axis(dense, top, axis=1)
            rows.append(np.repeat(heavy_rows + r0, k))
            cols.append(top.ravel())
            vals.append(top_vals.ravel())
        rows, cols, vals = (np.concatenate(a) if a else np.zeros(0) for a in (rows, cols, vals))
        self.W = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n_items, n_items))
        return self

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        X = _binary_support(support_user_idx, support_item_idx, n_users, self.W.shape[0], support_rating,
                            _history_threshold(self.threshold, self.support_threshold))
        return (X @ self.W).toarray().astype(np.float32, copy=False)


class _MultVAENet(torch.nn.Module):
    """Mult-VAE's networks. The encoder's first layer is an EmbeddingBag(mode="sum") over a user's item
    indices with per-item weights: a sparse (normalized, dropped-out) input row times the first weight
    matrix, without ever building the dense (batch x n_items) input."""

    def __init__(self, n_items: int, hidden: int, latent: int):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(n_items, hidden, mode="sum")
        self.embed_bias = torch.nn.Parameter(torch.empty(hidden))
        self.enc_out = torch.nn.Linear(hidden, 2 * latent)
        self.dec_hidden = torch.nn.Linear(latent, hidden)
        self.dec_out = torch.nn.Linear(hidden, n_items)
        # as in Liang et al.'s code: Xavier weights, N(0, 0.001) biases
        for weight in (self.embed.weight, self.enc_out.weight, self.dec_hidden.weight, self.dec_out.weight):
            torch.nn.init.xavier_uniform_(weight)
        for bias in (self.embed_bias, self.enc_out.bias, self.dec_hidden.bias, self.dec_out.bias):
            torch.nn.init.normal_(bias, std=0.001)

    def encode(self, indices, offsets, weights):
        h = torch.tanh(self.embed(indices, offsets, per_sample_weights=weights) + self.embed_bias)
        mean, logvar = self.enc_out(h).chunk(2, dim=1)
        return mean, logvar

    def decode(self, z):
        return self.dec_out(torch.tanh(self.dec_hidden(z)))


def _bags(X: sp.csr_matrix):
    """EmbeddingBag inputs of a binary CSR's rows: item indices, bag offsets and the L2-normalizing
    per-item weights 1 / sqrt(row size)."""
    counts = np.diff(X.indptr)
    weights = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts).astype(np.float32)
    return (torch.from_numpy(X.indices.astype(np.int64)), torch.from_numpy(X.indptr[:-1].astype(np.int64)),
            torch.from_numpy(weights))


def _random_subsets(X: sp.csr_matrix, low: int, high: int, gen: np.random.Generator) -> sp.csr_matrix:
    """A random subset of each row's items, of a size uniform in [min(low, n), min(high, n)] for a row of n
    items (n >= 1). Vectorized: a random key per entry shuffles the entries within their rows."""
    counts = np.diff(X.indptr)
    size = gen.integers(np.minimum(low, counts), np.minimum(high, counts) + 1)
    row = np.repeat(np.arange(len(counts)), counts)
    order = np.argsort(row + gen.random(len(row)), kind="stable")  # rows stay grouped, shuffled inside
    rank = np.arange(len(row)) - X.indptr[row]
    chosen = order[rank < size[row]]
    indptr = np.concatenate([[0], np.cumsum(size)])
    return sp.csr_matrix((np.ones(len(chosen), np.float32), X.indices[chosen], indptr), shape=X.shape)


class _EarlyStopping:
    """MultVAE.fit's validation checks: the best value so far, its weights and epoch count, and whether
    `patience` checks in a row have found nothing better. Without a validate function it does nothing."""

    def __init__(self, model: MultVAE, validate):
        self.model, self.validate = model, validate
        self.best, self.best_state, self.misses, self.last_check = -np.inf, None, 0, 0
        self.done = False

    def after_epoch(self) -> None:
        model = self.model
        if self.validate is None or model.steps_run - self.last_check < model.CHECK_STEPS:
            return
        self.last_check = model.steps_run
        value = float(self.validate(model))
        model.net.train()  # scoring switched it to eval mode
        model.curve.append((model.epochs_run, value))
        if value > self.best:
            self.best, self.misses, model.best_epochs = value, 0, model.epochs_run
            self.best_state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
        else:
            self.misses += 1
            if self.misses >= model.patience:
                self.done, model.stopped_by = True, "patience"

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.net.load_state_dict(self.best_state)
        else:  # no check ran (or none was asked for): the weights of the last epoch are the ones kept
            self.model.best_epochs = self.model.epochs_run


def _adam(params) -> torch.optim.Optimizer:
    """Adam (lr 1e-3, no weight decay), fused where this torch build has it: on CPU the fused step is
    several times faster on the two (n_items x hidden) weight matrices, the same update up to rounding."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=1e-3, weight_decay=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=1e-3, weight_decay=0.0)


# the ranges of input sizes a careful practitioner tries (the benchmark's and the quickstart's grid; their
# search steps past its ends while the best sits there)
MULT_VAE_INPUT_GRID = ((1, 5), (1, 20), (1, 50))


class MultVAE:
    """Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018), trained
    to imitate cold users.

    Encoder n_items -> hidden (tanh) -> 2 * latent (mean, log-variance); decoder latent -> hidden (tanh)
    -> n_items logits; multinomial log-likelihood (log-softmax over items) plus the KL term, whose weight
    rises linearly from 0 to `beta` over `anneal_steps` updates; Adam (lr 1e-3, no weight decay); dropout
    `dropout` on the L2-normalized input. The cold-start twist: each epoch, every training user's INPUT
    is a fresh random subset of its items, of a size uniform in [input_items[0], min(input_items[1], n)]
    for a user with n items (all n when n < input_items[0]), while the likelihood's TARGET is all n
    items, so the model learns to predict a full profile from a few items. (Input dropout applies on top
    of the subset, so a small subset may lose all its items, as in denoising.)

    A cold user is scored by encoder fold-in: its binary support row (normalized, no dropout) is encoded,
    the mean decoded (no sampling) into logits over the warm items. `threshold`: when set and the log has
    ratings, only rows rated at least that count, in the warm log and in the support alike.

    Training stops after `epochs` epochs or once `max_seconds` of wall-clock time are spent (checked after
    every batch, so at least one update runs; None: no time budget); `epochs_run` (epochs started, the
    last possibly partial), `steps_run` and `train_seconds` record it. Two fits with the same `seed` give
    the same scores as long as the time budget does not cut them: with max_seconds=None, always (a budget
    that binds makes the score follow the machine's load).

    Early stopping: `fit(warm, validate=f)` calls f(model) (a value to maximize, e.g. validation nDCG@20
    of the model as it stands) at the end of the first epoch after every CHECK_STEPS updates, stops once
    `patience` calls in a row found nothing better, and keeps the best weights; `best_epochs` is the
    number of epochs they took (what a refit on more users is given as `epochs`), `stopped_by` says what
    ended training ('patience', 'epochs' or 'time') and `curve` holds (epoch, value) of every call.
    """

    SCORE_BATCH = 1024
    CHECK_STEPS = 50

    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5, beta: float = 0.2,
                 anneal_steps: int = 2000, epochs: int = 100, batch_size: int = 256, max_seconds: float | None = 60.0,
                 input_items: tuple[int, int] = (1, 20), threshold: float | None = None, seed: int = 0,
                 patience: int = 5):
        for name, value in (("hidden", hidden), ("latent", latent), ("epochs", epochs),
                            ("batch_size", batch_size), ("patience", patience)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if int(anneal_steps) != anneal_steps or anneal_steps < 0:
            raise ValueError(f"anneal_steps must be an integer >= 0, got {anneal_steps}")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 (or None: no time budget), got {max_seconds}")
        try:
            low, high = (int(v) for v in input_items)
        except (TypeError, ValueError):
            raise ValueError(f"input_items must be a pair (low, high) of integers, got {input_items!r}") from None
        if not 1 <= low <= high:
            raise ValueError(f"input_items must satisfy 1 <= low <= high, got {input_items!r}")
        self.hidden, self.latent, self.dropout, self.beta = int(hidden), int(latent), float(dropout), float(beta)
        self.anneal_steps, self.epochs, self.batch_size = int(anneal_steps), int(epochs), int(batch_size)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.input_items, self.threshold, self.seed = (low, high), threshold, seed
        self.patience = int(patience)
        self.net: _MultVAENet | None = None
        self.n_items = 0
        self.epochs_run = 0
        self.steps_run = 0
        self.train_seconds = 0.0
        self.best_epochs: int | None = None
        self.stopped_by = ""
        self.curve: list[tuple[int, float]] = []

    def fit(self, warm: Interactions, validate: Callable[[MultVAE], float] | None = None) -> MultVAE:
        X = _binary_csr(liked_rows(warm, self.threshold))
        X = X[np.flatnonzero(np.diff(X.indptr) > 0)]  # users left with no interaction teach nothing
        self.n_items = n_items = X.shape[1]
        n_train = X.shape[0]
        gen = np.random.default_rng(self.seed)
        start = time.perf_counter()
        self.epochs_run = self.steps_run = 0
        self.stopped_by, self.curve, self.best_epochs = "epochs", [], None
        with torch.random.fork_rng(devices=[]):  # seeded here without disturbing the caller's RNG
            torch.manual_seed(self.seed)
            self.net = net = _MultVAENet(n_items, self.hidden, self.latent)
            optimizer = _adam(net.parameters())
            net.train()
            out_of_time = n_train == 0
            stopping = _EarlyStopping(self, validate)
            for _ in range(self.epochs):
                if out_of_time or stopping.done:
                    break
                self.epochs_run += 1
                inputs = _random_subsets(X, *self.input_items, gen)
                order = gen.permutation(n_train)
                for b0 in range(0, n_train, self.batch_size):
                    rows = order[b0 : b0 + self.batch_size]
                    indices, offsets, weights = _bags(inputs[rows])
                    weights = F.dropout(weights, self.dropout, training=True)
                    mean, logvar = net.encode(indices, offsets, weights)
                    z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
                    log_probs = F.log_softmax(net.decode(z), dim=1)
                    target = X[rows]  # all the user's items
                    flat = np.repeat(np.arange(len(rows)) * n_items, np.diff(target.indptr)) + target.indices
                    nll = -log_probs.view(-1)[torch.from_numpy(flat.astype(np.int64))].sum() / len(rows)
                    kl = (-0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp()).sum(dim=1)).mean()
                    ramp = 1.0 if self.anneal_steps == 0 else min(1.0, self.steps_run / self.anneal_steps)
                    loss = nll + self.beta * ramp * kl
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    self.steps_run += 1
                    if self.max_seconds is not None and time.perf_counter() - start >= self.max_seconds:
                        out_of_time = True
                        self.stopped_by = "time"
                        break
                stopping.after_epoch()
            stopping.restore_best()
        net.eval()
        self.train_seconds = time.perf_counter() - start
        return self

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        X = _binary_support(support_user_idx, support_item_idx, n_users, self.n_items, support_rating,
                            self.threshold)
        scores = np.empty((n_users, self.n_items), np.float32)
        self.net.eval()
        with torch.inference_mode():
            for b0 in range(0, n_users, self.SCORE_BATCH):
                b1 = min(b0 + self.SCORE_BATCH, n_users)
                mean, _ = self.net.encode(*_bags(X[b0:b1]))
                scores[b0:b1] = self.net.decode(mean).numpy()
        return scores
