"""Serving's first two steps: cold users' histories mapped into the model's item space (ColdUsers), then
cut into batches of padded supports, the input of adaptation (recmaml.scoring).

`rec` below is a fitted MetaRecommender: its items, the scorer's user inputs, the serving settings and
the time users arrive at are read from it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recmaml.data import UNKNOWN, Interactions, Vocabulary
from recmaml.errors import DataError, spelled, warn_caller
from recmaml.model import feature_tensors
from recmaml.tasks import PaddedSet, group_positions, padded_sets
from recmaml.times import SECONDS_PER_YEAR, date_of, in_seconds


class UnknownItemsWarning(UserWarning):
    """A cold user's history named items the model does not know; those rows were dropped.
    `rows` counts the dropped rows, `item_ids` holds the distinct unknown ids and `what` names the input
    ("history", "candidate"), for summaries."""

    def __init__(self, message: str, rows: int = 0, item_ids=(), what: str = "history"):
        super().__init__(message)
        self.rows, self.item_ids, self.what = rows, np.asarray(item_ids), what


class ArrivalWarning(UserWarning):
    """`at` (when users arrive) reaches fewer users than asked, or a time the warm log does not cover.
    `ignored` counts the users whose history has timestamps (served at their latest one, not at `at`)."""

    def __init__(self, message: str, ignored: int = 0):
        super().__init__(message)
        self.ignored = ignored


@dataclass
class ColdUsers:
    """Cold users' histories in the model's item space: one chunk-able view of a history log."""

    users: Vocabulary  # the cold users' external ids
    user_idx: np.ndarray  # rows: which cold user
    item_idx: np.ndarray  # rows: model item index
    rating: np.ndarray
    user_feats: dict[str, torch.Tensor]  # one row per cold user


def cold_users(rec, history: Interactions, extra_users=None, what: str = "history") -> ColdUsers:
    """Map a log into the model's item space (unknown items dropped with one warning naming `what`).
    The users are those with rows in `history` (a vocabulary may hold more) and `extra_users`."""
    if what == "history" and rec.config.model.objective == "rating" and history.rating is None:
        raise DataError("the history has no ratings, but this model predicts ratings (objective 'rating') and "
                        f"adapts on them; give the history a rating column ({spelled('rating_col=', '--rating-col')})")
    item_idx = map_ids(rec.items, history.items, history.item_idx)
    known = item_idx != UNKNOWN
    if not known.all():
        unknown_ids = np.unique(history.items.ids[history.item_idx[~known]])
        warn_caller(UnknownItemsWarning(
            f"{int((~known).sum())} {what} rows name {len(unknown_ids)} items unknown to the model; "
            "those rows were dropped", rows=int((~known).sum()), item_ids=unknown_ids, what=what))
    # a user whose items are all unknown is still served: it starts from the meta-learned initialization
    present = history.users.ids[np.unique(history.user_idx)]
    if extra_users is not None:
        present = np.union1d(present, Vocabulary.fit(extra_users).ids)
    users = Vocabulary(present)
    user_idx = map_ids(users, history.users, history.user_idx[known])
    feats = None
    if history.user_features is not None and rec.user_layout is not None:
        feats = history.user_features.conformed(rec.user_layout).aligned_to(users)
    user_feats = feature_tensors(feats, rec.model.user_spec, len(users))
    arrival = arrival_times(rec, users)
    if arrival is not None:
        times = _user_times(history, known, users, user_idx)
        _warn_at_ignored(rec, users, np.isfinite(times))
        user_feats["time"] = torch.from_numpy(np.where(np.isfinite(times), times, arrival))
    # without a rating column: 1 for a rating model's loss (it needs ratings and says so above), NaN (no
    # rating, so no dislike) for the priors' EASE term of an implicit model, which uses ratings for nothing else
    no_rating = 1.0 if rec.config.model.objective == "rating" else np.nan
    return ColdUsers(
        users=users,
        user_idx=user_idx.astype(np.int64),
        item_idx=item_idx[known].astype(np.int64),
        rating=(history.rating[known] if history.rating is not None else np.full(known.sum(), no_rating, np.float32)),
        user_feats=user_feats,
    )


def matrix_cold_users(rec, csr) -> ColdUsers:
    """The rows of a CSR matrix (cold users x the model's items) as cold users 0..n-1; its values are
    ratings for the rating objective, and ignored otherwise (every row a like)."""
    n_users = csr.shape[0]
    users = Vocabulary(np.arange(n_users))
    user_feats = feature_tensors(None, rec.model.user_spec, n_users)
    arrival = arrival_times(rec, users)
    if arrival is not None:
        user_feats["time"] = torch.from_numpy(arrival)
    implicit = rec.config.model.objective == "implicit"
    return ColdUsers(
        users=users,
        user_idx=np.repeat(np.arange(n_users), np.diff(csr.indptr)).astype(np.int64),
        item_idx=csr.indices.astype(np.int64),
        rating=np.full(csr.nnz, np.nan, np.float32) if implicit else csr.data.astype(np.float32),
        user_feats=user_feats,
    )


@dataclass
class UserHistory:
    """One cold user's history as a request gives it, without a frame: item ids in the order shown,
    optional ratings and Unix-second times (one per item), optional candidate item ids (only those are
    ranked or scored)."""

    items: Sequence
    ratings: Sequence | None = None
    timestamps: Sequence | None = None
    candidates: Sequence | None = None


def history_cold_users(rec, histories: Sequence[UserHistory]) -> tuple[ColdUsers, ColdUsers | None, np.ndarray]:
    """Users 0..n-1 from request histories, mapped as cold_users maps a log (unknown items dropped, a user's
    time its latest known item's, else its arrival), their candidates (None when no history has any), and
    each user's count of unknown history items."""
    n = len(histories)
    for user, h in enumerate(histories):
        if h.timestamps is not None and len(h.timestamps) != len(h.items):
            raise DataError(f"users[{user}].timestamps: {len(h.timestamps)} times for {len(h.items)} items; give one "
                            "per item (Unix seconds)")
    users = Vocabulary(np.arange(n))
    user_of_row, item_idx = request_rows(rec, [h.items for h in histories])
    stamps = np.concatenate([np.full(len(h.items), np.nan) if h.timestamps is None else
                             np.asarray(h.timestamps, np.float64) for h in histories] or [np.zeros(0)])
    stamps = in_seconds(stamps, "timestamps")
    known = item_idx != UNKNOWN
    unknown = np.bincount(user_of_row[~known], minlength=n)
    known &= _latest_of_each_pair(user_of_row, item_idx, stamps)  # an item named twice: its latest row, as a log
    user_idx = user_of_row[known]
    rating = _request_ratings(rec, histories, len(item_idx))[known]
    user_feats = feature_tensors(None, rec.model.user_spec, n)
    arrival = arrival_times(rec, users)
    if arrival is not None:
        times = np.full(n, -np.inf)
        np.fmax.at(times, user_idx, stamps[known])  # NaN (no timestamp) leaves -inf: the arrival time
        _warn_at_ignored(rec, users, np.isfinite(times))
        user_feats["time"] = torch.from_numpy(np.where(np.isfinite(times), times, arrival))
    cold = ColdUsers(users, user_idx.astype(np.int64), item_idx[known].astype(np.int64), rating, user_feats)
    cand = None
    if any(h.candidates is not None for h in histories):
        cand_user, cand_item = request_rows(rec, [h.candidates for h in histories])
        keep = cand_item != UNKNOWN
        cand = ColdUsers(users, cand_user[keep], cand_item[keep].astype(np.int64), np.zeros(int(keep.sum()), np.float32),
                         {})
    return cold, cand, unknown


def _latest_of_each_pair(user_of_row: np.ndarray, item_idx: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """A mask keeping, of each (user, item) pair named more than once, its latest row (by time, then by
    position), as reading a log keeps it (recmaml.frames)."""
    keep = np.ones(len(item_idx), bool)
    if len(item_idx) < 2:
        return keep
    key = user_of_row * (int(item_idx.max()) + 2) + item_idx + 1
    rows = np.lexsort((np.arange(len(key)), np.nan_to_num(stamps, nan=-np.inf), key))
    keep[rows[:-1][key[rows[:-1]] == key[rows[1:]]]] = False  # a later row of the same pair follows
    return keep


def request_rows(rec, lists: Sequence[Sequence | None]) -> tuple[np.ndarray, np.ndarray]:
    """(user of each row, model item index of each row, UNKNOWN when unknown) for per-user lists of item ids
    (None: no rows)."""
    lists = [() if ids is None else ids for ids in lists]
    lengths = np.fromiter((len(ids) for ids in lists), np.int64, len(lists))
    user_of_row = np.repeat(np.arange(len(lists)), lengths)
    if not lengths.sum():
        return user_of_row, np.zeros(0, np.int64)
    try:
        ids = np.concatenate([np.asarray(ids) for ids in lists if len(ids)])
        return user_of_row, rec.items.index(ids).astype(np.int64)
    except OverflowError as err:
        raise DataError("items: an integer item id does not fit in 64 bits; give ids as the model's log has them "
                        "(64-bit integers or strings)") from err


def _request_ratings(rec, histories: Sequence[UserHistory], n_rows: int) -> np.ndarray:
    """Every history row's rating: given ones, else NaN (a like) for an implicit model; a rating model
    adapts on ratings, so a history without them is a DataError."""
    rating_model = rec.config.model.objective == "rating"
    if not any(h.ratings is not None for h in histories):
        if rating_model and n_rows:
            raise DataError("ratings: this model predicts ratings (objective 'rating') and adapts on them; give "
                            "each history item its rating")
        return np.full(n_rows, np.nan, np.float32)
    parts = []
    for user, h in enumerate(histories):
        if h.ratings is None and rating_model and len(h.items):
            raise DataError(f"users[{user}].ratings: missing; this model adapts on ratings, give one per item")
        if h.ratings is not None and len(h.ratings) != len(h.items):
            raise DataError(f"users[{user}].ratings: {len(h.ratings)} ratings for {len(h.items)} items; give one "
                            "per item")
        parts.append(np.full(len(h.items), np.nan, np.float32) if h.ratings is None else np.asarray(h.ratings, np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def user_batches(rec, cold: ColdUsers, batch_size: int | None):
    """Yield (user indices, their supports as a PaddedSet on rec's device) for batches of cold users
    (serve.batch_size unless `batch_size`); rows sorted by user once."""
    order, pos = group_positions(cold.user_idx)
    sorted_users = cold.user_idx[order]
    bounds = np.searchsorted(sorted_users, np.arange(0, len(cold.users) + 1))
    size = rec.config.serve.batch_size if batch_size is None else batch_size
    if size < 1:
        raise DataError(f"{spelled('batch_size', '--batch-size')} must be at least 1, got {size}")
    for start in range(0, len(cold.users), size):
        stop = min(start + size, len(cold.users))
        rows = order[bounds[start]:bounds[stop]]
        items, ratings, mask = padded_sets(cold.user_idx[rows] - start, pos[bounds[start]:bounds[stop]],
                                           cold.item_idx[rows], cold.rating[rows], stop - start)
        # the support is also an input of the user tower's set encoder (model.support_encoder)
        user_feats = {**{k: v[start:stop] for k, v in cold.user_feats.items()},
                      "support_items": items, "support_mask": mask,
                      "history_kind": torch.full((stop - start,), rec.history_kind_index)}
        yield np.arange(start, stop), PaddedSet(user_feats, items, ratings, mask).to(rec.device)


def candidates_for(user_ids: np.ndarray, cand: ColdUsers) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded candidate items (B, C) and mask for the given users (by external id)."""
    batch_row = Vocabulary(np.sort(user_ids)).index(cand.users.lookup(cand.user_idx))
    keep = batch_row != UNKNOWN
    # map sorted position back to the order of user_ids
    position_of_sorted = np.argsort(user_ids, kind="stable")
    rows = position_of_sorted[batch_row[keep]]
    # a candidate named twice for a user is ranked once
    pairs = np.unique(np.stack([rows, cand.item_idx[keep]], axis=1), axis=0)
    rows, cand_items = pairs[:, 0], pairs[:, 1]
    order, pos = group_positions(rows)
    items, _, mask = padded_sets(rows[order], pos, cand_items[order], np.zeros(len(order), np.float32), len(user_ids))
    return items, mask


def map_ids(target: Vocabulary, source: Vocabulary, idx: np.ndarray) -> np.ndarray:
    """`target`'s indices of the ids `source.ids[idx]`, looked up once per distinct id when `source` is the
    smaller (the usual history: many rows per id; string lookups are the costly part), else once per row."""
    if len(source) < len(idx):
        return target.index(source.ids)[idx]
    return target.index(source.lookup(idx))


# ---- the time a user is served at (the time-aware popularity prior and model.time_prior read it) ------------

def arrival_times(rec, users: Vocabulary) -> np.ndarray | None:
    """Per user, the time it is served at when its history has no timestamp (rec.arrival, else the end of
    the warm log), or None when nothing the model serves with reads a time."""
    if rec.model.time_scale is not None:
        return _arrival_times(rec.arrival, users, rec.model.latest_time())
    if rec.priors is not None and rec.priors.has_time:
        return _arrival_times(rec.arrival, users, rec.priors.latest_time())
    return None


def _user_times(history: Interactions, known: np.ndarray, users: Vocabulary, user_idx: np.ndarray) -> np.ndarray:
    """Each cold user's time for the time prior: its latest interaction of a known item, or -inf for a user
    without one or a history without timestamps (who is served at its arrival time)."""
    times = np.full(len(users), -np.inf)
    if history.timestamp is not None:  # an Interactions built by hand may hold milliseconds: seconds here
        stamps = in_seconds(history.timestamp[known].astype(np.float64), "the history's timestamps")
        np.maximum.at(times, user_idx, stamps)
    return times


def _warn_at_ignored(rec, users: Vocabulary, timed: np.ndarray) -> None:
    """Say when `at` was given for users whose history has timestamps (`timed`): they are served at their
    latest one, and `at` is ignored for them; one ArrivalWarning with their count."""
    if rec.arrival is None or not timed.any():
        return
    if isinstance(rec.arrival, tuple):  # a mapping: only the users it names asked for a time
        asked = np.zeros(len(users), bool)
        index = users.index(rec.arrival[0]) if len(rec.arrival[0]) else np.zeros(0, np.int64)
        asked[index[index != UNKNOWN]] = True
        timed = timed & asked
    ignored = int(timed.sum())
    if ignored:
        warn_caller(ArrivalWarning(at_ignored_message(ignored), ignored=ignored))


def at_ignored_message(ignored: int) -> str:
    """What an ArrivalWarning says of `ignored` users whose history's timestamps `at` gave way to."""
    flag = spelled("at=", "--at")
    no_times = spelled("timestamp_col=None", "--timestamp-col ''")
    return (f"{flag} is ignored for {ignored:,} user{'s' if ignored != 1 else ''} whose history has timestamps: each "
            f"is served at its latest one ({flag} sets the time of users without any; read the history without its "
            f"timestamps, {no_times}, to serve every user at {flag})")


def warm_time_range(rec) -> tuple[float, float] | None:
    """(first, last) time of the warm log as the model's time-aware parts read it (the time prior's edges),
    or None when nothing the model serves with reads a time."""
    if rec.model.time_scale is not None:
        edges = rec.model.time_edges
    elif rec.priors is not None and rec.priors.has_time:
        edges = rec.priors.time_edges
    else:
        return None
    return float(edges[0]), float(edges[-1])


def check_arrival(rec, arrival) -> None:
    """Warn (ArrivalWarning) when an `at` (as arrivals gives it) cannot do what it is for: the model reads
    no time, or the time lies before the warm log (the time prior has nothing before it) or far after it,
    more than a year or the log's own span (the prior serves the log's last window)."""
    if arrival is None:
        return
    flag = spelled("at=", "--at")
    span = warm_time_range(rec)
    if span is None:
        warn_caller(ArrivalWarning(f"{flag} has no effect: this model reads no time (its warm log had no "
                                     "timestamps, or it has no time-aware popularity); leave it out"))
        return
    first, last = span
    times = np.atleast_1d(arrival[1] if isinstance(arrival, tuple) else arrival).astype(np.float64)
    beyond = max(SECONDS_PER_YEAR, last - first)
    how_far = "a year" if beyond == SECONDS_PER_YEAR else "the log's own span"
    early, late = times < first, times > last + beyond
    for far, where in ((early, f"before the warm log's first time ({date_of(first)}): the time-aware popularity "
                               "has nothing before it and ranks no item up for them"),
                       (late, f"more than {how_far} after the warm log's last time ({date_of(last)}): the "
                              "time-aware popularity serves them the log's last window, what was popular up to "
                              f"{date_of(last)}")):
        if far.any():
            example = times[far][0]
            who = "" if len(times) == 1 else f" for {int(far.sum())} of {len(times)} users"
            warn_caller(ArrivalWarning(f"{flag} {date_of(example)}{who} lies {where}; check the year and the unit "
                                         f"(Unix seconds), or leave {flag} out to serve at the log's end"))


def _arrival_times(arrival, users: Vocabulary, latest: float) -> np.ndarray:
    """Per user, the time `arrival` (see arrivals) gives it, else `latest`."""
    if arrival is None:
        return np.full(len(users), latest, np.float64)
    if not isinstance(arrival, tuple):
        return np.full(len(users), arrival, np.float64)
    ids, times = arrival
    out = np.full(len(users), latest, np.float64)
    index = users.index(ids) if len(ids) else np.zeros(0, np.int64)
    out[index[index != UNKNOWN]] = times[index != UNKNOWN]
    return out


def arrivals(at):
    """`at` (see MetaRecommender.arriving_at) in the form serving reads chunk after chunk: None, Unix seconds,
    or for a mapping, (user ids, their seconds) as arrays. Numbers in a finer unit (milliseconds, ...) are
    converted to seconds with a warning (recmaml.times)."""
    if at is None:
        return None
    flag = spelled("at=", "--at")
    if not (hasattr(at, "items") and callable(at.items)):
        return float(in_seconds(np.array([_seconds(at)]), flag)[0])
    pairs = dict(at.items())  # a dict or a pandas Series: user id -> time
    values = list(pairs.values())
    seconds = all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in values)
    times = np.asarray(values if seconds else [_seconds(t) for t in values], np.float64)  # seconds: one conversion
    return np.asarray(list(pairs)), in_seconds(times, flag)


def _seconds(t) -> float:
    """A time as Unix seconds (_as_seconds), finite: NaN or infinity, 'nan' as text too, is no time to arrive at."""
    seconds = _as_seconds(t)
    if not np.isfinite(seconds):
        raise DataError(f"{spelled('at=', '--at')} {t!r} is not a time; give finite Unix seconds or an ISO date")
    return seconds


def _as_seconds(t) -> float:
    """A time as Unix seconds: a number is taken as seconds; a datetime, date or ISO text is converted (UTC
    unless it says otherwise)."""
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        return float(t)
    if isinstance(t, str):
        try:
            return float(t)  # seconds, as the CLI's --at 1700000000 gives them
        except ValueError:
            pass
        try:
            t = dt.datetime.fromisoformat(t)
        except ValueError as err:
            raise DataError(f"{spelled('at=', '--at')} {t!r} is not a time; give Unix seconds or an ISO date "
                            "such as 2024-03-01 or 2024-03-01T12:00") from err
    if isinstance(t, dt.date) and not isinstance(t, dt.datetime):
        t = dt.datetime(t.year, t.month, t.day)
    if hasattr(t, "to_pydatetime"):  # pandas Timestamp
        t = t.to_pydatetime()
    if isinstance(t, dt.datetime):
        return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
    raise DataError(f"{spelled('at=', '--at')} {t!r} is not a time; give Unix seconds, a datetime or an ISO date")
