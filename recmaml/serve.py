"""Batch serving: a stream of cold users' history chunks to ranked lists.

The one path behind `MetaRecommender.recommend` (one chunk), `recmaml recommend` (chunks of a file of any
size, `recmaml.connectors.iter_user_chunks`) and `recmaml.spark.recommend` (one chunk per Spark group):

    with RankedListsWriter("recs.parquet") as out:
        serve_chunks(rec, iter_user_chunks("history.parquet"), out.write, k=20)

Each chunk must hold every row of its users (what iter_user_chunks and a Spark group by user give).
Candidates, when given, are one table of (user, item) rows: each chunk ranks its own users' candidates,
and users who have candidates but no history rows are ranked last, from the meta-learned start.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from recmaml.data import Interactions, RankedLists, Vocabulary
from recmaml.errors import DataError, spelled
from recmaml.item_match import ItemTally


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
        warnings.warn(f"{spelled('k', '--k')} {k} is more than the model's {len(rec.items):,} items: every list "
                      "holds the whole catalog (less the user's history)", stacklevel=2)
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
        ranked = rec.rank_chunk(chunk, k=k, exclude_seen=exclude_seen, candidates=mine, batch_size=batch_size,
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
            ranked = rec.rank_chunk(no_history, k=k, exclude_seen=exclude_seen, candidates=rest,
                                    batch_size=batch_size, progress=progress, times=times)
            n_served += len(np.unique(rest.user_idx))
            with stage(times, "write"):
                write(ranked)
    summary.users = n_served
    if summary.no_candidates:
        shown = ", ".join(map(repr, summary.no_candidate_examples))
        users = "1 user of the history has" if summary.no_candidates == 1 else \
            f"{summary.no_candidates:,} users of the history have"
        warnings.warn(f"{users} no candidate rows (e.g. {shown}) and got no list: the candidates restrict every "
                      "list to the user's own", stacklevel=2)
    return n_served


def _count_without_candidates(summary: ServeSummary, users: np.ndarray, candidates: Interactions) -> None:
    have = Vocabulary.fit(candidates.users.ids[np.unique(candidates.user_idx)]).index(users) != -1
    summary.no_candidates += int((~have).sum())
    summary.no_candidate_examples += users[~have][:3 - len(summary.no_candidate_examples)].tolist()


def _own_running_threads() -> int:
    """This process's threads that are running now (torch's and polars' pools spin for a while after
    their work, and would otherwise count as someone else's load)."""
    running = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", encoding="ascii") as f:
                running += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue  # a thread that ended while we looked
    return max(running, 1)


def _busy_cores() -> int:
    """Threads of OTHER processes running right now (Linux: /proc/loadavg's running count, which counts
    every thread, less this process's own), else the one-minute load average."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - _own_running_threads())
    except (OSError, ValueError, IndexError):
        return int(round(os.getloadavg()[0])) if hasattr(os, "getloadavg") else 0


def serving_threads(setting: int | str = "auto") -> int:
    """The torch threads a serving call (serve.threads) or a fit (meta.threads) uses: `setting`, or for
    'auto' the cores that no other process is running on now (at least 1, at most torch's default)."""
    if setting != "auto":
        return int(setting)
    now = time.monotonic()
    if now - _auto_threads[0] > AUTO_THREADS_SECONDS:
        # reading /proc costs about 0.5 ms, 5% of a 189-user call: calls that come in a stream share a look
        _auto_threads[:] = [now, max(1, min(_default_threads(), (os.cpu_count() or 1) - _busy_cores()))]
    return _auto_threads[1]


AUTO_THREADS_SECONDS = 1.0  # how long serving_threads('auto') keeps its count of free cores
_auto_threads = [-float("inf"), 1]  # [when measured (time.monotonic), the count]


@functools.cache
def _default_threads() -> int:
    return torch.get_num_threads()  # torch's own choice, read once before any call changes it


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` for the duration of a block, then restored."""
    _default_threads()
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def check_k(k, name: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"{spelled(name, '--k') if name == 'k' else name} must be a whole number >= 1, got {k!r}")


def _rows_of_users(log: Interactions, user_ids: np.ndarray) -> Interactions:
    return log.take(np.flatnonzero(Vocabulary.fit(user_ids).index(log.user_ids()) != -1))


def _rows_not_of_users(log: Interactions, user_ids: np.ndarray) -> Interactions:
    if len(user_ids) == 0:
        return log
    return log.take(np.flatnonzero(Vocabulary.fit(user_ids).index(log.user_ids()) == -1))


__all__ = ["ServeSummary", "StageTimes", "serve_chunks", "serving_threads", "torch_threads"]
