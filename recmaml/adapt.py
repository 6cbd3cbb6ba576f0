"""The inner loop: every user of a batch adapted in one batched computation (torch.func: functional_call +
grad + vmap over padded tasks). A pure function: it returns fast weights and never changes the model.

Fast weights are a dict {parameter name: tensor of shape (B, *parameter shape)}, one slice per user, for
the adapted parameters only; every other parameter is shared by all users. Which parameters adapt is the
scorer's to name (Scorer.PARAMETER_GROUPS). Serving's closed-form shortcut for user-side adaptation is
recmaml.fast_adapt.fast_user_vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from recmaml.errors import ConfigError
from recmaml.model import META_LR_PREFIX
from recmaml.tasks import PaddedSet

_SKIP_PENALTY = -1e9  # added to the scores of items a loss must skip (finite, so gradients stay finite)


def adapted_names(model: nn.Module, adapt: str) -> list[str]:
    """Names of the parameters the inner loop changes: one of the model's PARAMETER_GROUPS (the scorer
    names its own parameters; this loop never does), or comma-separated name prefixes."""
    groups = getattr(model, "PARAMETER_GROUPS", {})
    prefixes = groups.get(adapt) or tuple(p.strip() for p in adapt.split(",") if p.strip())
    if not prefixes:
        raise ConfigError(f"meta.adapt = {adapt!r}; use one of {list(groups)} or comma-separated parameter names")
    names = [
        n for n, _ in model.named_parameters()
        if not n.startswith(META_LR_PREFIX) and any(n == p or n.startswith(p) for p in prefixes)
    ]
    if not names:
        valid = [n for n, _ in model.named_parameters() if not n.startswith(META_LR_PREFIX)]
        raise ConfigError(f"meta.adapt = {adapt!r} matches no parameter; parameter names: {valid}")
    return names


def meta_lr_key(name: str) -> str:
    return name.replace(".", "__")


def task_loss(model: nn.Module, params: dict[str, torch.Tensor], data: dict, objective: str, loss: str,
              reduction: str = "mean") -> torch.Tensor:
    """The loss of one user's task (support or query) under `params`. `data` is one user's slice of a
    PaddedSet.tree() (what vmap hands each user).

    reduction 'mean' averages over the set; 'sum' adds up, so that an inner step moves a user further
    the more evidence it shows (as a ridge-regression fold-in would).

    Implicit objective: a row labelled -w (a dislike, data["labels"]; recmaml.tasks.dislike_labels) counts
    against its item with weight w: the softmax's -log p of a like becomes +w log p (its score pushed down,
    the exact mirror of a like's gradient), the sampled softmax's and BPR's terms are mirrored the same way."""
    mask = data["mask"]
    n = mask.sum().clamp(min=1.0) if reduction == "mean" else mask.new_ones(())
    if objective == "rating":
        pred = functional_call(model, params, (data["user_feats"], data["items"]))
        return ((pred - data["ratings"]) ** 2 * mask).sum() / n

    labels = data.get("labels", mask)  # 1 a like, -w a dislike, 0 padding
    if reduction == "mean":  # a dislike left out (weight 0) is not part of the set the mean is over
        n = (labels != 0).to(mask.dtype).sum().clamp(min=1.0)
    if data["negatives"].shape[-1] == 0:  # exact softmax over the whole catalog
        scores = functional_call(model, params, (data["user_feats"],))
        if "exclude" in data:  # items the user already showed are not candidates of the query ranking
            scores = scores.scatter_add(0, data["exclude"], _SKIP_PENALTY * data["exclude_mask"])
        logp = torch.log_softmax(scores, dim=0)
        return -(logp[data["items"]] * labels).sum() / n

    pos = functional_call(model, params, (data["user_feats"], data["items"]))
    neg = functional_call(model, params, (data["user_feats"], data["negatives"]))
    neg = torch.where(data["negative_mask"] > 0, neg, torch.full_like(neg, _SKIP_PENALTY))
    sign, weight = torch.sign(labels), labels.abs()  # a dislike: its term mirrored (pos and negatives swapped)
    if loss == "bpr":
        pair_mask = weight[:, None] * data["negative_mask"][None, :]
        margins = sign[:, None] * (neg[None, :] - pos[:, None])
        return (F.softplus(margins) * pair_mask).sum() / (pair_mask != 0).to(mask.dtype).sum().clamp(min=1.0)
    # sampled softmax with logQ correction: each positive against the user's shared negatives
    lse = torch.logsumexp(neg - data["negative_logq"], dim=0)
    return (F.softplus(sign * (lse - pos)) * weight).sum() / n


def split_params(model: nn.Module, names: list[str]) -> tuple[dict, dict]:
    """(adapted parameters, everything else: shared parameters and buffers)."""
    params = dict(model.named_parameters())
    adapted = {n: params[n] for n in names}
    shared = {n: p for n, p in params.items() if n not in adapted}
    shared.update(dict(model.named_buffers()))
    return adapted, shared


def adapt(
    model: nn.Module,
    support: PaddedSet,
    *,
    names: list[str],
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    reduction: str = "mean",
    lr_scale: float | torch.Tensor = 1.0,
) -> dict[str, torch.Tensor]:
    """Fast weights of every user in `support` (one padded set per user: TaskBatch.support(), or serving's).

    With first_order=False the result stays differentiable through the inner steps (second-order MAML);
    with first_order=True the inner gradients are treated as constants.
    Meta-SGD: if the model has a `meta_lrs` ParameterDict, its entries are the per-parameter inner rates.
    lr_scale multiplies every rate: one multiplier, or one per user (B,) (serving's per-size scales).
    """
    adapted, shared = split_params(model, names)
    batch = len(support)
    if steps == 0:
        return {n: p.unsqueeze(0).expand(batch, *p.shape) for n, p in adapted.items()}
    meta_lrs = getattr(model, META_LR_PREFIX, None)
    rates = {n: (meta_lrs[meta_lr_key(n)] if meta_lrs is not None else inner_lr) for n in names}
    scales = torch.as_tensor(lr_scale, dtype=torch.float32, device=support.items.device).expand(batch)
    cfg = model.cfg

    def support_loss(fast: dict, data: dict) -> torch.Tensor:
        return task_loss(model, {**shared, **fast}, data, cfg.objective, cfg.loss, reduction)

    def one_user(fast: dict, data: dict, scale: torch.Tensor) -> dict:
        for _ in range(steps):
            grads = grad(support_loss)(fast, data)
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: fast[n] - scale * rates[n] * grads[n] for n in fast}
        return fast

    return vmap(one_user, in_dims=(None, 0, 0))(adapted, support.tree(), scales)


def batched_loss(model: nn.Module, fast: dict[str, torch.Tensor], data: PaddedSet) -> torch.Tensor:
    """Per-user task losses (B,) of padded sets `data` under per-user fast weights."""
    _, shared = split_params(model, list(fast))
    cfg = model.cfg

    def one_user(f: dict, d: dict) -> torch.Tensor:
        return task_loss(model, {**shared, **f}, d, cfg.objective, cfg.loss)

    return vmap(one_user)(fast, data.tree())


def batched_scores(model: nn.Module, fast: dict[str, torch.Tensor], user_feats: dict, items: torch.Tensor | None = None) -> torch.Tensor:
    """Scores (B, n_items), or (B, C) for per-user candidate `items` (B, C), under per-user fast weights."""
    _, shared = split_params(model, list(fast))

    if items is None:
        return vmap(lambda f, u: functional_call(model, {**shared, **f}, (u,)))(fast, user_feats)
    return vmap(lambda f, u, i: functional_call(model, {**shared, **f}, (u, i)))(fast, user_feats, items)
