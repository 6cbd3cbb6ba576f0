"""MetaRecommender: the public face of recmaml. fit builds and meta-trains a model (recmaml.build), the
serving methods run recmaml.serve's pipeline, and save/load keep it in a model directory."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import warnings

import numpy as np
import polars as pl
import torch

from recmaml import build, checkpoint, explain as reasons, serve
from recmaml.calibrate import calibrate
from recmaml.cold import (UnknownItemsWarning, UserHistory, arrivals, check_arrival, cold_users,
                          matrix_cold_users)
from recmaml.config import HISTORY_KINDS, Config
from recmaml.data import UNKNOWN, Interactions, RankedLists, Vocabulary
from recmaml.errors import DataError, RecMamlError, spelled, warn_caller
from recmaml.frames import (Columns, as_interactions, frame_of, is_frame, kept_names, missing_columns,
                            missing_columns_error, renamed, same_kind)
from recmaml.item_match import ItemTally
from recmaml.meta import TrainHistory
from recmaml.model import Scorer
from recmaml.priors import ServingPriors
from recmaml.progress import optional_bar, watched
from recmaml.tasks import KIND_FIRST, KIND_SAMPLE

log = logging.getLogger(__name__)


class RelevanceScoresWarning(UserWarning):
    """predict on a ranking model: its predictions are relevance scores that order items, not ratings (the
    CLI's `recmaml predict` says the same in a note). Filter it where scores are what the job wants:
    warnings.filterwarnings("ignore", category=RelevanceScoresWarning)."""


class MetaRecommender:
    """Meta-learned cold-start recommender.

        rec = MetaRecommender(load_config("ml-100k")).fit(warm)
        ranked = rec.recommend(cold_history, k=20)
    """

    def __init__(self, config: Config | None = None):
        self.config = config or Config()
        self.model: Scorer | None = None
        self.items: Vocabulary | None = None
        self.user_layout: dict | None = None  # how cold users' side features are read (SideFeatures.layout)
        self.history: TrainHistory | None = None
        self.sample_model: Scorer | None = None  # serves 'sample' histories when set (model.sample_weights)
        self.priors: ServingPriors | None = None  # the serving priors (serve.priors), fitted by fit
        self.arrival = None  # the `at` of users without a timestamped history (see arriving_at)
        self.sample_history: TrainHistory | None = None
        self.rating_range: tuple[float, float] | None = None  # the warm log's ratings: predict clips to it
        self.columns: dict | None = None  # the warm log's column names, when known: the later defaults (column_names)
        self.weights_sha256: str | None = None  # of the saved weights it was loaded from (recmaml serve's /model)
        self.fitted_at: str | None = None  # when fit ended, ISO 8601 in UTC (None: a model saved before it was recorded)
        self.training_users: int | None = None  # the warm users meta-trained on, validation users not counted

    def __repr__(self) -> str:
        """What the model is: 'MetaRecommender(1,682 items, objective 'ranking', history kind 'first',
        fitted 2025-01-02T10:00:00+00:00 on 843 users)'."""
        objective = f"objective {self.config.model.objective!r}"
        if self.model is None:
            return f"MetaRecommender(not fitted, {objective})"
        when = f"fitted {self.fitted_at}" if self.fitted_at else "fitted (when not recorded)"
        users = "" if self.training_users is None else f" on {self.training_users:,} users"
        return (f"MetaRecommender({len(self.items):,} items, {objective}, history kind "
                f"{self.config.serve.history_kind!r}, {when}{users})")

    # ---- training -------------------------------------------------------------------------------
    def fit(self, warm, progress=None, item_factors=None, checkpoint_dir=None, resume: bool = False,
            **columns) -> MetaRecommender:
        """Meta-train on the warm users of `warm` (each user is a task): an Interactions, or a pandas/polars
        frame with columns user_id, item_id and optionally rating, timestamp.

        progress: True shows a bar on stderr (epochs, meta-loss, validation figure) and, at the end, why
        training stopped; False shows nothing; or a callable(epoch, record) for your own display. None (the
        default): a bar when stderr is a terminal or in a notebook, nothing in a script's log or a pipe.

        item_factors: optional (item_ids, factors) to start the item embeddings from, e.g. an implicit ALS
        model's `item_factors` with the item ids of its columns; items it lacks keep their random start.

        checkpoint_dir: a folder (the CLI's `fit --out`) where a checkpoint is written atomically after every
        epoch; with `resume`, training continues from the checkpoint found there (same config and data, else
        CheckpointError) to the weights an uninterrupted fit ends with. recmaml.resume.discard(folder)
        removes it once the model is saved (the CLI does).

        user_col=, item_col=, rating_col=, timestamp_col=: a frame's column names, as read_interactions
        takes them; the model remembers them (`columns`) as the defaults of recommend, predict and score,
        and of the CLI's later commands."""
        if columns or is_frame(warm):
            self.columns = _column_names(Columns.named(**columns))
        prepared = build.prepare(self.config, as_interactions(warm, "warm log", Columns.named(**columns)),
                                 rating_col=(self.columns or {}).get("rating"))
        self.config, self.items, self.user_layout = prepared.config, prepared.log.items, prepared.user_layout
        self.rating_range = prepared.rating_range
        item_factors = build.item_factors_for(prepared, item_factors)
        progress = watched(progress)
        self.model, self.history = build.trained_scorer(prepared, item_factors, progress, checkpoint_dir, resume)
        self.sample_model = self.sample_history = None
        if self.config.model.sample_weights and prepared.log.timestamp is not None:
            # random supports alone train the weights that serve 'sample' histories (a model trained on
            # both kinds serves them about 3% below one trained for them; benchmarks/EXPERIMENTS.md)
            self.sample_model, self.sample_history = build.trained_scorer(
                prepared, item_factors, progress, checkpoint_dir, resume, sample=True)
        # how far serving steps per support size, and the serving priors' tables and weights
        chosen = calibrate(self, prepared.log, prepared.user_feats, prepared.val_users)
        self.config = self.config.replace(serve=chosen)
        self.fitted_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.training_users = len(prepared.train_users)
        return self

    # ---- what serves ---------------------------------------------------------------------------------
    @property
    def serving_scorer(self) -> Scorer:
        """The weights that serve the kind of history being served: the sample weights for 'sample'
        histories when the model has them (model.sample_weights), else the main ones."""
        model = self._require_model()
        if self.config.serve.history_kind == "sample" and self.sample_model is not None:
            return self.sample_model
        return model

    def _require_model(self) -> Scorer:
        if self.model is None:
            raise RecMamlError("this MetaRecommender is not fitted; call fit(...) or MetaRecommender.load(path)")
        return self.model

    def column_names(self, **columns) -> Columns:
        """The frames' columns for recommend, predict and score: the keywords given (user_col=, item_col=,
        rating_col=, timestamp_col=), else the names the model was fitted with (`self.columns`, as the
        CLI's flags default to them), else user_id, item_id, rating, timestamp. A remembered rating or
        timestamp column is read where a frame has it, not required: cold users may show neither."""
        remembered = self.columns or {}
        keywords = {f"{role}_col": name for role, name in remembered.items()
                    if role in _ROLES and f"{role}_col" not in columns}
        names = Columns.named(**keywords, **columns)
        return dataclasses.replace(names, require_rating=names.require_rating and "rating_col" in columns,
                                   require_timestamp=names.require_timestamp and "timestamp_col" in columns)

    def _checked_history(self, history, allow_unknown_items: bool, columns: dict) -> Interactions:
        """A history given to predict or score, read with the column keywords, its item ids checked
        against the model's (recmaml.item_match)."""
        history = as_interactions(history, "history", self.column_names(**columns))
        tally = ItemTally(self.items)
        tally.add(history)
        tally.check("history", allow=allow_unknown_items)
        return history

    @property
    def device(self) -> torch.device:
        return next(self._require_model().parameters()).device

    @property
    def history_kind_index(self) -> int:
        """The history kind served (serve.history_kind) as the scorer's code: 0 'first', 1 'sample'."""
        kind = self.config.serve.history_kind
        return KIND_FIRST if kind == "first" else KIND_SAMPLE  # 'auto' unresolved (no fit): a sample

    def with_history_kind(self, history_kind: str | None) -> MetaRecommender:
        """This recommender serving users who show `history_kind` ('first' or 'sample'; None: as configured).
        A shallow copy: the weights are shared."""
        if history_kind is None or history_kind == self.config.serve.history_kind:
            return self
        if history_kind not in HISTORY_KINDS:
            raise DataError(f"history_kind = {history_kind!r}; use 'first' (a user's earliest interactions) or "
                            "'sample' (a random sample of them) (CLI: --history-kind)")
        other = copy.copy(self)
        other.config = self.config.replace(serve={"history_kind": history_kind})
        return other

    def with_serving(self, **serve) -> MetaRecommender:
        """This recommender with other [serve] settings (a shallow copy: the weights are shared)."""
        other = copy.copy(self)
        other.config = self.config.replace(serve=serve)
        return other

    def with_scales(self, scales: tuple[float, ...]) -> MetaRecommender:
        """This recommender with every history kind's per-size scales set to `scales` (a shallow copy)."""
        return self.with_serving(first_scales=scales, sample_scales=scales)

    def arriving_at(self, at) -> MetaRecommender:
        """This recommender serving users who arrive at `at`: the time of the time-aware popularity prior
        for users whose history has no timestamp (a user with none shows nothing else). `at`: Unix
        seconds, a datetime or an ISO date ('2024-03-01'), or a mapping (dict, pandas Series) from user id to
        such a time; None: the end of the warm log. A shallow copy: the weights are shared.

        Milliseconds (and finer) are converted to seconds with a warning. An ArrivalWarning says when `at`
        cannot act: a model that reads no time, a time before the warm log or far after it; and, while
        serving, how many users it is ignored for (their history has timestamps)."""
        if at is None and self.arrival is None:
            return self
        other = copy.copy(self)
        other.arrival = arrivals(at)  # converted once (a bad time is an error now), read by every chunk
        check_arrival(other, other.arrival)
        return other

    # ---- serving ------------------------------------------------------------------------------------
    def recommend(self, history, k: int = 20, exclude_seen: bool = True, candidates=None,
                  batch_size: int | None = None, progress=False, allow_unknown_items: bool = False,
                  history_kind: str | None = None, at=None, explain: int = 0, keep_names: bool = False,
                  **columns):
        """Adapt every user of `history` on its interactions, then rank the whole catalog (or each user's
        `candidates`: (user_id, item_id) rows) and keep the top k. Users with candidates but no history
        rows are ranked from the meta-learned starting point.

        history and candidates: Interactions, or pandas/polars frames with columns user_id, item_id and
        optionally rating, timestamp. Returns RankedLists for Interactions, else a frame of the same kind
        with columns user_id, item_id, score, rank. progress: True shows a bar on stderr (users, with a
        total and an ETA), or a callable(n_users_done); off by default. Served by recmaml.serve, as the
        CLI and Spark are.

        user_col=, item_col=, rating_col=, timestamp_col=: the frames' column names (candidates: user and
        item), as read_interactions takes them; by default the names the model was fitted with
        (column_names). keep_names=True gives the returned frame those user and item names instead of
        user_id, item_id. A history none of whose rows names a model item is a DataError (most of them: a
        warning), unless allow_unknown_items (recmaml.item_match).

        history_kind: what the users' rows are, 'first' (their earliest interactions: a real new user) or
        'sample' (a random sample, as a random benchmark split shows); None: serve.history_kind, which fit
        sets to 'first' on logs with timestamps. The model serves each kind as it was trained for it.

        at: when users without a timestamped history arrive, for the time-aware popularity prior (see
        arriving_at): a time, or a mapping from user id to time; None: the end of the warm log. A user
        with timestamps is served at its latest one.

        explain: when > 0, each row also gets a column `because`: up to that many of the user's history
        item ids that raised the item's score most (see explain); the result is then a frame (polars for
        Interactions) and costs about one more adaptation per history row."""
        self._require_model()
        if history_kind is not None or at is not None:
            return self.with_history_kind(history_kind).arriving_at(at).recommend(
                history, k, exclude_seen, candidates, batch_size, progress, allow_unknown_items, explain=explain,
                keep_names=keep_names, **columns)
        names = self.column_names(**columns)
        log_ = as_interactions(history, "history", names)
        cand = None if candidates is None else as_interactions(candidates, "candidates", _pairs_only(names))
        parts: list[RankedLists] = []
        total = len(np.unique(log_.user_idx)) if cand is None else len(np.union1d(
            log_.users.ids[np.unique(log_.user_idx)], cand.users.ids[np.unique(cand.user_idx)]))
        with optional_bar(progress, total, "user", "scoring") as bar:
            callback = bar.update if bar is not None else (progress or None)
            serve.serve_chunks(self, [log_], parts.append, k=k, exclude_seen=exclude_seen, candidates=cand,
                         batch_size=batch_size, progress=callback, allow_unknown_items=allow_unknown_items)
        ranked = RankedLists.concat(parts)
        if explain:
            explained = self._explained(log_, ranked, ranked.to_polars(), explain, batch_size)
            if not is_frame(history):
                return explained
            out = same_kind(explained, history)
        elif isinstance(history, Interactions):
            return ranked
        else:
            out = same_kind(ranked, history)
        return renamed(out, kept_names(names)) if keep_names else out

    def recommend_user(self, items, ratings=None, timestamps=None, *, k: int = 20, exclude_seen: bool = True,
                       candidates=None, by_index: bool = False, history_kind: str | None = None,
                       at=None) -> serve.UserRanking:
        """One new user's top k, from its history given as arrays: the in-process fast path for one user
        (no frame, no id vocabulary built), with the lists and scores `recommend` gives that user.

        items: the model's item ids the user interacted with, or with by_index=True their positions in
        `self.items` (implicit's indices; the answer's items are then positions too). ratings and
        timestamps (Unix seconds): optional, one per item (ratings required by a rating model).
        candidates: optional item ids (positions with by_index); only those are ranked. Unknown item ids
        are ignored and counted (`unknown_items` of the answer). Returns a recmaml.serve.UserRanking:
        `items` (best first), `scores`, `unknown_items`. history_kind and at as in recommend."""
        self._require_model()
        rec = self.with_history_kind(history_kind).arriving_at(at)
        if by_index:
            items = self._ids_at(items, "items")
            candidates = None if candidates is None else self._ids_at(candidates, "candidates")
        return serve.rank_histories(rec, [UserHistory(items, ratings, timestamps, candidates)], k, exclude_seen,
                                    positions=by_index)[0]

    def _ids_at(self, positions, what: str) -> np.ndarray:
        """The item ids at `positions` of self.items, or a DataError naming `what`."""
        positions = np.asarray(positions)
        if positions.size and (positions.dtype.kind not in "iu" or positions.min() < 0
                               or positions.max() >= len(self.items)):
            raise DataError(f"{what}: with by_index=True, give whole numbers in [0, {len(self.items)}) "
                            "(positions in rec.items)")
        return self.items.ids[positions.astype(np.int64)]

    def score(self, history, users=None, items=None, batch_size: int | None = None,
              allow_unknown_items: bool = False, history_kind: str | None = None, at=None, **columns) -> np.ndarray:
        """A score matrix (len(users), len(items)), each user adapted once on its rows of `history` (ratings
        for the rating objective); nothing is excluded. For evaluation code, which needs whole rows rather
        than top-k lists.

        users: the external ids of the rows, in order (default: the users of `history` that have rows);
        a user without history rows is scored from the meta-learned starting point. items: the external
        ids of the columns, in order (default: every model item, in the order of `self.items`); an item
        the model does not know gets NaN. Column keywords and allow_unknown_items as for recommend;
        history_kind and at as in recommend."""
        self._require_model()
        if history_kind is not None or at is not None:
            return self.with_history_kind(history_kind).arriving_at(at).score(history, users, items, batch_size,
                                                                               allow_unknown_items, **columns)
        history = self._checked_history(history, allow_unknown_items, columns)
        if users is None:
            users = history.users.ids[np.unique(history.user_idx)]
        users = np.asarray(users)
        columns = None
        if items is not None:
            columns = self.items.index(np.asarray(items))
        cold = cold_users(self, history, extra_users=users)
        out = serve.score_rows(self, cold, batch_size)[cold.users.index(users)]
        if columns is None:
            return out
        picked = out[:, np.where(columns == UNKNOWN, 0, columns)]
        picked[:, columns == UNKNOWN] = np.nan
        return picked

    def recommend_arrays(self, user_items, N: int = 10, filter_already_liked_items: bool = True, items=None,
                         batch_size: int | None = None, history_kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """implicit's batch form: `user_items` is a CSR matrix (cold users x the model's items, columns in
        the order of `self.items`; values are ratings for the rating objective, else ignored). Each row is
        adapted as a cold user (an empty row starts from the meta-learned initialization).

        Returns (ids, scores), each (n_users, N): item indices (columns of user_items) best first and their
        scores. items: optional item indices; only those are ranked. Where fewer than N items remain, the
        row ends with id -1 and score -inf."""
        serve.check_k(N, "N")
        self._require_model()
        if history_kind is not None:
            return self.with_history_kind(history_kind).recommend_arrays(user_items, N, filter_already_liked_items,
                                                                         items, batch_size)
        cold = matrix_cold_users(self, _check_user_items(user_items, len(self.items)))
        allowed = None
        if items is not None:
            pool = np.asarray(items, dtype=np.int64)
            if len(pool) and (pool.min() < 0 or pool.max() >= len(self.items)):
                raise DataError(f"items: indices must lie in [0, {len(self.items)}), got {pool.min()}..{pool.max()}")
            allowed = self._item_mask(pool)
        return serve.ranked_arrays(self, cold, N, filter_already_liked_items, allowed, batch_size)

    def predict(self, history, user_ids, item_ids=None, batch_size: int | None = None,
                allow_unknown_items: bool = False, history_kind: str | None = None, **columns):
        """Predicted scores of (user_id, item_id) pairs, each user adapted on its rows of `history` (users
        absent from it start from the meta-learned initialization). Pairs with items unknown to the model
        get NaN. A rating model (objective 'rating') predicts ratings, clipped to the range of the warm
        log's ratings (rating_range): a 5.23 on a 1-5 scale reads 5; rankings (recommend, score) use the
        unclipped values, which keep the order above the top of the scale. A ranking model predicts
        relevance scores that order items, not ratings, on no fixed scale and never clipped; it says so
        with a RelevanceScoresWarning, as the CLI's predict does in a note.

        Either arrays `user_ids`, `item_ids` (returns an array), or one pandas/polars frame of pairs with
        columns user_id, item_id as `user_ids` (returns a frame of the same kind with a column prediction)."""
        self._require_model()
        if history_kind is not None:
            return self.with_history_kind(history_kind).predict(history, user_ids, item_ids, batch_size,
                                                                allow_unknown_items, **columns)
        if item_ids is None and is_frame(user_ids):
            pairs = frame_of(user_ids)
            pairs = pairs.collect() if isinstance(pairs, pl.LazyFrame) else pairs
            names = self.column_names(**columns)
            missing = missing_columns(_pairs_only(names), pairs.columns)
            if missing:
                raise missing_columns_error("pairs frame", missing, pairs.columns)
            pred = self.predict(history, pairs[names.user].to_numpy(), pairs[names.item].to_numpy(), batch_size,
                                allow_unknown_items, **columns)
            out = pairs.select(names.user, names.item).with_columns(prediction=pl.Series(pred))
            return same_kind(out, user_ids)
        if item_ids is None:
            raise DataError("predict: pass user_ids and item_ids arrays, or one frame of pairs with columns user_id, item_id")
        history = self._checked_history(history, allow_unknown_items, columns)
        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        if len(user_ids) != len(item_ids):
            raise DataError(f"predict: {len(user_ids)} user ids but {len(item_ids)} item ids; pass one of each per pair")
        cold = cold_users(self, history, extra_users=user_ids)
        out = serve.pair_scores(self, cold, cold.users.index(user_ids).astype(np.int64),
                                self.items.index(item_ids).astype(np.int64), batch_size)
        if self.config.model.objective != "rating":
            warn_caller(RelevanceScoresWarning(
                f"this is a ranking model (objective {self.config.model.objective!r}): its predictions are relevance "
                "scores that order items, not ratings; a model fitted with objective = 'rating' predicts ratings"))
        elif self.rating_range is not None:
            np.clip(out, *self.rating_range, out=out)  # NaN (unknown items) stays NaN
        return out

    # ---- what the model says about its lists (recmaml.explain) -------------------------------------------
    def similar_items(self, items, k: int = 10, *, signal: str = "embedding", by_index: bool = False,
                      candidates=None):
        """The k items most similar to each of `items`, from what the model holds, in implicit's shape:
        (ids, scores), best first, each (len(items), k) for a sequence of items or (k,) for one item.

        signal: 'embedding' (default), the cosine of the item tower's vectors, the ones the scorer's dot
        product reads; or 'ease', EASE's learned item-item weights (the serving prior's kept neighbours): the
        EASE term a user who showed only that item gets on each other item (0 beyond its 256 kept
        neighbours; an item EASE has no row for is ranked by the embeddings). On ML-100K the embedding's
        neighbours are the more specific ones; EASE's lean to the most popular items (docs/python-api.md).

        items: the model's item ids, or with by_index=True their positions in `self.items` (the answer's
        ids are then positions too). An item is never its own neighbour (implicit's first answer is the
        item itself). candidates: optional item ids (positions with by_index): only those are ranked
        (implicit's `items`). k beyond what every row can offer is cut to it, so no row is padded."""
        self._require_model()
        serve.check_k(k)
        reasons.check_signal(self, signal)
        one = np.ndim(items) == 0
        query = self._item_positions(np.atleast_1d(np.asarray(items)), "items", by_index)
        allowed = None
        if candidates is not None:
            pool = self._item_positions(np.asarray(candidates), "candidates", by_index)
            allowed = self._item_mask(pool)
        positions, scores = reasons.similar_rows(self, query, k, signal, allowed)
        ids = positions if by_index else self.items.ids[positions]
        return (ids[0], scores[0]) if one else (ids, scores)

    def explain(self, history, ranked, n: int = 3, batch_size: int | None = None, history_kind: str | None = None,
                at=None, **columns):
        """`ranked` (lists recommend gave for `history`) with a column `because`: for each row, up to `n` of
        its user's history item ids, strongest first, whose removal lowers the row item's served score
        most. An item's reason strength is its leave-one-out drop: the item's served score for the whole
        history minus its score for the history without that one item (adapted again, with the set
        encoder and EASE's term reading the shorter history; the user's time stays). Only drops > 0
        count, so a list may name fewer than n (none for a user without history rows). Costs about one
        more adaptation per history row of the users in `ranked`.

        ranked: RankedLists or a pandas/polars frame with user_id, item_id, score, rank; returns the same
        kind of frame (polars for RankedLists). history, column keywords, history_kind and at: as recommend
        was given them. recmaml.explain.list_reasons gives the drops themselves."""
        self._require_model()
        if history_kind is not None or at is not None:
            return self.with_history_kind(history_kind).arriving_at(at).explain(history, ranked, n, batch_size,
                                                                                **columns)
        if isinstance(ranked, RankedLists):
            lists, frame = ranked, ranked.to_polars()
        else:
            frame = frame_of(ranked)
            frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
            lists = RankedLists.from_frame(frame)
        log_ = as_interactions(history, "history", Columns.named(**columns))
        out = self._explained(log_, lists, frame, n, batch_size)
        return out if isinstance(ranked, RankedLists) else same_kind(out, ranked)

    def _explained(self, history: Interactions, ranked: RankedLists, frame: pl.DataFrame, n: int,
                   batch_size: int | None) -> pl.DataFrame:
        """`frame` (the rows of `ranked`, in order) with the column `because` (see explain)."""
        serve.check_k(n, "explain")
        with warnings.catch_warnings():  # recommend has said which history items the model does not know
            warnings.simplefilter("ignore", UnknownItemsWarning)
            cold = cold_users(self, history, extra_users=ranked.user_id)
        with serve.threads_of(self):
            found = reasons.list_reasons(self, cold, ranked, n, batch_size)
        return frame.with_columns(_id_lists(self.items.ids, found.items))

    def _item_positions(self, items: np.ndarray, what: str, by_index: bool) -> np.ndarray:
        """Model positions of `items` (ids, or positions with by_index), or a DataError naming those that
        are not the model's."""
        if by_index:
            self._ids_at(items, what)  # checks the range
            return items.astype(np.int64)
        positions = self.items.index(items)
        unknown = items[positions == UNKNOWN]
        if len(unknown):
            count = "1 id is not an item" if len(unknown) == 1 else f"{len(unknown)} ids are not items"
            raise DataError(f"{spelled(what, '--' + what)}: {count} of this model (e.g. "
                            f"{unknown[:3].tolist()}); give ids of its warm log (e.g. {self.items.ids[:3].tolist()})")
        return positions.astype(np.int64)

    def _item_mask(self, positions: np.ndarray) -> torch.Tensor:
        """(n_items,) True at `positions`: the items a caller allows in its lists."""
        allowed = torch.zeros(len(self.items), dtype=torch.bool, device=self.device)
        allowed[torch.as_tensor(positions, device=self.device)] = True
        return allowed

    # ---- persistence --------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model directory `path` (recmaml.checkpoint): weights.safetensors and model.json."""
        self._require_model()
        checkpoint.save_recommender(self, path)

    @classmethod
    def load(cls, path, device: str = "cpu") -> MetaRecommender:
        """A saved recommender, ready to serve on `device` ('cpu', 'cuda', ...)."""
        return checkpoint.load_recommender(cls, path, device)


_ROLES = ("user", "item", "rating", "timestamp")  # the columns a model remembers (self.columns)


def _pairs_only(names: Columns) -> Columns:
    """The user and item columns of `names`, for tables of (user, item) rows (candidates, pairs)."""
    return Columns(user=names.user, item=names.item, rating=None, timestamp=None)


def _column_names(names: Columns) -> dict:
    """What the model remembers of the warm log's columns (saved in its metadata)."""
    return {"user": names.user, "item": names.item, "rating": names.rating, "timestamp": names.timestamp}


def _id_lists(ids: np.ndarray, positions: np.ndarray) -> pl.Series:
    """A list column of the ids at `positions` (rows, n), each row up to its first UNKNOWN."""
    import pyarrow as pa

    kept = positions != UNKNOWN
    offsets = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int32)
    values = ids[positions[kept]]
    return pl.Series("because", pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))


def _check_user_items(user_items, n_items: int):
    """user_items as CSR with one column per model item, or a DataError saying what shape it needs."""
    import scipy.sparse as sp

    if not sp.issparse(user_items):
        raise DataError(f"user_items must be a scipy.sparse CSR matrix (cold users x {n_items} items), "
                        f"got {type(user_items).__name__}")
    csr = sp.csr_matrix(user_items, copy=True)  # sum_duplicates below must not touch the caller's matrix
    if csr.shape[1] != n_items:
        raise DataError(f"user_items has {csr.shape[1]} columns but the model knows {n_items} items; "
                        "columns must follow rec.items (map ids with rec.items.index)")
    csr.sum_duplicates()
    return csr



__all__ = ["MetaRecommender", "RelevanceScoresWarning", "UnknownItemsWarning"]
