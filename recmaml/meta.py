"""The outer loop: MAML (second-order), first-order MAML, Meta-SGD and head-only adaptation, with early
stopping on validation users. One meta-step adapts a meta-batch of users on their support sets (one
batched computation) and moves the shared initial weights to lower the loss on their query sets."""

from __future__ import annotations

import copy
import enum
import math
import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from recmaml import distributed, resume
from recmaml.adapt import adapt, adapted_names, batched_loss, batched_scores, meta_lr_key
from recmaml.config import Config, MetaConfig
from recmaml.data import Interactions, json_ready
from recmaml.errors import RecMamlError
from recmaml.model import META_LR_PREFIX
from recmaml.metrics import mean_metrics, ranking_metrics, rmse
from recmaml.rank import exclude_items, top_k
from recmaml.threads import serving_threads, torch_threads
from recmaml.tasks import TaskBatch, TaskSampler, split_users

log = logging.getLogger(__name__)


class Stop(enum.StrEnum):
    """Why meta-training ended; each value is also how it is said and saved ('early stopping')."""

    EPOCHS = "epochs"  # ran all meta.epochs
    EARLY = "early stopping"  # validation had not improved for meta.patience epochs
    TIME = "time budget"  # meta.max_seconds ran out


@dataclass
class TrainHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = float("-inf")  # higher is better: nDCG@20, or minus the RMSE of a rating model
    stopped: Stop = Stop.EPOCHS
    seconds: float = 0.0
    max_epochs: int = 0  # meta.epochs
    patience: int = 0  # meta.patience
    max_seconds: float = 0.0  # meta.max_seconds
    metric: str = "nDCG@20"  # what the validation figures measure: 'nDCG@20' or 'RMSE'
    validation_users: int = 0  # how many users judged the epochs (0: tasks.validation_users = 0)

    def to_dict(self) -> dict:
        """JSON-ready: every epoch's record, the best epoch and its validation figure (None without
        validation users), why training stopped (and in words), the seconds and the metric's name."""
        best = self.validation(self.best_score) if self.best_epoch >= 1 else None
        return json_ready({"epochs": self.epochs, "best_epoch": self.best_epoch if self.best_epoch >= 1 else None,
                           "best_validation": best, "metric": self.metric, "stopped": str(self.stopped),
                           "summary": self.summary(), "seconds": self.seconds})

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint's record of this history (recmaml.resume saves it)."""
        self.epochs = list(saved["epochs"])
        self.best_epoch, self.best_score = int(saved["best_epoch"]), float(saved["best_score"])
        self.stopped = Stop(saved["stopped"])

    def validation(self, score: float) -> float:
        """A validation score as the metric reads (an RMSE is kept negated so that higher is better)."""
        return -score if self.metric == "RMSE" else score

    def stop_reason(self) -> str:
        """Why training ended, in words: 'ran all 60 epochs', 'stopped early at epoch 53 of 60: ...'."""
        done = len(self.epochs)
        if self.stopped == Stop.EARLY:
            return (f"stopped early at epoch {done} of {self.max_epochs}: validation {self.metric} had not improved "
                    f"for {self.patience} epochs (meta.patience)")
        if self.stopped == Stop.TIME:
            return f"stopped at epoch {done} of {self.max_epochs}: the time budget of {self.max_seconds:g} s (meta.max_seconds) ran out"
        return f"ran all {done} epochs (meta.epochs)"

    def summary(self) -> str:
        """One line: the stop reason and the best validation figure."""
        if self.validation_users == 0:
            return self.stop_reason() + "; no validation users (tasks.validation_users = 0), the last weights kept"
        if self.best_epoch < 1:  # validation users, but not one figure to judge by
            return (f"{self.stop_reason()}; validation {self.metric} of the {self.validation_users} validation users "
                    "was never a number (none has rows beyond its tasks.validation_support revealed ones to score), "
                    "the last weights kept")
        return (f"{self.stop_reason()}; best validation {self.metric} {self.validation(self.best_score):.4f} at "
                f"epoch {self.best_epoch}, whose weights are kept")


def enable_meta_sgd(model: nn.Module, names: list[str], inner_lr: float) -> None:
    """Give the model learnable per-parameter inner learning rates (Meta-SGD, Li et al. 2017)."""
    params = dict(model.named_parameters())
    model.meta_lrs = nn.ParameterDict(
        {meta_lr_key(n): nn.Parameter(torch.full_like(params[n], inner_lr)) for n in names}
    )


def meta_loss(model: nn.Module, batch: TaskBatch, cfg: Config, names: list[str],
              users_in_batch: torch.Tensor | None = None) -> torch.Tensor:
    """Mean query loss after adapting on the support, over users that have a query. users_in_batch: the
    divisor when `batch` is one gradient group of a larger batch (that batch's users that have a query)."""
    fast = adapt(model, batch.support(), names=names, steps=cfg.meta.inner_steps,
                 inner_lr=cfg.meta.inner_lr, first_order=cfg.meta.method == "fomaml", reduction=cfg.meta.support_reduction)
    losses = batched_loss(model, fast, batch.query())
    has_query = (batch.query_mask.sum(dim=1) > 0).float()
    divisor = has_query.sum().clamp(min=1.0) if users_in_batch is None else users_in_batch
    return (losses * has_query).sum() / divisor


def batch_gradient(model: nn.Module, batch: TaskBatch, cfg: Config, names: list[str], rank: int = 0,
                   size: int = 1) -> float:
    """Set the parameters' .grad to the gradient of the batch's mean meta-loss and return that loss.

    The batch's users are cut into meta.gradient_groups fixed groups (user i in group i mod groups); each
    group's gradient is taken on its own (its loss divided by the whole batch's users), and the groups'
    gradients are added in group order. One process takes every group; N ranks take groups r, r + N, ...,
    put them in a (groups x parameters) table that is zero elsewhere and sum the table over the ranks
    (x + 0 is exact in floating point), then add its rows in the same order: the same operations on the
    same numbers, so N ranks make the one-process meta-update bit for bit. A parameter no group reached
    keeps no gradient (the optimizer skips it, weight decay included)."""
    groups = cfg.meta.gradient_groups
    params = [p for p in model.parameters() if p.requires_grad]
    users_in_batch = (batch.query_mask.sum(dim=1) > 0).float().sum().clamp(min=1.0)
    grads, losses = [None] * len(params), [0.0] * groups
    table = None if size == 1 else distributed.GroupTable(groups, params)
    for group in range(rank, groups, size):
        share = batch.rows(slice(group, None, groups))
        if len(share) == 0:  # a last batch with fewer users than groups: this group adds nothing
            continue
        loss = meta_loss(model, share, cfg, names, users_in_batch=users_in_batch)
        group_grads = torch.autograd.grad(loss, params, allow_unused=True)
        losses[group] = float(loss.detach())
        if table is not None:
            table.put(group, group_grads, losses[group])
            continue
        for i, grad in enumerate(group_grads):  # in group order: the rows' sum of the ranks' table below
            if grad is not None:
                grads[i] = grad if grads[i] is None else grads[i] + grad
    if table is not None:
        grads, losses = table.summed_over_ranks()
    for p, grad in zip(params, grads):  # a copy: autograd may hand two parameters one tensor, which
        # clipping would then scale twice in place (the ranks' table gives each its own already)
        p.grad = None if grad is None else grad.clone(memory_format=torch.contiguous_format)
    return sum(losses)


def validation_score(model: nn.Module, batch: TaskBatch, cfg: Config, names: list[str], k: int = 20) -> float:
    """Higher is better: nDCG@k of the query (implicit) or minus the query RMSE (rating)."""
    with torch.no_grad():  # torch.func.grad still differentiates inside; no graph to the meta-weights
        fast = adapt(model, batch.support(), names=names, steps=cfg.meta.inner_steps,
                     inner_lr=cfg.meta.inner_lr, first_order=True, reduction=cfg.meta.support_reduction)
        if cfg.model.objective == "rating":
            pred = batched_scores(model, fast, batch.user_feats, batch.query_items)
            keep = batch.query_mask > 0
            return -rmse(pred[keep].cpu().numpy(), batch.query_ratings[keep].cpu().numpy())
        scores = batched_scores(model, fast, batch.user_feats)
        items, _ = top_k(exclude_items(scores, batch.support_items, batch.support_mask), k)
        per_user = ranking_metrics(items.cpu().numpy(), batch.query_items.cpu().numpy(), batch.query_mask.cpu().numpy(), k)
        return mean_metrics(per_user)[f"ndcg@{k}"]


AUTO_OUTER_STEPS = 6000
"""Outer steps that meta.epochs = 'auto' aims at: on small logs (ML-100K, ml-latest-small, FilmTrust: under
ten steps an epoch) the 300-epoch cap binds and early stopping ends training (ML-100K: about 100 epochs,
30 s here); on CiaoDVD (about 100 steps an epoch) it gives 60 epochs, about 5 minutes on 2 cores, where
longer training had stopped paying (benchmarks/EXPERIMENTS.md: 300 s, 49 epochs, scored no better than 60 s)."""


def training_length(meta: MetaConfig, n_train_users: int) -> MetaConfig:
    """meta with 'auto' epochs and patience made concrete for a log whose training users number
    `n_train_users`: epochs = AUTO_OUTER_STEPS / (steps per epoch), within [10, 300]; patience = a seventh
    of the epochs (at least 3). Large logs get fewer, longer epochs; the same number of outer steps."""
    steps_per_epoch = max(1, math.ceil(n_train_users / meta.meta_batch_size))
    epochs = meta.epochs
    if epochs == "auto":
        epochs = min(300, max(10, math.ceil(AUTO_OUTER_STEPS / steps_per_epoch)))
    patience = meta.patience
    if patience == "auto":
        patience = max(3, epochs // 7)
    return replace(meta, epochs=epochs, patience=patience)


def meta_train(model: nn.Module, log_: Interactions, cfg: Config, user_feats: dict[str, torch.Tensor],
               progress=None, checkpoint: resume.EpochCheckpoint | None = None,
               split: tuple[np.ndarray, np.ndarray] | None = None) -> TrainHistory:
    """Meta-train `model` in place on the warm users of `log_`; the best validation state is kept.

    progress: an optional callable(epoch, metrics) for progress bars (the library never prints).
    checkpoint: where to write a checkpoint after every epoch and, with its `resume`, to continue from one
    (recmaml.resume); None writes none. A resumed run ends with the weights of an uninterrupted one;
    meta.max_seconds counts the training time recorded in the checkpoint, not the time lost to the
    interruption. split: (training users, validation users), as recmaml.build.prepare splits them once;
    None splits them here (tasks.validation_users, meta.seed).

    Training runs on meta.threads torch threads ('auto': the cores free when it starts), then torch's
    setting is restored."""
    threads = serving_threads(cfg.meta.threads)
    if cfg.meta.threads == "auto" and threads < torch.get_num_threads():
        log.info("meta-training on %d torch thread%s: other processes are running on the other cores "
                 "(meta.threads = 'auto'; a number or --threads sets it)", threads, "" if threads == 1 else "s")
    with torch_threads(threads):
        return _meta_train(model, log_, cfg, user_feats, progress, checkpoint, split)


def _meta_train(model: nn.Module, log_: Interactions, cfg: Config, user_feats: dict[str, torch.Tensor],
                progress, checkpoint: resume.EpochCheckpoint | None, split) -> TrainHistory:
    m = cfg.meta
    # taken before Meta-SGD adds its rates: only the data-derived buffers and the config matter
    fingerprint = resume.fingerprint(cfg, log_, user_feats, model) if checkpoint is not None else None
    torch.manual_seed(m.seed)
    names = adapted_names(model, m.adapt)
    if m.method == "metasgd" and getattr(model, META_LR_PREFIX, None) is None:
        enable_meta_sgd(model, names, m.inner_lr)
    model.to(m.device)
    rank, size = distributed.rank_and_size()  # several ranks: each adapts its groups of every meta-batch
    if size > m.gradient_groups:
        raise RecMamlError(f"meta-training on {size} processes needs meta.gradient_groups >= {size} (now "
                           f"{m.gradient_groups}): each process takes whole groups of every meta-batch's users; "
                           f"set it with --set meta.gradient_groups={size}, [meta] gradient_groups = {size} in the "
                           f"config, or load_config(meta={{'gradient_groups': {size}}})")
    if size > 1:
        distributed.broadcast_parameters(model)
    train_users, val_users = split if split is not None else split_users(log_, cfg.tasks.validation_users, m.seed)
    m = training_length(m, len(train_users))  # a no-op for a config that recmaml.build resolved
    sampler = TaskSampler(log_, train_users, cfg.tasks, user_feats, seed=m.seed)
    val_batch = None
    if len(val_users):
        val_cfg = replace(cfg.tasks, query_max=10**9)
        val_batch = TaskSampler(log_, val_users, val_cfg, user_feats, seed=m.seed + 1).tasks(
            val_users, support_size=cfg.tasks.validation_support).to(m.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=m.meta_lr, weight_decay=m.weight_decay)

    # validated and kept in place of the raw weights when meta.ema > 0
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(m.ema)) if m.ema > 0 else None
    history = TrainHistory(max_epochs=m.epochs, patience=m.patience, max_seconds=m.max_seconds,
                           metric="RMSE" if cfg.model.objective == "rating" else "nDCG@20",
                           validation_users=len(val_users))
    best_state = None
    elapsed, finished = 0.0, False  # a resumed run starts with the training time and state it had
    if checkpoint is not None and checkpoint.resume:
        restored = resume.restore(checkpoint, fingerprint, model=model, optimizer=optimizer, ema=ema,
                                  sampler=sampler, history=history, device=m.device)
        if restored is not None:
            best_state, elapsed, finished = restored
    start = time.perf_counter() - elapsed
    for epoch in range(len(history.epochs), 0 if finished else m.epochs):
        model.train()
        losses = []
        for batch in sampler.epoch(m.meta_batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_value = batch_gradient(model, batch.to(m.device), cfg, names, rank, size)
            if not np.isfinite(loss_value):
                raise RecMamlError(
                    f"meta-training diverged at epoch {epoch + 1} (meta-loss {loss_value}); lower meta.inner_lr "
                    f"(now {m.inner_lr}), meta.inner_steps (now {m.inner_steps}) or meta.meta_lr (now {m.meta_lr})")
            if m.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), m.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss_value)
        record = {"epoch": epoch + 1, "of": m.epochs, "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - start}
        if val_batch is not None:
            judged = model if ema is None else ema.module
            judged.eval()
            record["validation"] = validation_score(judged, val_batch, cfg, names)
            if size > 1:  # the ranks hold the same weights; rank 0's figure decides for all of them
                record["validation"] = distributed.from_rank_zero(record["validation"], m.device)
            record["metric"], record["metric_value"] = history.metric, history.validation(record["validation"])
            if np.isfinite(record["validation"]) and record["validation"] > history.best_score:
                history.best_score, history.best_epoch = record["validation"], epoch + 1
                best_state = copy.deepcopy(judged.state_dict())
        history.epochs.append(record)
        log.debug("epoch %d: %s", epoch + 1, record)
        if progress is not None:
            progress(epoch + 1, record)
        if val_batch is not None and m.patience and epoch + 1 - history.best_epoch >= m.patience:
            history.stopped = Stop.EARLY
        else:
            out_of_time = bool(m.max_seconds) and time.perf_counter() - start >= m.max_seconds
            if size > 1:  # clocks differ between ranks: rank 0's decides
                out_of_time = bool(distributed.from_rank_zero(float(out_of_time), m.device))
            if out_of_time:
                history.stopped = Stop.TIME
        stop = history.stopped != Stop.EPOCHS
        if checkpoint is not None and rank == 0:  # the ranks hold the same state: one writes it
            resume.save(checkpoint, model=model, optimizer=optimizer, ema=ema, best_state=best_state,
                        sampler=sampler, history=history, elapsed=time.perf_counter() - start,
                        finished=stop or epoch + 1 == m.epochs, fingerprint=fingerprint, device=m.device)
        if stop:
            break
    if best_state is None and ema is not None:  # no validation users: keep the averaged weights
        best_state = ema.module.state_dict()
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history
