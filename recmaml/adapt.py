"""The inner loop: every user of a batch adapted in one batched computation (torch.func: functional_call +
grad + vmap over padded tasks). A pure function: it returns fast weights and never changes the model.

Fast weights are a dict {parameter name: tensor of shape (B, *parameter shape)}, one slice per user, for
the adapted parameters only; every other parameter is shared by all users.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from recmaml.config import adapt_prefixes
from recmaml.errors import ConfigError

META_LR_PREFIX = "meta_lrs"  # Meta-SGD's learned inner learning rates: never adapted themselves
_SKIP_PENALTY = -1e9  # added to the scores of items a loss must skip (finite, so gradients stay finite)


def adapted_names(model: nn.Module, adapt: str) -> list[str]:
    """Names of the parameters the inner loop changes, from a preset or comma-separated prefixes."""
    prefixes = adapt_prefixes(adapt)
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
    """The loss of one user's task (support or query) under `params`. `data` holds one user's padded set.

    reduction 'mean' averages over the set; 'sum' adds up, so that an inner step moves a user further
    the more evidence it shows (as a ridge-regression fold-in would)."""
    mask = data["mask"]
    n = mask.sum().clamp(min=1.0) if reduction == "mean" else mask.new_ones(())
    if objective == "rating":
        pred = functional_call(model, params, (data["user_feats"], data["items"]))
        return ((pred - data["ratings"]) ** 2 * mask).sum() / n

    if data["negatives"].shape[-1] == 0:  # exact softmax over the whole catalog
        scores = functional_call(model, params, (data["user_feats"],))
        if "exclude" in data:  # items the user already showed are not candidates of the query ranking
            scores = scores.scatter_add(0, data["exclude"], _SKIP_PENALTY * data["exclude_mask"])
        logp = torch.log_softmax(scores, dim=0)
        return -(logp[data["items"]] * mask).sum() / n

    pos = functional_call(model, params, (data["user_feats"], data["items"]))
    neg = functional_call(model, params, (data["user_feats"], data["negatives"]))
    neg = torch.where(data["negative_mask"] > 0, neg, torch.full_like(neg, _SKIP_PENALTY))
    if loss == "bpr":
        pair_mask = mask[:, None] * data["negative_mask"][None, :]
        return (F.softplus(neg[None, :] - pos[:, None]) * pair_mask).sum() / pair_mask.sum().clamp(min=1.0)
    # sampled softmax with logQ correction: each positive against the user's shared negatives
    lse = torch.logsumexp(neg - data["negative_logq"], dim=0)
    return (F.softplus(lse - pos) * mask).sum() / n


def split_params(model: nn.Module, names: list[str]) -> tuple[dict, dict]:
    """(adapted parameters, everything else: shared parameters and buffers)."""
    params = dict(model.named_parameters())
    adapted = {n: params[n] for n in names}
    shared = {n: p for n, p in params.items() if n not in adapted}
    shared.update(dict(model.named_buffers()))
    return adapted, shared


def adapt(
    model: nn.Module,
    support: dict,
    *,
    names: list[str],
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    reduction: str = "mean",
    lr_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Fast weights of every user in `support` (a batched dict from TaskBatch.support()).

    With first_order=False the result stays differentiable through the inner steps (second-order MAML);
    with first_order=True the inner gradients are treated as constants.
    Meta-SGD: if the model has a `meta_lrs` ParameterDict, its entries are the per-parameter inner rates.
    lr_scale multiplies every rate (serving's serve.inner_lr_scale).
    """
    adapted, shared = split_params(model, names)
    batch = support["items"].shape[0]
    if steps == 0:
        return {n: p.unsqueeze(0).expand(batch, *p.shape) for n, p in adapted.items()}
    meta_lrs = getattr(model, META_LR_PREFIX, None)
    rates = {n: lr_scale * (meta_lrs[meta_lr_key(n)] if meta_lrs is not None else inner_lr) for n in names}
    cfg = model.cfg

    def support_loss(fast: dict, data: dict) -> torch.Tensor:
        return task_loss(model, {**shared, **fast}, data, cfg.objective, cfg.loss, reduction)

    def one_user(fast: dict, data: dict) -> dict:
        for _ in range(steps):
            grads = grad(support_loss)(fast, data)
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {n: fast[n] - rates[n] * grads[n] for n in fast}
        return fast

    return vmap(one_user, in_dims=(None, 0))(adapted, support)


def batched_loss(model: nn.Module, fast: dict[str, torch.Tensor], data: dict) -> torch.Tensor:
    """Per-user task losses (B,) of batched `data` under per-user fast weights."""
    _, shared = split_params(model, list(fast))
    cfg = model.cfg

    def one_user(f: dict, d: dict) -> torch.Tensor:
        return task_loss(model, {**shared, **f}, d, cfg.objective, cfg.loss)

    return vmap(one_user)(fast, data)


def batched_scores(model: nn.Module, fast: dict[str, torch.Tensor], user_feats: dict, items: torch.Tensor | None = None) -> torch.Tensor:
    """Scores (B, n_items), or (B, C) for per-user candidate `items` (B, C), under per-user fast weights."""
    _, shared = split_params(model, list(fast))

    if items is None:
        return vmap(lambda f, u: functional_call(model, {**shared, **f}, (u,)))(fast, user_feats)
    return vmap(lambda f, u, i: functional_call(model, {**shared, **f}, (u, i)))(fast, user_feats, items)


# ---- serving fast path ------------------------------------------------------------------------------
# When only the user side adapts (user_init, user_bias, user_tower layers), each user feeds ONE vector
# through each Linear layer, so an inner step changes that layer by a rank-1 term: W_b = W - lr g_b x_b^T.
# Its output on a new input x' is then W x' + b - lr g_b (x_b . x' + 1), computable for all users with
# plain matrix products and without materializing one weight matrix per user. The result equals adapt()
# + batched_scores() with first_order=True (tests check it); it is what serving uses when it applies.

_USER_SIDE = ("user_init", "user_bias", "user_tower.")


def fast_path_applies(model: nn.Module, names: list[str]) -> bool:
    """True when only user-side parameters adapt, with scalar rates, and every adapted tower bias comes
    with its layer's weight (the rank-1 form below covers exactly that)."""
    biases_alone = any(n.startswith("user_tower.") and n.endswith(".bias") and n[:-4] + "weight" not in names
                       for n in names)
    return (getattr(model, META_LR_PREFIX, None) is None and not biases_alone
            and getattr(model, "knn_scale", None) is None  # the per-user item-kNN term: the general path
            and all(n.startswith(_USER_SIDE) for n in names))


def _tower_forward(model, x, corrections, lr):
    """The user tower on inputs x (B, in), with per-layer rank-k corrections [(g, x_in, has_bias), ...]."""
    pre_acts, inputs = [], []
    h = x
    for i, layer in enumerate(model.user_tower):
        if not isinstance(layer, nn.Linear):
            h = layer(h)
            continue
        inputs.append(h)
        out = F.linear(h, layer.weight, layer.bias)
        for g, x_in, has_bias in corrections.get(i, ()):
            out = out - lr * g * ((x_in * h).sum(dim=1, keepdim=True) + (1.0 if has_bias else 0.0))
        pre_acts.append((i, out))
        h = out
    return h, pre_acts, inputs


class _SameStartLogSumExp(torch.autograd.Function):
    """logsumexp over the catalog of logits u_b @ V^T + b for users who all start an inner step from the
    SAME vector (every user of a model without user features, at the first step): the catalog pass is made
    once, for row 0, and shared. The gradient wrt u_b is that softmax's expected item vector p @ V,
    exactly what autograd would give each user; V and b are constants (serving does not differentiate
    the item side)."""

    @staticmethod
    def forward(ctx, users, item_vectors, item_bias):
        logits = torch.addmv(item_bias, item_vectors, users[0])
        ctx.save_for_backward(torch.softmax(logits, dim=0) @ item_vectors)
        return torch.logsumexp(logits, dim=0).expand(users.shape[0])

    @staticmethod
    def backward(ctx, grad_lse):
        (expected,) = ctx.saved_tensors
        return grad_lse[:, None] * expected, None, None


def _catalog_logsumexp(users, item_vectors, item_bias, same_start: bool) -> torch.Tensor:
    """(B,) logsumexp of every user's catalog logits, differentiable wrt `users`."""
    if same_start:
        return _SameStartLogSumExp.apply(users, item_vectors, item_bias)
    return torch.logsumexp(torch.addmm(item_bias, users, item_vectors.T), dim=1)


def fast_user_vectors(model: nn.Module, support: dict, *, names: list[str], steps: int, inner_lr: float,
                      reduction: str = "mean", item_vectors: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapted user vectors (B, d) and user biases (B,) after `steps` first-order inner steps.
    item_vectors: the catalog's item tower outputs, when the caller has them already (serving scores
    with the same vectors: computing them once saves a pass over the catalog)."""
    cfg = model.cfg
    batch = support["items"].shape[0]
    feats = model.user_inputs(support["user_feats"])  # side features and the support's set encoding
    user_init = model.user_init.detach().expand(batch, -1).clone()
    user_bias = model.user_bias.detach().expand(batch).clone()
    adapted_layers = {i: f"user_tower.{i}.bias" in names for i, layer in enumerate(model.user_tower)
                      if isinstance(layer, nn.Linear) and f"user_tower.{i}.weight" in names}
    item_vectors = model.catalog_vectors() if item_vectors is None else item_vectors
    item_bias = model.item_bias
    mask = support["mask"]
    n = mask.sum(dim=1).clamp(min=1.0) if reduction == "mean" else mask.new_ones(batch)
    corrections: dict[int, list] = {}

    def tower(ui):
        x = ui if feats is None else torch.cat([ui, feats], dim=1)
        return _tower_forward(model, x, corrections, inner_lr)

    for step in range(steps):
        with torch.enable_grad():
            ui = user_init.requires_grad_(True)
            ub = user_bias.requires_grad_(True)
            u, pre_acts, inputs = tower(ui)
            if cfg.objective == "rating":
                v = item_vectors[support["items"]]  # (B, S, d)
                pred = (v @ u.unsqueeze(2)).squeeze(2) + item_bias[support["items"]] + ub[:, None] + model.global_bias
                losses = ((pred - support["ratings"]) ** 2 * mask).sum(dim=1) / n
            else:  # -mean log softmax at the support items = (rows / n) * logsumexp - mean support logit
                v = item_vectors[support["items"]]  # (B, S, d)
                logits = (v @ u.unsqueeze(2)).squeeze(2) + item_bias[support["items"]]
                same_start = step == 0 and feats is None  # user_init is shared; user inputs would differ
                lse = _catalog_logsumexp(u, item_vectors.detach(), item_bias.detach(), same_start)
                losses = (mask.sum(dim=1) / n) * lse - (logits * mask).sum(dim=1) / n
            wanted = [ui, ub] + [out for i, out in pre_acts if i in adapted_layers]
            grads = torch.autograd.grad(losses.sum(), wanted, allow_unused=True)  # users are independent
        g_ui, g_ub, g_layers = grads[0], grads[1], grads[2:]
        x_ins = [x for (i, _), x in zip(pre_acts, inputs) if i in adapted_layers]
        for (i, has_bias), g, x_in in zip(adapted_layers.items(), g_layers, x_ins):
            corrections.setdefault(i, []).append((g.detach(), x_in.detach(), has_bias))
        user_init = user_init.detach() - (inner_lr * g_ui if "user_init" in names and g_ui is not None else 0.0)
        user_bias = user_bias.detach() - (inner_lr * g_ub if "user_bias" in names and g_ub is not None else 0.0)
    with torch.no_grad():
        u, _, _ = tower(user_init.detach())
    return u, user_bias.detach()
