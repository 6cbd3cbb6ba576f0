"""A fitted recommender's metrics on held-out rows, behind `recmaml evaluate`: each user of a history is
adapted on its rows and ranks the catalog, and its held-out rows say what it went on to like.

    result = evaluate_users(rec, history, heldout, k=20)
    result.summary()         # mean metrics and who was counted where: {"ndcg@20": ..., "users": 188, ...}
    result.per_user()        # one row per adapted user, for a user's own significance tests (LensKit's habit)

Every user is accounted for: `users` were scored (at least one relevant held-out row),
`users_without_relevant` had held-out rows none of which is relevant, `users_without_heldout` had none,
and `skipped_users` had held-out rows but no history, so nothing to adapt to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from recmaml.data import Interactions, Vocabulary
from recmaml.metrics import mae, mean_metrics, ranking_metrics, rmse
from recmaml.protocol import padded_by_user


@dataclass(frozen=True, eq=False)
class UserEvaluation:
    """Per-user results over the history's users (in `users`' order)."""

    users: Vocabulary  # the history's users, each adapted
    heldout_rows: np.ndarray  # per user: its held-out rows
    relevant_rows: np.ndarray  # per user: those rows that are relevant
    ranking: dict[str, np.ndarray]  # per user: ndcg@k, recall@k, hit@k, mrr@k (NaN without a relevant row)
    skipped_users: int  # held-out users without history rows
    rating_errors: tuple[np.ndarray, np.ndarray] | None = None  # rating models: per held-out pair (user, error)

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = mean_metrics(self.ranking)
        out["users"] = int((self.relevant_rows > 0).sum())
        out["users_without_relevant"] = int(((self.heldout_rows > 0) & (self.relevant_rows == 0)).sum())
        out["users_without_heldout"] = int((self.heldout_rows == 0).sum())
        out["skipped_users"] = self.skipped_users
        if self.rating_errors is not None:
            _, error = self.rating_errors
            if len(error):
                out.update(mae=mae(error, 0.0), rmse=rmse(error, 0.0))
            out["rated_pairs"] = len(error)
        return out

    def per_user(self) -> pl.DataFrame:
        """user_id, heldout, relevant and each metric, one row per adapted user; a metric is null where
        the user has no relevant (ranking) or known rated (mae, rmse) held-out row."""
        columns = {"user_id": self.users.ids, "heldout": self.heldout_rows, "relevant": self.relevant_rows,
                   **self.ranking}
        if self.rating_errors is not None:
            columns.update(_per_user_rating_errors(*self.rating_errors, len(self.users)))
        return pl.DataFrame(columns, nan_to_null=True)


def _per_user_rating_errors(user: np.ndarray, error: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    pairs = np.bincount(user, minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mae": np.bincount(user, np.abs(error), n_users) / pairs,
                "rmse": np.sqrt(np.bincount(user, error ** 2, n_users) / pairs)}


def evaluate_users(rec, history: Interactions, heldout: Interactions, k: int = 20,
                   relevance_threshold: float | None = 4.0, allow_unknown_items: bool = False) -> UserEvaluation:
    """Each user of `history` adapted on its rows ranks the catalog (its history excluded); relevant items
    are its held-out rows rated at least `relevance_threshold` (all held-out rows for implicit logs or
    threshold None). A held-out item the model does not know counts as relevant and is never ranked.
    Rating models also get the error of each held-out rating the model can predict."""
    users = Vocabulary(history.users.ids[np.unique(history.user_idx)])
    ranked = rec.recommend(history, k=k, exclude_seen=True, allow_unknown_items=allow_unknown_items)
    top = np.full((len(users), k), -1, dtype=np.int64)
    top[users.index(ranked.user_id), ranked.rank - 1] = rec.items.index(ranked.item_id)

    held_user = users.index(heldout.user_ids())
    evaluated = held_user != -1
    relevant = evaluated.copy()
    if relevance_threshold is not None and heldout.rating is not None:
        relevant &= heldout.rating >= relevance_threshold
    held_item = rec.items.index(heldout.item_ids())
    held_item = np.where(held_item == -1, -2, held_item)  # unknown: relevant, never equal to a ranked item
    rel_items, rel_mask = padded_by_user(held_user[relevant], len(users), held_item[relevant])
    errors = None
    if rec.config.model.objective == "rating" and heldout.rating is not None and evaluated.any():
        errors = _rating_errors(rec, history, heldout, held_user, evaluated)
    return UserEvaluation(
        users=users, heldout_rows=np.bincount(held_user[evaluated], minlength=len(users)),
        relevant_rows=np.bincount(held_user[relevant], minlength=len(users)),
        ranking=ranking_metrics(top, rel_items, rel_mask, k),
        skipped_users=int(len(np.unique(heldout.user_idx[~evaluated]))), rating_errors=errors)


def _rating_errors(rec, history, heldout, held_user, evaluated) -> tuple[np.ndarray, np.ndarray]:
    """(user, predicted - held-out rating) of each evaluated held-out pair whose item the model knows."""
    from recmaml.cold import UnknownItemsWarning

    with warnings.catch_warnings():  # recommend() already warned about the same unknown items
        warnings.simplefilter("ignore", UnknownItemsWarning)
        pred = rec.predict(history, heldout.user_ids()[evaluated], heldout.item_ids()[evaluated],
                           allow_unknown_items=True)  # checked by recommend()
    known = np.isfinite(pred)
    return held_user[evaluated][known], pred[known] - heldout.rating[evaluated][known]


def evaluate_recommender(rec, history: Interactions, heldout: Interactions, k: int = 20,
                         relevance_threshold: float | None = 4.0, allow_unknown_items: bool = False) -> dict[str, float]:
    """The mean metrics and user counts of evaluate_users (UserEvaluation.summary); rating models also get
    MAE and RMSE over the held-out ratings (`rated_pairs` of them)."""
    return evaluate_users(rec, history, heldout, k, relevance_threshold, allow_unknown_items).summary()


def history_kind_shown(history: Interactions, heldout: Interactions) -> str | None:
    """'first' when every user with both kinds of rows shows history rows no later than its held-out rows
    (its first interactions, as a new user shows them), 'sample' otherwise; None when the rows have no
    timestamps or no user has both, so that the rows cannot tell."""
    if history.timestamp is None or heldout.timestamp is None:
        return None
    int64 = np.iinfo(np.int64)
    latest = np.full(history.n_users, int64.min)
    np.maximum.at(latest, history.user_idx, history.timestamp)
    held_user = history.users.index(heldout.user_ids())
    earliest = np.full(history.n_users, int64.max)
    np.minimum.at(earliest, held_user[held_user != -1], heldout.timestamp[held_user != -1])
    both = np.zeros(history.n_users, bool)
    both[held_user[held_user != -1]] = True
    both &= np.bincount(history.user_idx, minlength=history.n_users) > 0
    if not both.any():
        return None
    return "first" if (latest[both] <= earliest[both]).all() else "sample"
