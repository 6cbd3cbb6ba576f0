"""MetaRecommender: fit on warm users, then adapt to cold users and rank, predict, save, load."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
import warnings
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import torch

from recmaml import checkpoint, distributed
from recmaml.adapt import adapt, adapted_names, batched_scores
from recmaml.calibrate import calibrate
from recmaml.config import HISTORY_KINDS, PRIOR_BUCKETS, SIZE_BUCKETS, Config, config_from_dict, device_problem
from recmaml.data import UNKNOWN, Interactions, RankedLists, Vocabulary, relevant_rating
from recmaml.errors import ConfigError, DataError, RecMamlError, spelled
from recmaml.frames import (Columns, as_interactions, frame_of, is_frame, missing_columns, missing_columns_error,
                            same_kind)
from recmaml.item_match import ItemTally
from recmaml.meta import TrainHistory, enable_meta_sgd, meta_train, training_length
from recmaml.fast_adapt import fast_path_applies, fast_user_vectors
from recmaml.model import META_LR_PREFIX, TIME_EDGES, FeatureSpec, Scorer, feature_tensors
from recmaml.ordered import item_dots, rows_mm
from recmaml.priors import ServingPriors, blend_
from recmaml.progress import progress_bar
from recmaml.rank import exclude_items_, rank_candidates, top_k, valid_entries
from recmaml import resume as resume_files
from recmaml.resume import EpochCheckpoint
from recmaml.tasks import KIND_FIRST, KIND_SAMPLE, PaddedSet, group_positions, padded_sets, split_users

log = logging.getLogger(__name__)


class UnknownItemsWarning(UserWarning):
    """A cold user's history named items the model does not know; those rows were dropped.
    `rows` counts the dropped rows, `item_ids` holds the distinct unknown ids and `what` names the input
    ("history", "candidate"), for summaries."""

    def __init__(self, message: str, rows: int = 0, item_ids=(), what: str = "history"):
        super().__init__(message)
        self.rows, self.item_ids, self.what = rows, np.asarray(item_ids), what


@dataclass
class ColdUsers:
    """Cold users' histories in the model's item space: one chunk-able view of a history log."""

    users: Vocabulary  # the cold users' external ids
    user_idx: np.ndarray  # rows: which cold user
    item_idx: np.ndarray  # rows: model item index
    rating: np.ndarray
    user_feats: dict[str, torch.Tensor]  # one row per cold user


def _bar(progress, total: int, unit: str, desc: str):
    """progress=True in the Python API: a tqdm bar on stderr, as a context manager that closes it;
    otherwise a context that yields None (no bar: a callable `progress`, or none)."""
    import contextlib

    if progress is not True:
        return contextlib.nullcontext()
    return progress_bar(total=total, unit=unit, desc=desc)


def epoch_progress(bar):
    """fit's progress callable(epoch, record) that moves `bar`, with the meta-loss and validation figure."""
    def update(epoch: int, record: dict) -> None:
        if record.get("of") and bar.total != record["of"]:  # meta.epochs = 'auto' is known once fit starts
            bar.total = record["of"]
        postfix = {"meta_loss": f"{record['train_loss']:.4f}"}
        if "metric" in record:
            postfix[f"val_{record['metric'].lower()}"] = f"{record['metric_value']:.4f}"
        bar.set_postfix(postfix)
        bar.update(1)
    return update


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
        self.columns: dict | None = None  # the warm log's column names, when known: the CLI's later defaults

    # ---- training -------------------------------------------------------------------------------
    def fit(self, warm, progress=False, item_factors=None, checkpoint_dir=None, resume: bool = False,
            **columns) -> MetaRecommender:
        """Meta-train on the warm users of `warm` (each user is a task): an Interactions, or a pandas/polars
        frame with columns user_id, item_id and optionally rating, timestamp.

        progress: True shows a bar on stderr (epochs, meta-loss, validation figure) and, at the end, why
        training stopped; or a callable(epoch, record) for your own display. Off by default.

        item_factors: optional (item_ids, factors) to start the item embeddings from, e.g. an implicit ALS
        model's `item_factors` with the item ids of its columns; items it lacks keep their random start.

        checkpoint_dir: a folder (the CLI's `fit --out`) where a checkpoint is written atomically after every
        epoch; with `resume`, training continues from the checkpoint found there (same config and data, else
        CheckpointError) to the weights an uninterrupted fit ends with. recmaml.resume.discard(folder)
        removes it once the model is saved (the CLI does).

        user_col=, item_col=, rating_col=, timestamp_col=: a frame's column names, as read_interactions
        takes them; the model remembers them (`columns`) as the defaults of the CLI's later commands."""
        if columns or is_frame(warm):
            self.columns = _column_names(Columns.named(**columns))
        warm = as_interactions(warm, "warm log", Columns.named(**columns))
        if len(warm) == 0:
            raise DataError("fit: the warm log is empty")
        if self.config.model.objective == "rating" and warm.is_implicit:
            raise DataError("fit: model.objective = 'rating' needs a log with ratings; "
                            "set objective = 'implicit' in the config for logs without ratings")
        self.config = resolve_for_log(self.config, warm)
        if distributed.launched():  # one of torchrun's ranks: join the group, train on this rank's device
            self.config = self.config.replace(meta={"device": distributed.init_from_env(self.config.meta.device)})
        torch.manual_seed(self.config.meta.seed)  # the initial weights are part of what a seed fixes
        # side features in model terms: numeric ones standardized with the warm log's statistics, which
        # the layout keeps so that cold users' features are read the same way
        self.user_layout = warm.user_features.layout() if warm.user_features else None
        user_features = warm.user_features.conformed(self.user_layout) if warm.user_features else None
        item_features = warm.item_features.conformed(warm.item_features.layout()) if warm.item_features else None
        warm = replace(warm, user_features=user_features, item_features=item_features)
        _check_model_fits_in_memory(self.config, warm.n_items)
        self.items = warm.items
        self.rating_range = None if warm.rating is None else (float(warm.rating.min()), float(warm.rating.max()))
        if item_factors is None and self.config.model.item_init == "als":
            item_factors = _als_item_factors(warm, self.config)
        self.model = self._new_scorer(warm, item_factors)
        user_feats = feature_tensors(warm.user_features, self.model.user_spec, warm.n_users)
        self.history = self._meta_train(self.model, warm, self.config, user_feats, progress, checkpoint_dir, resume)
        self.sample_model = self.sample_history = None
        if self.config.model.sample_weights and warm.timestamp is not None:
            # random supports alone train the weights that serve 'sample' histories (a model trained on
            # both kinds serves them about 3% below one trained for them; benchmarks/EXPERIMENTS.md)
            torch.manual_seed(self.config.meta.seed)
            self.sample_model = self._new_scorer(warm, item_factors)
            sample_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / resume_files.SAMPLE_WEIGHTS
            self.sample_history = self._meta_train(self.sample_model, warm, self.config.replace(tasks={"order": "random"}),
                                                   user_feats, progress, sample_dir, resume, "sample weights")
        # how far serving steps per support size, and the serving priors' tables and weights
        chosen = calibrate(self, warm, user_feats)
        self.config = self.config.replace(serve=chosen)
        return self

    def _new_scorer(self, warm: Interactions, item_factors) -> Scorer:
        """A scorer of the config's shape at its data-derived start: item biases at the log's popularity
        (or mean ratings), item embeddings at `item_factors`, the item-kNN and time-prior tables filled."""
        model = Scorer(warm.n_items, self.config.model, item_features=warm.item_features,
                       user_spec=FeatureSpec.of(warm.user_features))
        if self.config.model.objective == "rating":
            _init_rating_biases(model, warm)
        else:
            _init_popularity_biases(model, warm)
        if item_factors is not None:
            _init_item_embeddings(model, self.items, *item_factors)
        if self.config.model.item_knn:
            model.set_item_knn(*_item_knn_table(warm, self.config))
        if self.config.model.time_prior:
            model.set_time_prior(*_time_table(warm, self.config))
        return model

    @staticmethod
    def _meta_train(model: Scorer, warm: Interactions, config: Config, user_feats, progress, checkpoint_dir,
                    resume: bool, what: str = "meta-training") -> TrainHistory:
        """meta_train with fit's progress bar and checkpoints; the model is left in eval mode."""
        with _bar(progress, config.meta.epochs, "epoch", what) as bar:
            checkpoint = None if checkpoint_dir is None else EpochCheckpoint.in_folder(checkpoint_dir, resume)
            history = meta_train(model, warm, config, user_feats, checkpoint=checkpoint,
                                 progress=epoch_progress(bar) if bar is not None else (progress or None))
            if bar is not None:
                if len(history.epochs) < bar.total:  # stopped early: close the bar at the stop, not short of it
                    bar.total = len(history.epochs)
                    bar.set_description(f"{what} stopped ({history.stopped})")
                    bar.refresh()
                bar.write(f"{what} {history.summary()}", file=bar.fp)
        model.eval()
        return history

    def _scorer(self) -> Scorer:
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

    def _checked_history(self, history, allow_unknown_items: bool, columns: dict) -> Interactions:
        """A history given to predict or score, read with the column keywords, its item ids checked
        against the model's (recmaml.item_match)."""
        history = as_interactions(history, "history", Columns.named(**columns))
        tally = ItemTally(self.items)
        tally.add(history)
        tally.check("history", allow=allow_unknown_items)
        return history

    # ---- cold users ---------------------------------------------------------------------------------
    def _cold_users(self, history: Interactions, extra_users=None, what: str = "history") -> ColdUsers:
        """Map a log into the model's item space (unknown items dropped with one warning naming `what`)."""
        model = self._require_model()
        if what == "history" and model.cfg.objective == "rating" and history.rating is None:
            raise DataError("the history has no ratings, but this model predicts ratings (objective 'rating') and "
                            f"adapts on them; give the history a rating column ({spelled('rating_col=', '--rating-col')})")
        item_idx = _map_ids(self.items, history.items, history.item_idx)
        known = item_idx != UNKNOWN
        if not known.all():
            unknown_ids = np.unique(history.items.ids[history.item_idx[~known]])
            warnings.warn(UnknownItemsWarning(
                f"{int((~known).sum())} {what} rows name {len(unknown_ids)} items unknown to the model; "
                "those rows were dropped", rows=int((~known).sum()), item_ids=unknown_ids, what=what), stacklevel=3)
        # the users served are those with rows in the history (a vocabulary may hold more), even when all
        # their items were unknown: they start from the meta-learned initialization
        present = history.users.ids[np.unique(history.user_idx)]
        if extra_users is not None:
            present = np.union1d(present, Vocabulary.fit(extra_users).ids)
        users = Vocabulary(present)
        user_idx = _map_ids(users, history.users, history.user_idx[known])
        feats = None
        if history.user_features is not None and self.user_layout is not None:
            feats = history.user_features.conformed(self.user_layout).aligned_to(users)
        user_feats = feature_tensors(feats, model.user_spec, len(users))
        arrival = self._arrival_times(users)
        if arrival is not None:
            user_feats["time"] = torch.from_numpy(_user_times(history, known, users, user_idx, arrival))
        # without a rating column: 1 for a rating model's loss (it needs ratings and says so above), NaN (no
        # rating, so no dislike) for the priors' EASE term of an implicit model, which uses ratings for nothing else
        no_rating = 1.0 if model.cfg.objective == "rating" else np.nan
        return ColdUsers(
            users=users,
            user_idx=user_idx.astype(np.int64),
            item_idx=item_idx[known].astype(np.int64),
            rating=(history.rating[known] if history.rating is not None else np.full(known.sum(), no_rating, np.float32)),
            user_feats=user_feats,
        )

    def _arrival_times(self, users: Vocabulary) -> np.ndarray | None:
        """Per user, the time it is served at when its history has no timestamp (`at`, else the end of the
        warm log), or None when nothing the model serves with reads a time."""
        model = self._require_model()
        if model.time_scale is not None:
            return _arrival_times(self.arrival, users, model.latest_time())
        if self.priors is not None and self.priors.has_time:
            return _arrival_times(self.arrival, users, self.priors.latest_time())
        return None

    def _chunks(self, cold: ColdUsers, batch_size: int | None):
        """Yield (user indices, their supports as a PaddedSet) for chunks of cold users; rows sorted by
        user once."""
        order, pos = group_positions(cold.user_idx)
        sorted_users = cold.user_idx[order]
        bounds = np.searchsorted(sorted_users, np.arange(0, len(cold.users) + 1))
        size = self.config.serve.batch_size if batch_size is None else batch_size
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
                          "history_kind": torch.full((stop - start,), self.history_kind_index)}
            yield np.arange(start, stop), PaddedSet(user_feats, items, ratings, mask).to(self.device)

    def _serving_threads(self):
        """torch's threads for one serving call (serve.threads; 'auto': the cores free when it starts)."""
        from recmaml.serve import serving_threads, torch_threads

        return torch_threads(serving_threads(self.config.serve.threads))

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

    def _lr_scales(self, support: PaddedSet) -> torch.Tensor:
        """Per user, the multiplier of the inner learning rate: serve.inner_lr_scale times the scale of its
        support size for the kind of history served (serve.first_scales / sample_scales, chosen by fit)."""
        serve = self.config.serve
        scales = serve.first_scales if serve.history_kind == "first" else serve.sample_scales
        sizes = support.mask.sum(dim=1).cpu().numpy()
        if isinstance(scales, str):  # 'auto' never resolved (a model saved before fit chose them): one rate
            per_user = np.where(sizes > 0, 1.0, 0.0)
        else:
            bucket = np.searchsorted(SIZE_BUCKETS, sizes, side="right") - 1
            per_user = np.where(bucket >= 0, np.asarray(scales, np.float64)[np.maximum(bucket, 0)], 0.0)
        return torch.as_tensor(per_user * serve.inner_lr_scale, dtype=torch.float32, device=support.items.device)

    def arriving_at(self, at) -> MetaRecommender:
        """This recommender serving users who arrive at `at`: the time of the time-aware popularity prior
        for users whose history has no timestamp (a user with none shows nothing else). `at`: Unix
        seconds, a datetime or an ISO date ('2024-03-01'), or a mapping (dict, pandas Series) from user id to
        such a time; None: the end of the warm log. A shallow copy: the weights are shared."""
        if at is None and self.arrival is None:
            return self
        other = copy.copy(self)
        other.arrival = _arrivals(at)  # converted once (a bad time is an error now), read by every chunk
        return other

    def _prior_weights(self, support: PaddedSet) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
        """Per user, the weights of the serving priors (EASE, popularity) for its support size and the kind of
        history served (serve.*_ease_weights, *_recent_weights), each None when all 0 in this batch; None
        when the model serves without priors (none fitted, serve.priors off, or every weight 0)."""
        serve = self.config.serve
        if self.priors is None or not serve.priors:
            return None
        prefix = "first" if serve.history_kind == "first" else "sample"
        ease, recent = getattr(serve, f"{prefix}_ease_weights"), getattr(serve, f"{prefix}_recent_weights")
        if isinstance(ease, str) or isinstance(recent, str) or not any(ease) and not any(recent):
            return None  # 'auto' never resolved (a model saved before fit chose them): the scorer alone
        bucket = np.searchsorted(PRIOR_BUCKETS, support.mask.sum(dim=1).cpu().numpy(), side="right") - 1
        if not self.priors.has_time:
            recent = (0.0,) * len(PRIOR_BUCKETS)
        per_user = [np.asarray(w, np.float32)[bucket] for w in (ease, recent)]
        # never None for a batch whose users all have weight 0: every user's scores are standardized, so that a
        # user's scores do not depend on the batch it is served in. None for a prior without weight in this
        # batch: its scores are not computed
        return tuple(torch.as_tensor(w, device=support.items.device) if w.any() else None for w in per_user)

    def _scores(self, support: PaddedSet, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, n_items), or (B, C) of per-user `items`, after adapting each user on `support`: the
        scorer's, or, where the serving priors have weight, the standardized scorer's plus the weighted
        standardized priors (recmaml.priors)."""
        weights = None if self.config.model.objective == "rating" else self._prior_weights(support)
        if weights is None:
            return self._model_scores(support, items)
        scores = blend_(self._model_scores(support).float(), self.priors, support, *weights)
        return scores if items is None else scores.gather(1, items)

    def _model_scores(self, support: PaddedSet, items: torch.Tensor | None = None) -> torch.Tensor:
        """The scorer's scores (B, n_items), or (B, C) of per-user `items`, after adapting each user."""
        model = self._scorer()
        fast = self._fast_users(support)
        if fast is not None:
            users, user_bias = fast
            kind = self.history_kind_index
            with torch.no_grad():
                vectors = model.catalog_vectors()
                item_bias = model.item_biases(kind=kind)
                if items is None:  # products of one fixed shape: a user's scores do not depend on its batch
                    scores = rows_mm(users, vectors.T, item_bias)
                else:
                    scores = item_dots(vectors, items, users) + item_bias[items]
                if model.cfg.objective == "rating":
                    scores = scores + user_bias[:, None] + model.global_bias
                return scores
        m = self.config.meta
        with torch.no_grad():  # torch.func.grad still differentiates inside; no graph to the meta-weights
            fast = adapt(model, support, names=adapted_names(model, m.adapt), steps=self._serving_steps(),
                         inner_lr=m.inner_lr, first_order=True, reduction=m.support_reduction,
                         lr_scale=self._lr_scales(support))
            return batched_scores(model, fast, support.user_feats, items)

    def _fast_users(self, support: PaddedSet) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Each user's adapted vector (B, d) and bias (B,) by serving's fast path (fast_adapt.fast_user_vectors);
        None when the model adapts more than the user side (serving then adapts with recmaml.adapt)."""
        model = self._scorer()
        m = self.config.meta
        names = adapted_names(model, m.adapt)
        if not fast_path_applies(model, names):
            return None
        return fast_user_vectors(model, support, names=names, steps=self._serving_steps(),
                                 inner_lr=m.inner_lr * self._lr_scales(support), reduction=m.support_reduction,
                                 item_vectors=model.catalog_vectors(), kind=self.history_kind_index)

    def _serving_steps(self) -> int:
        steps = self.config.serve.inner_steps
        return self.config.meta.inner_steps if steps is None else steps

    # ---- serving ------------------------------------------------------------------------------------
    def recommend(self, history, k: int = 20, exclude_seen: bool = True, candidates=None,
                  batch_size: int | None = None, progress=False, allow_unknown_items: bool = False,
                  history_kind: str | None = None, at=None, **columns):
        """Adapt every user of `history` on its interactions, then rank the whole catalog (or each user's
        `candidates`: (user_id, item_id) rows) and keep the top k. Users with candidates but no history
        rows are ranked from the meta-learned starting point.

        history and candidates: Interactions, or pandas/polars frames with columns user_id, item_id and
        optionally rating, timestamp. Returns RankedLists for Interactions, else a frame of the same kind
        with columns user_id, item_id, score, rank. progress: True shows a bar on stderr (users, with a
        total and an ETA), or a callable(n_users_done); off by default. Served by recmaml.serve, as the
        CLI and Spark are.

        user_col=, item_col=, rating_col=, timestamp_col=: the frames' column names (candidates: user and
        item), as read_interactions takes them. A history none of whose rows names a model item is a
        DataError (most of them: a warning), unless allow_unknown_items (recmaml.item_match).

        history_kind: what the users' rows are, 'first' (their earliest interactions: a real new user) or
        'sample' (a random sample, as a random benchmark split shows); None: serve.history_kind, which fit
        sets to 'first' on logs with timestamps. The model serves each kind as it was trained for it.

        at: when users without a timestamped history arrive, for the time-aware popularity prior (see
        arriving_at): a time, or a mapping from user id to time; None: the end of the warm log. A user
        with timestamps is served at its latest one."""
        from recmaml.serve import serve_chunks

        self._require_model()
        if history_kind is not None or at is not None:
            return self.with_history_kind(history_kind).arriving_at(at).recommend(
                history, k, exclude_seen, candidates, batch_size, progress, allow_unknown_items, **columns)
        names = Columns.named(**columns)
        log_ = as_interactions(history, "history", names)
        cand = None if candidates is None else as_interactions(candidates, "candidates", _pairs_only(names))
        parts: list[RankedLists] = []
        total = len(np.unique(log_.user_idx)) if cand is None else len(np.union1d(
            log_.users.ids[np.unique(log_.user_idx)], cand.users.ids[np.unique(cand.user_idx)]))
        with _bar(progress, total, "user", "scoring") as bar:
            callback = bar.update if bar is not None else (progress or None)
            serve_chunks(self, [log_], parts.append, k=k, exclude_seen=exclude_seen, candidates=cand,
                         batch_size=batch_size, progress=callback, allow_unknown_items=allow_unknown_items)
        ranked = RankedLists.concat(parts)
        return ranked if isinstance(history, Interactions) else same_kind(ranked, history)

    def rank_chunk(self, history: Interactions, k: int = 20, exclude_seen: bool = True,
                   candidates: Interactions | None = None, batch_size: int | None = None, progress=None,
                   times=None) -> RankedLists:
        """The top k of every user of `history` (Interactions holding all rows of its users), or of each
        user's `candidates`; users present only in `candidates` start from the meta-learned start. The
        step that recmaml.serve.serve_chunks repeats chunk by chunk. progress: callable(n_users) or None;
        times: an optional recmaml.serve.StageTimes."""
        from recmaml.serve import stage

        with stage(times, "map"):
            cand = None if candidates is None else self._cold_users(candidates, what="candidate")
            cold = self._cold_users(history, extra_users=None if cand is None else cand.users.ids[np.unique(cand.user_idx)])
        parts = []
        with self._serving_threads():
            if times is not None:
                times.count_threads()
            for users, items, values in self._ranked_chunks(cold, k, exclude_seen, cand, batch_size, progress,
                                                            times=times):
                with stage(times, "lists"):
                    parts.append(_ranked(cold.users.ids[users], items, values, self.items))
        with stage(times, "lists"):
            return RankedLists.concat(parts)

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
        cold = self._cold_users(history, extra_users=users)
        out = np.empty((len(cold.users), len(self.items)), dtype=np.float32)
        with self._serving_threads():
            for rows, support in self._chunks(cold, batch_size):
                with torch.no_grad():
                    out[rows] = self._scores(support).cpu().numpy()
        out = out[cold.users.index(users)]
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
        from recmaml.serve import check_k

        check_k(N, "N")
        self._require_model()
        if history_kind is not None:
            return self.with_history_kind(history_kind).recommend_arrays(user_items, N, filter_already_liked_items,
                                                                         items, batch_size)
        csr = _check_user_items(user_items, len(self.items))
        n_users = csr.shape[0]
        users = Vocabulary(np.arange(n_users))
        user_feats = feature_tensors(None, self.model.user_spec, n_users)
        arrival = self._arrival_times(users)
        if arrival is not None:
            user_feats["time"] = torch.from_numpy(arrival)
        implicit = self.config.model.objective == "implicit"  # values are no ratings: every row a like (NaN)
        cold = ColdUsers(
            users=users,
            user_idx=np.repeat(np.arange(n_users), np.diff(csr.indptr)).astype(np.int64),
            item_idx=csr.indices.astype(np.int64),
            rating=np.full(csr.nnz, np.nan, np.float32) if implicit else csr.data.astype(np.float32),
            user_feats=user_feats,
        )
        allowed = None
        if items is not None:
            pool = np.asarray(items, dtype=np.int64)
            if len(pool) and (pool.min() < 0 or pool.max() >= len(self.items)):
                raise DataError(f"items: indices must lie in [0, {len(self.items)}), got {pool.min()}..{pool.max()}")
            allowed = torch.zeros(len(self.items), dtype=torch.bool, device=self.device)
            allowed[torch.as_tensor(pool, device=self.device)] = True
        ids = np.full((n_users, N), -1, dtype=np.int64)
        scores = np.full((n_users, N), -np.inf, dtype=np.float32)
        with self._serving_threads():
            for users, ranked_items, values in self._ranked_chunks(cold, N, filter_already_liked_items, None,
                                                                   batch_size, allowed=allowed):
                valid = valid_entries(values).numpy()
                width = ranked_items.shape[1]
                ids[users, :width] = np.where(valid, ranked_items.numpy(), -1)
                scores[users, :width] = np.where(valid, values.numpy(), -np.inf)
        return ids, scores

    def _ranked_chunks(self, cold: ColdUsers, k: int, exclude_seen: bool, cand: ColdUsers | None,
                       batch_size: int | None, progress=None, allowed: torch.Tensor | None = None, times=None):
        """Yield (cold user indices, top items (B, k'), their scores) chunk by chunk, on the CPU.
        allowed: optional (n_items,) mask; other items are never ranked."""
        from recmaml.serve import stage

        for users, support in self._chunks(cold, batch_size):
            with torch.no_grad():
                if cand is None:
                    with stage(times, "adapt"):
                        scores = self._scores(support)
                    with stage(times, "top-k"):
                        if exclude_seen:
                            scores = exclude_items_(scores, support.items, support.mask)  # scores is ours
                        if allowed is not None:
                            scores = scores.masked_fill(~allowed, float("-inf"))
                        items, values = top_k(scores, k)
                else:
                    c_items, c_mask = (t.to(self.device) for t in _candidates_for(cold.users.ids[users], cand))
                    scores = self._scores(support, c_items)
                    if exclude_seen:
                        seen = (c_items[:, :, None] == support.items[:, None, :]) & (support.mask[:, None, :] > 0)
                        c_mask = c_mask * (~seen.any(dim=2)).float()
                    items, values = rank_candidates(scores, c_items, c_mask, k)
            if progress is not None:
                progress(len(users))
            yield users, items.cpu(), values.cpu()

    def predict(self, history, user_ids, item_ids=None, batch_size: int | None = None,
                allow_unknown_items: bool = False, history_kind: str | None = None, **columns):
        """Predicted scores (ratings for the rating objective) of (user_id, item_id) pairs, each user adapted
        on its rows of `history` (users absent from it start from the meta-learned initialization).
        Pairs with items unknown to the model get NaN. Predicted ratings (the rating objective) are clipped
        to the range of the warm log's ratings (rating_range): a 5.23 on a 1-5 scale reads 5. Rankings
        (recommend, score) use the unclipped values, which keep the order above the top of the scale.

        Either arrays `user_ids`, `item_ids` (returns an array), or one pandas/polars frame of pairs with
        columns user_id, item_id as `user_ids` (returns a frame of the same kind with a column prediction)."""
        self._require_model()
        if history_kind is not None:
            return self.with_history_kind(history_kind).predict(history, user_ids, item_ids, batch_size,
                                                                allow_unknown_items, **columns)
        if item_ids is None and is_frame(user_ids):
            pairs = frame_of(user_ids)
            pairs = pairs.collect() if isinstance(pairs, pl.LazyFrame) else pairs
            names = Columns.named(**columns)
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
        cold = self._cold_users(history, extra_users=user_ids)
        pair_user = cold.users.index(user_ids).astype(np.int64)
        pair_item = self.items.index(item_ids).astype(np.int64)
        out = np.full(len(user_ids), np.nan, dtype=np.float32)
        valid = pair_item != UNKNOWN
        order, pos = group_positions(pair_user[valid])
        pair_rows = np.flatnonzero(valid)[order]
        sorted_users = pair_user[pair_rows]
        with self._serving_threads():
            for users, support in self._chunks(cold, batch_size):
                lo, hi = np.searchsorted(sorted_users, [users[0], users[-1] + 1])
                if lo == hi:
                    continue
                rows = pair_rows[lo:hi]
                items, _, mask = padded_sets(pair_user[rows] - users[0], pos[lo:hi], pair_item[rows],
                                             np.zeros(hi - lo, np.float32), len(users))
                scores = self._scores(support, items.to(self.device)).cpu()
                out[rows] = scores[torch.as_tensor(pair_user[rows] - users[0]), torch.as_tensor(pos[lo:hi])].numpy()
        if self.config.model.objective == "rating" and self.rating_range is not None:
            np.clip(out, *self.rating_range, out=out)  # NaN (unknown items) stays NaN
        return out

    # ---- persistence --------------------------------------------------------------------------------
    def save(self, path) -> None:
        model = self._require_model()
        state = model.state_dict()
        if self.sample_model is not None:
            state.update({f"{SAMPLE_PREFIX}{k}": v for k, v in self.sample_model.state_dict().items()})
        if self.priors is not None:
            state.update({f"{PRIORS_PREFIX}{k}": v for k, v in self.priors.state_dict().items()})
        checkpoint.save_checkpoint(path, state, {
            "config": self.config.to_dict(),
            "items": self.items.to_json(),
            "user_spec": model.user_spec.to_json(),
            "item_spec": model.item_spec.to_json(),
            "user_layout": self.user_layout,
            "history": None if self.history is None else self.history.epochs,
            "sample_history": None if self.sample_history is None else self.sample_history.epochs,
            "rating_range": self.rating_range,
            "columns": self.columns,
        })

    @classmethod
    def load(cls, path, device: str = "cpu") -> MetaRecommender:
        """A saved recommender, ready to serve on `device` ('cpu', 'cuda', ...)."""
        state, meta = checkpoint.load_checkpoint(path)
        missing = [k for k in ("config", "items", "user_spec", "item_spec", "user_layout") if k not in meta]
        if missing:
            raise checkpoint.CheckpointError(f"{path}/{checkpoint.METADATA}: missing {missing}; the model "
                                             "directory is incomplete or was not written by MetaRecommender.save")
        problem = device_problem(device)
        if problem:
            raise RecMamlError(f"MetaRecommender.load(device={device!r}): {problem}")
        config = meta["config"]
        if isinstance(config, dict) and isinstance(config.get("meta"), dict):  # served where it is loaded, not
            config = {**config, "meta": {**config["meta"], "device": device}}  # where it was trained
        if not isinstance(config, dict):
            raise checkpoint.CheckpointError(f"{path}/{checkpoint.METADATA}: 'config' is not a table of sections; "
                                             "the model directory is corrupt")
        if isinstance(config.get("model"), dict) and "history_kind" not in config["model"]:
            config = {**config, "model": {**config["model"], "history_kind": False}}  # saved before it existed
        rec = cls(config_from_dict(config, f"{path}/{checkpoint.METADATA}"))
        try:
            rec.items = Vocabulary.from_json(meta["items"])
            rec.user_layout = meta["user_layout"]
            rec.columns = meta.get("columns")  # absent in models saved before it was recorded
            rating_range = meta.get("rating_range")  # absent in models saved before it was recorded: no clipping
            rec.rating_range = None if rating_range is None else (float(rating_range[0]), float(rating_range[1]))
            user_spec, item_spec = FeatureSpec.from_json(meta["user_spec"]), FeatureSpec.from_json(meta["item_spec"])
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise checkpoint.CheckpointError(f"{path}/{checkpoint.METADATA}: malformed metadata ({type(err).__name__}: "
                                             f"{str(err)[:200]}); the model directory is corrupt") from err
        sample_state = {k[len(SAMPLE_PREFIX):]: v for k, v in state.items() if k.startswith(SAMPLE_PREFIX)}
        priors_state = {k[len(PRIORS_PREFIX):]: v for k, v in state.items() if k.startswith(PRIORS_PREFIX)}
        main_state = {k: v for k, v in state.items() if not k.startswith((SAMPLE_PREFIX, PRIORS_PREFIX))}
        if priors_state:
            rec.priors = _loaded_priors(path, priors_state, len(rec.items), device)
        rec.model = _loaded_scorer(path, rec, main_state, user_spec, item_spec, device)
        if sample_state:
            rec.sample_model = _loaded_scorer(path, rec, sample_state, user_spec, item_spec, device)
        return rec


SAMPLE_PREFIX = "sample_weights."  # the sample weights' entries in a saved model's weights
PRIORS_PREFIX = "priors."  # the serving priors' tables


def _loaded_priors(path, state: dict, n_items: int, device: str) -> ServingPriors:
    """The saved serving priors, checked against the catalog."""
    try:
        priors = ServingPriors.from_state(state)
    except (KeyError, ValueError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path}: the serving priors' tables do not fit ({str(err)[:200]}); "
                                         "the model directory is corrupt or mixed") from err
    if priors.ease_index.shape[0] != n_items:
        raise checkpoint.CheckpointError(f"{path}: the serving priors cover {priors.ease_index.shape[0]} items, "
                                         f"the model {n_items}; the model directory is corrupt or mixed")
    return priors.to(device)


def _loaded_scorer(path, rec: MetaRecommender, state: dict, user_spec, item_spec, device: str) -> Scorer:
    """A scorer of the saved config's shape holding `state`, on `device` in eval mode."""
    model = Scorer(len(rec.items), rec.config.model, user_spec=user_spec, item_spec=item_spec)
    if any(k.startswith(f"{META_LR_PREFIX}.") for k in state):
        enable_meta_sgd(model, adapted_names(model, rec.config.meta.adapt), rec.config.meta.inner_lr)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # torch lists every mismatch over many lines: name the first and count
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        first = lines[0][:200] if lines else str(err)[:200]
        raise checkpoint.CheckpointError(f"{path}: weights do not fit the saved config ({len(lines)} problem(s); "
                                         f"first: {first}); the model directory is corrupt or mixed") from err
    return model.to(device).eval()


def _user_times(history: Interactions, known: np.ndarray, users: Vocabulary, user_idx: np.ndarray,
                default: np.ndarray) -> np.ndarray:
    """Each cold user's time for the time prior: its latest interaction of a known item, or its `default`
    (the caller's `at`, else the end of the warm log) for a user without one or a history without timestamps."""
    times = np.full(len(users), -np.inf)
    if history.timestamp is not None:
        np.maximum.at(times, user_idx, history.timestamp[known].astype(np.float64))
    return np.where(np.isfinite(times), times, default)


def _arrival_times(arrival, users: Vocabulary, latest: float) -> np.ndarray:
    """Per user, the time `arrival` (see _arrivals) gives it, else `latest`."""
    if arrival is None:
        return np.full(len(users), latest, np.float64)
    if not isinstance(arrival, tuple):
        return np.full(len(users), arrival, np.float64)
    ids, times = arrival
    out = np.full(len(users), latest, np.float64)
    index = users.index(ids) if len(ids) else np.zeros(0, np.int64)
    out[index[index != UNKNOWN]] = times[index != UNKNOWN]
    return out


def _arrivals(at):
    """`at` (see MetaRecommender.arriving_at) in the form serving reads chunk after chunk: None, Unix seconds,
    or for a mapping, (user ids, their seconds) as arrays."""
    if at is None:
        return None
    if not (hasattr(at, "items") and callable(at.items)):
        return _seconds(at)
    pairs = dict(at.items())  # a dict or a pandas Series: user id -> time
    values = list(pairs.values())
    seconds = all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in values)
    times = np.asarray(values if seconds else [_seconds(t) for t in values], np.float64)  # seconds: one conversion
    return np.asarray(list(pairs)), times


def _seconds(t) -> float:
    """A time as Unix seconds: a number is taken as seconds; a datetime, date or ISO text is converted (UTC
    unless it says otherwise)."""
    import datetime as dt

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


def _pairs_only(names: Columns) -> Columns:
    """The user and item columns of `names`, for tables of (user, item) rows (candidates, pairs)."""
    return Columns(user=names.user, item=names.item, rating=None, timestamp=None)


def _column_names(names: Columns) -> dict:
    """What the model remembers of the warm log's columns (saved in its metadata)."""
    return {"user": names.user, "item": names.item, "rating": names.rating, "timestamp": names.timestamp}


def _map_ids(target: Vocabulary, source: Vocabulary, idx: np.ndarray) -> np.ndarray:
    """`target`'s indices of the ids `source.ids[idx]`, looked up once per distinct id when `source` is the
    smaller (the usual history: many rows per id; string lookups are the costly part), else once per row."""
    if len(source) < len(idx):
        return target.index(source.ids)[idx]
    return target.index(source.lookup(idx))


def _candidates_for(user_ids: np.ndarray, cand: ColdUsers) -> tuple[torch.Tensor, torch.Tensor]:
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


def _ranked(user_ids: np.ndarray, items: torch.Tensor, values: torch.Tensor, vocab: Vocabulary) -> RankedLists:
    valid = valid_entries(values).numpy()
    rank = np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)
    users = np.broadcast_to(user_ids[:, None], items.shape)
    return RankedLists(users[valid], vocab.lookup(items.numpy()[valid]), values.numpy()[valid], rank[valid])


def _init_rating_biases(model: Scorer, warm: Interactions, damping: float = 5.0) -> None:
    """Start the rating scorer at 'global mean + damped item mean deviation': meta-learning then refines
    a sensible predictor instead of spending its first epochs walking the biases to the rating scale."""
    mean = float(warm.rating.mean())
    sums = np.bincount(warm.item_idx, weights=warm.rating - mean, minlength=warm.n_items)
    counts = np.bincount(warm.item_idx, minlength=warm.n_items)
    with torch.no_grad():
        model.global_bias.fill_(mean)
        model.item_bias.copy_(torch.from_numpy((sums / (counts + damping)).astype(np.float32)))


def _check_model_fits_in_memory(config: Config, n_items: int) -> None:
    """Refuse, before any allocation, a model whose item tables (weights, gradients and Adam's two moments)
    would not fit in this machine's memory: a mistyped model.embedding_dim would otherwise take minutes to
    fail deep inside torch."""
    import os

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    m = config.model
    per_item = m.embedding_dim + m.support_encoder + 1 + m.item_knn
    needed = 4 * 4 * n_items * per_item  # float32 x (weights, gradients, two Adam moments)
    if needed > memory:
        raise ConfigError(f"model.embedding_dim = {m.embedding_dim} (with support_encoder = {m.support_encoder}) "
                          f"needs about {needed / 2**30:.0f} GiB for {n_items:,} items, more than this machine's "
                          f"{memory / 2**30:.0f} GiB; use a smaller width (64 is the default)")


def resolve_for_log(config: Config, warm: Interactions) -> Config:
    """The config with its log-derived settings made concrete (saved with the model, so it says what was
    used): tasks.positive_threshold = 'auto' becomes the log's relevant rating (None for the rating
    objective, whose query is every rating, and for logs without ratings); meta.epochs and meta.patience
    = 'auto' become counts that follow the number of training users (recmaml.meta.training_length)."""
    if config.model.time_prior and (warm.timestamp is None or config.model.objective == "rating"):
        # nothing to date the log's popularity by; and a rating is no popularity contest
        config = config.replace(model={"time_prior": False})
    if config.model.history_kind and warm.timestamp is None:  # every task a random one: no kind to tell apart
        config = config.replace(model={"history_kind": False})
    if config.serve.history_kind == "auto":  # a real new user shows its first interactions, when they are known
        config = config.replace(serve={"history_kind": "first" if warm.timestamp is not None else "sample"})
    if config.tasks.positive_threshold == "auto":
        threshold = None if config.model.objective == "rating" else relevant_rating(warm.rating)
        config = config.replace(tasks={"positive_threshold": threshold})
    threshold = config.tasks.positive_threshold
    if (config.model.objective == "implicit" and isinstance(threshold, (int, float)) and warm.rating is not None
            and len(warm.rating) and not (warm.rating >= threshold).any()):
        raise ConfigError(f"tasks.positive_threshold = {threshold} leaves no positive interaction: the warm log's "
                          f"ratings lie in [{float(warm.rating.min()):g}, {float(warm.rating.max()):g}]; use 'auto' "
                          "(the log's own scale) or a rating in that range")
    if "auto" in (config.meta.epochs, config.meta.patience):
        train_users, _ = split_users(warm, config.tasks.validation_users, config.meta.seed)
        meta = training_length(config.meta, len(train_users))
        config = config.replace(meta={"epochs": meta.epochs, "patience": meta.patience})
    return config


def _init_popularity_biases(model: Scorer, warm: Interactions) -> None:
    """Start the implicit scorer's item biases at the log of each item's warm count (plus one), centred:
    the softmax of the start then ranks by popularity, the best a user with no history can get before
    meta-learning refines it, instead of an arbitrary order that puts obscure items first."""
    counts = np.bincount(warm.item_idx, minlength=warm.n_items).astype(np.float64)
    log_counts = np.log1p(counts)
    with torch.no_grad():
        model.item_bias.copy_(torch.from_numpy((log_counts - log_counts.mean()).astype(np.float32)))


def _item_knn_table(warm: Interactions, config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, weight) of each item's model.item_knn cosine neighbours on the warm log (its positives
    only, by tasks.positive_threshold), padded with weight 0: what model.item_knn adds to the scores."""
    from recmaml.baselines import ItemKNN

    m = config.model.item_knn
    if config.model.item_item == "ease":
        from recmaml.priors import ease_table

        index, weight = ease_table(warm, config.tasks.positive_threshold, config.model.item_item_lam, neighbors=m)
        pad = m - index.shape[1]  # a catalog smaller than m + 1 items
        return (torch.from_numpy(np.pad(index.astype(np.int64), ((0, 0), (0, pad)))),
                torch.from_numpy(np.pad(weight, ((0, 0), (0, pad)))))
    W = ItemKNN(neighbors=m, shrink=config.model.item_knn_shrink,
                threshold=config.tasks.positive_threshold).fit(warm).W.tocsr()  # resolved: a rating or None
    counts = np.diff(W.indptr)
    rows = np.repeat(np.arange(W.shape[0]), counts)
    slots = np.arange(len(rows)) - np.repeat(W.indptr[:-1], counts)
    index = np.zeros((W.shape[0], m), np.int64)
    weight = np.zeros((W.shape[0], m), np.float32)
    index[rows, slots], weight[rows, slots] = W.indices, W.data
    return torch.from_numpy(index), torch.from_numpy(weight)


def _time_table(warm: Interactions, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """model.time_prior's table: TIME_EDGES quantiles of the warm log's timestamps and the cumulative count of
    each item's positives (tasks.positive_threshold) up to each (recmaml.priors.time_table)."""
    from recmaml.priors import time_table

    return time_table(warm, config.tasks.positive_threshold, TIME_EDGES)


def _als_item_factors(warm: Interactions, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, factors) of an implicit ALS model fitted on the warm log, as wide as the embeddings."""
    from recmaml.baselines import ALSFoldIn

    als = ALSFoldIn(factors=config.model.embedding_dim, regularization=config.model.als_regularization,
                    seed=config.meta.seed).fit(warm)
    return warm.items.ids, np.asarray(als.model.item_factors)


def _init_item_embeddings(model: Scorer, items: Vocabulary, item_ids, factors) -> None:
    """Copy given item factors into the item embeddings (matched by item id), rescaled to the
    embeddings' initial scale so that the meta-learning rates keep their meaning."""
    factors = np.asarray(factors, dtype=np.float32)
    d = model.item_embedding.weight.shape[1]
    if factors.ndim != 2 or factors.shape[1] != d or len(factors) != len(item_ids):
        raise DataError(f"item_factors must be (n_items, {d}) with one id per row, got {factors.shape} "
                        f"for {len(item_ids)} ids; set model.embedding_dim to the factor count")
    rows = items.index(item_ids)
    known = rows != UNKNOWN
    scale = model.cfg.init_std / max(float(factors[known].std()), 1e-12)
    with torch.no_grad():
        model.item_embedding.weight[torch.as_tensor(rows[known], dtype=torch.long)] = torch.from_numpy(factors[known] * scale)
