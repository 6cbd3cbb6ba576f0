"""Serving, one pipeline: cold users' histories to ranked lists (or score rows), batch by batch.

    map ids (recmaml.cold.cold_users) -> user batches (recmaml.cold.user_batches)
        -> adapt (recmaml.scoring.AdaptedUsers) -> score -> exclude seen / restrict to candidates
        -> top-k (recmaml.rank) -> ranked lists

`rank_chunk` runs it on one log; `serve_chunks` on a stream of logs, which is what
`MetaRecommender.recommend` (one chunk), `recmaml recommend` (chunks of a file of any size,
`recmaml.connectors.iter_user_chunks`) and `recmaml.spark.recommend` (one chunk per Spark group) call:

    with RankedListsWriter("recs.parquet") as out:
        serve_chunks(rec, iter_user_chunks("history.parquet"), out.write, k=20)

Each chunk must hold every row of its users (what iter_user_chunks and a Spark group by user give).
Candidates, when given, are one table of (user, item) rows: each chunk ranks its own users' candidates,
and users who have candidates but no history rows are ranked last, from the meta-learned start.
`score_rows`, `pair_scores` and `ranked_arrays` are the same steps for MetaRecommender.score, .predict
and .recommend_arrays. `rec` is always a fitted MetaRecommender.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from recmaml.cold import (ColdUsers, UserHistory, candidates_for, cold_users, history_cold_users, request_rows,
                          user_batches)
from recmaml.data import UNKNOWN, Interactions, RankedLists, Vocabulary, json_ready
from recmaml.errors import DataError, spelled, warn_caller
from recmaml.item_match import ItemTally
from recmaml.rank import exclude_items_, rank_candidates, top_k, valid_entries
from recmaml.scoring import adapted_users
from recmaml.tasks import group_positions, padded_sets
from recmaml.threads import serving_threads, torch_threads


class StageTimes:
    """Wall seconds spent in each stage of serving, summed over chunks: `with times("adapt"): ...`.
    Stages: read (waiting for the next chunk: reading, partitioning), map (ids to model indices),
    adapt (inner steps and scoring the catalog), top-k, lists (ranked lists built), write."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.threads: dict[int, int] = {}  # torch threads a chunk was scored with -> chunks

    def count_threads(self) -> None:
        threads = torch.get_num_threads()
        self.threads[threads] = self.threads.get(threads, 0) + 1

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def stage(times: StageTimes | None, name: str):
    return contextlib.nullcontext() if times is None else times(name)


def _timed_chunks(chunks: Iterable[Interactions], times: StageTimes | None):
    iterator = iter(chunks)
    while True:
        with stage(times, "read"):
            chunk = next(iterator, None)
        if chunk is None:
            return
        yield chunk


@dataclass
class ServeSummary:
    """What a serving run met that its lists alone do not show, for the run's summary line: the history's
    item ids against the model's (`items`), and the history users without a candidate row (who get no
    list: candidates restrict every list to the user's own)."""

    items: ItemTally | None = None
    users: int = 0
    no_candidates: int = 0
    no_candidate_examples: list = field(default_factory=list)


def serve_chunks(rec, chunks: Iterable[Interactions], write: Callable[[RankedLists], object], *, k: int = 20,
                 exclude_seen: bool = True, candidates: Interactions | None = None, batch_size: int | None = None,
                 progress: Callable[[int], object] | None = None,
                 on_chunk: Callable[[Interactions, np.ndarray], object] | None = None,
                 times: StageTimes | None = None, allow_unknown_items: bool = False,
                 summary: ServeSummary | None = None) -> int:
    """Rank the users of every chunk with the fitted MetaRecommender `rec` and pass each chunk's
    RankedLists to `write`; returns the number of users served.

    progress: optional callable(n_users) told after each batch of users; on_chunk: optional
    callable(chunk, its user ids) told before a chunk is served (for progress totals); times: an
    optional StageTimes that receives where the time went. Once the whole input is read, a history none
    of whose rows names a model item is a DataError, and one whose rows mostly do not is a warning
    (recmaml.item_match), unless allow_unknown_items; history users without candidate rows get no list,
    with one warning that counts them. summary: an optional ServeSummary filled with those counts."""
    check_k(k)
    summary = ServeSummary() if summary is None else summary
    summary.items = ItemTally(rec.items)
    if candidates is None and k > len(rec.items):
        warn_caller(f"{spelled('k', '--k')} {k} is more than the model's {len(rec.items):,} items: every list "
                      "holds the whole catalog (less the user's history)")
    served = []  # user ids served so far: candidate users never seen in a history are served at the end
    n_served = 0
    for chunk in _timed_chunks(chunks, times):
        chunk_users = chunk.users.ids[np.unique(chunk.user_idx)]
        served.append(chunk_users)
        summary.items.add(chunk)
        if on_chunk is not None:
            on_chunk(chunk, chunk_users)
        mine = None if candidates is None else _rows_of_users(candidates, chunk_users)
        if mine is not None:
            _count_without_candidates(summary, chunk_users, mine)
        ranked = rank_chunk(rec, chunk, k=k, exclude_seen=exclude_seen, candidates=mine, batch_size=batch_size,
                                progress=progress, times=times)
        n_served += len(chunk_users)
        with stage(times, "write"):
            write(ranked)
    summary.items.check("history", allow=allow_unknown_items)  # before the lists without history are added
    if candidates is not None:
        rest = _rows_not_of_users(candidates, np.concatenate(served) if served else np.zeros(0))
        if len(rest):  # users with candidates and no history: ranked from the meta-learned start
            no_history = replace(rest.take(np.zeros(0, np.int64)), rating=np.zeros(0, np.float32))
            if on_chunk is not None:
                on_chunk(no_history, rest.users.ids[np.unique(rest.user_idx)])
            ranked = rank_chunk(rec, no_history, k=k, exclude_seen=exclude_seen, candidates=rest,
                                    batch_size=batch_size, progress=progress, times=times)
            n_served += len(np.unique(rest.user_idx))
            with stage(times, "write"):
                write(ranked)
    summary.users = n_served
    if summary.no_candidates:
        shown = ", ".join(map(repr, summary.no_candidate_examples))
        users = "1 user of the history has" if summary.no_candidates == 1 else \
            f"{summary.no_candidates:,} users of the history have"
        warn_caller(f"{users} no candidate rows (e.g. {shown}) and got no list: the candidates restrict every "
                      "list to the user's own")
    return n_served


def _count_without_candidates(summary: ServeSummary, users: np.ndarray, candidates: Interactions) -> None:
    have = Vocabulary.fit(candidates.users.ids[np.unique(candidates.user_idx)]).index(users) != -1
    summary.no_candidates += int((~have).sum())
    summary.no_candidate_examples += users[~have][:3 - len(summary.no_candidate_examples)].tolist()

def rank_chunk(rec, history: Interactions, k: int = 20, exclude_seen: bool = True,
               candidates: Interactions | None = None, batch_size: int | None = None, progress=None,
               times: StageTimes | None = None) -> RankedLists:
    """The top k of every user of `history` (Interactions holding all rows of its users), or of each
    user's `candidates`; users present only in `candidates` start from the meta-learned start.
    progress: callable(n_users) or None."""
    with stage(times, "map"):
        cand = None if candidates is None else cold_users(rec, candidates, what="candidate")
        cold = cold_users(rec, history, extra_users=None if cand is None else cand.users.ids[np.unique(cand.user_idx)])
    parts = []
    with threads_of(rec):
        if times is not None:
            times.count_threads()
        for users, items, values in rank_batches(rec, cold, k, exclude_seen, cand, batch_size, progress,
                                                 times=times):
            with stage(times, "lists"):
                parts.append(ranked_lists(cold.users.ids[users], items, values, rec.items))
    with stage(times, "lists"):
        return RankedLists.concat(parts)


def rank_batches(rec, cold: ColdUsers, k: int, exclude_seen: bool, cand: ColdUsers | None = None,
                 batch_size: int | None = None, progress=None, allowed: torch.Tensor | None = None,
                 times: StageTimes | None = None):
    """Yield (cold user indices, top items (B, k'), their scores) batch by batch, on the CPU: the catalog
    ranked, or each user's candidates (`cand`). allowed: optional (n_items,) mask; other items are never ranked."""
    for users, support in user_batches(rec, cold, batch_size):
        with torch.no_grad():
            if cand is None:
                with stage(times, "adapt"):
                    scores = adapted_users(rec, support).scores()
                with stage(times, "top-k"):
                    if exclude_seen:
                        scores = exclude_items_(scores, support.items, support.mask)  # scores is ours
                    if allowed is not None:
                        scores = scores.masked_fill(~allowed, float("-inf"))
                    items, values = top_k(scores, k)
            else:
                c_items, c_mask = (t.to(rec.device) for t in candidates_for(cold.users.ids[users], cand))
                scores = adapted_users(rec, support).scores(c_items)
                if exclude_seen:
                    seen = (c_items[:, :, None] == support.items[:, None, :]) & (support.mask[:, None, :] > 0)
                    c_mask = c_mask * (~seen.any(dim=2)).float()
                items, values = rank_candidates(scores, c_items, c_mask, k)
        if progress is not None:
            progress(len(users))
        yield users, items.cpu(), values.cpu()


def ranked_lists(user_ids: np.ndarray, items: torch.Tensor, values: torch.Tensor, vocab: Vocabulary) -> RankedLists:
    """One batch's top items as RankedLists rows, excluded and padding entries left out."""
    valid = valid_entries(values).numpy()
    rank = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
    users = np.broadcast_to(user_ids[:, None], items.shape)
    return RankedLists(users[valid], vocab.lookup(items.numpy()[valid]), values.numpy()[valid], rank[valid])


def ranked_arrays(rec, cold: ColdUsers, n: int, exclude_seen: bool, allowed: torch.Tensor | None = None,
                  batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores), each (n_users, n): item indices best first and their scores, -1 and -inf where fewer
    than n items remain (implicit's recommend)."""
    ids = np.full((len(cold.users), n), -1, dtype=np.int64)
    scores = np.full((len(cold.users), n), -np.inf, dtype=np.float32)
    with threads_of(rec):
        for users, ranked_items, values in rank_batches(rec, cold, n, exclude_seen, batch_size=batch_size,
                                                        allowed=allowed):
            valid = valid_entries(values).numpy()
            width = ranked_items.shape[1]
            ids[users, :width] = np.where(valid, ranked_items.numpy(), -1)
            scores[users, :width] = np.where(valid, values.numpy(), -np.inf)
    return ids, scores


def score_rows(rec, cold: ColdUsers, batch_size: int | None = None) -> np.ndarray:
    """Every cold user's scores of the whole catalog (n_users, n_items), nothing excluded."""
    out = np.empty((len(cold.users), len(rec.items)), dtype=np.float32)
    with threads_of(rec):
        for rows, support in user_batches(rec, cold, batch_size):
            with torch.no_grad():
                out[rows] = adapted_users(rec, support).scores().cpu().numpy()
    return out


def pair_scores(rec, cold: ColdUsers, pair_user: np.ndarray, pair_item: np.ndarray,
                batch_size: int | None = None) -> np.ndarray:
    """The scores of (cold user index, model item index) pairs; NaN where the item is unknown (UNKNOWN)."""
    out = np.full(len(pair_user), np.nan, dtype=np.float32)
    valid = pair_item != UNKNOWN
    order, pos = group_positions(pair_user[valid])
    pair_rows = np.flatnonzero(valid)[order]
    sorted_users = pair_user[pair_rows]
    with threads_of(rec):
        for users, support in user_batches(rec, cold, batch_size):
            lo, hi = np.searchsorted(sorted_users, [users[0], users[-1] + 1])
            if lo == hi:
                continue
            rows = pair_rows[lo:hi]
            items, _, _ = padded_sets(pair_user[rows] - users[0], pos[lo:hi], pair_item[rows],
                                      np.zeros(hi - lo, np.float32), len(users))
            with torch.no_grad():
                scores = adapted_users(rec, support).scores(items.to(rec.device)).cpu()
            out[rows] = scores[torch.as_tensor(pair_user[rows] - users[0]), torch.as_tensor(pos[lo:hi])].numpy()
    return out


@dataclass
class UserRanking:
    """One request user's ranked list: model item ids best first, their scores, and how many of the
    user's history items the model did not know (ignored)."""

    items: np.ndarray
    scores: np.ndarray
    unknown_items: int = 0

    def to_dict(self) -> dict:
        """JSON-ready: {"items" (best first), "scores", "ranks" (from 1), "unknown_items"}, numpy values as
        Python ints, floats and strings (json.dumps takes it; recmaml serve answers the same fields)."""
        return {"items": json_ready(self.items), "scores": json_ready(self.scores),
                "ranks": list(range(1, len(self.items) + 1)), "unknown_items": int(self.unknown_items)}


def rank_histories(rec, histories: list[UserHistory], k: int = 20, exclude_seen: bool = True,
                   positions: bool = False) -> list[UserRanking]:
    """The top k of each request history (recmaml.cold.UserHistory), in order: the same steps and the same
    lists as the batch path, without frames. Users with candidates rank theirs alone. positions: the
    answers' items as positions in rec.items rather than ids."""
    check_k(k)
    out: list[UserRanking | None] = [None] * len(histories)
    with_candidates = [i for i, h in enumerate(histories) if h.candidates is not None]
    groups = [[i for i, h in enumerate(histories) if h.candidates is None], with_candidates]
    with threads_of(rec):
        for group in groups:
            if not group:
                continue
            cold, cand, unknown = history_cold_users(rec, [histories[i] for i in group])
            for users, items, values in rank_batches(rec, cold, k, exclude_seen, cand):
                valid = valid_entries(values).numpy()
                for row, user in enumerate(users):
                    keep = valid[row]
                    top = items[row].numpy()[keep]
                    out[group[user]] = UserRanking(top if positions else rec.items.ids[top], values[row].numpy()[keep],
                                                   int(unknown[user]))
    return out


def score_histories(rec, histories: list[UserHistory]) -> list[np.ndarray]:
    """Each request history's scores of its `candidates` (in their order; NaN for an unknown item): the
    scores MetaRecommender.predict gives those pairs, without frames."""
    cold, _, _ = history_cold_users(rec, [replace(h, candidates=None) for h in histories])  # mapped below, once
    pair_user, pair_item = request_rows(rec, [h.candidates for h in histories])
    lengths = np.bincount(pair_user, minlength=len(histories))
    scores = pair_scores(rec, cold, pair_user, pair_item)
    if rec.config.model.objective == "rating" and rec.rating_range is not None:
        np.clip(scores, *rec.rating_range, out=scores)  # as predict clips
    return np.split(scores, np.cumsum(lengths)[:-1]) if histories else []


def threads_of(rec):
    """torch's threads for one serving call (serve.threads; 'auto': the cores free when it starts)."""
    return torch_threads(serving_threads(rec.config.serve.threads))


def check_k(k, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"{spelled(name, '--k') if name == 'k' else name} must be a whole number >= 1, got {k!r}")


def _rows_of_users(log: Interactions, user_ids: np.ndarray) -> Interactions:
    return log.take(np.flatnonzero(Vocabulary.fit(user_ids).index(log.user_ids()) != -1))


def _rows_not_of_users(log: Interactions, user_ids: np.ndarray) -> Interactions:
    if len(user_ids) == 0:
        return log
    return log.take(np.flatnonzero(Vocabulary.fit(user_ids).index(log.user_ids()) == -1))


__all__ = ["ServeSummary", "StageTimes", "UserRanking", "pair_scores", "rank_chunk", "rank_histories", "ranked_arrays",
           "score_histories", "score_rows", "serve_chunks"]
