"""Non-meta baselines for cold-start users: popularity, item mean (+ user offset), implicit ALS fold-in,
and EASE.

Every baseline is fitted on a warm log and then scores COLD users, who are not in that log, from their
few support rows. They share one small interface:

    model = EASE(lam=200).fit(warm)
    scores = model.score(support_user_idx, support_item_idx, n_users, support_rating)   # (n_users, n_items)

`support_*_idx` index the cold users (rows 0..n_users-1 of the result) and the warm log's items (columns),
so every score matrix lives in the warm log's item index space.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits
import scipy.sparse as sp

from recmaml.data import Interactions


def _support_csr(user_idx, item_idx, n_users: int, n_items: int, values=None) -> sp.csr_matrix:
    """The cold users' support as a (n_users x n_items) CSR; duplicate (user, item) rows are summed."""
    user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
    data = np.ones(len(user_idx), np.float32) if values is None else np.asarray(values, np.float32)
    return sp.csr_matrix((data, (user_idx, item_idx)), shape=(n_users, n_items), dtype=np.float32)


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


class ItemMean:
    """Rating baseline: the item's mean rating plus the user's mean offset on the support.

        item_mean[i] = (sum of i's ratings + damping * global_mean) / (count[i] + damping)
        offset[u]    = sum over u's support of (rating - item_mean[item]) / (n_support[u] + user_damping)

    Damping shrinks rarely rated items towards the global mean (and, with `user_damping`, a user's few
    offsets towards 0), which is what keeps a 3-rating item from topping the list. Since the offset is a
    per-user constant, ranking by these scores is the MeLU protocol's "item-mean ranking".
    """

    def __init__(self, damping: float = 5.0, user_damping: float = 0.0):
        self.damping = damping
        self.user_damping = user_damping
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
        offset = self.user_offsets(support_user_idx, support_item_idx, n_users, support_rating)
        return (self.item_mean[None, :] + offset[:, None]).astype(np.float32)


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
        # implicit warns (when constructed) and slows down when OpenBLAS runs its own thread pool inside
        # its solver threads
        with threadpool_limits(limits=1, user_api="blas"):
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
        # one batched solve for all cold users
        return self.model.recalculate_user(np.arange(n_users), csr)

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        factors = self.user_factors(support_user_idx, support_item_idx, n_users, support_rating)
        return factors @ self.model.item_factors.T


class EASE:
    """EASE (Steck 2019): a closed-form item-item model with a zero diagonal.

        P = (X^T X + lam I)^-1,   B = I - P diag(1 / diag(P))   (so diag(B) = 0),   score(u) = x_u B

    It needs no user factors, so a cold user is scored straight from the support row x_u.
    """

    def __init__(self, lam: float = 200.0, threshold: float | None = None):
        self.lam = lam
        self.threshold = threshold
        self.B: np.ndarray | None = None

    def fit(self, warm: Interactions) -> EASE:
        log = warm
        if self.threshold is not None and warm.rating is not None:
            log = warm.take(warm.rating >= self.threshold)
        X = log.to_csr("ones")
        X.data[:] = 1.0  # duplicates summed by to_csr are still one interaction
        gram = (X.T @ X).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.lam
        P = np.linalg.inv(gram)
        B = -P / np.diag(P)[None, :]
        np.fill_diagonal(B, 0.0)
        self.B = B.astype(np.float32)
        return self

    def score(self, support_user_idx, support_item_idx, n_users: int, support_rating=None) -> np.ndarray:
        if self.threshold is not None and support_rating is not None:
            keep = np.asarray(support_rating) >= self.threshold
            support_user_idx, support_item_idx = np.asarray(support_user_idx)[keep], np.asarray(support_item_idx)[keep]
        X = _support_csr(support_user_idx, support_item_idx, n_users, self.B.shape[0])
        X.data[:] = 1.0
        return np.asarray(X @ self.B)


BASELINES = {"popularity": Popularity, "item_mean": ItemMean, "als": ALSFoldIn, "ease": EASE}
