"""Serving's fast path: every cold user adapted in one batched computation when only the user side adapts.

When only user_init, user_bias and the user tower's layers adapt, each user feeds ONE vector through each
Linear layer, so an inner step changes that layer by a rank-1 term: W_b = W - lr g_b x_b^T. Its output on a
new input x' is then W x' + b - lr g_b (x_b . x' + 1), computable for all users with plain matrix products
and without materializing one weight matrix per user. The result equals recmaml.adapt.adapt() +
batched_scores() with first_order=True (tests check it); it is what serving uses when it applies.
"""

from __future__ import annotations

import torch
from torch import nn

from recmaml.model import META_LR_PREFIX, Scorer
from recmaml.ordered import item_dots, rows_mm


class _RowsLinear(torch.autograd.Function):
    """x @ weight^T + bias through rows_mm, differentiable wrt x only (serving adapts user inputs and
    layer outputs, never the shared weights): its gradient is another fixed-shape product."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return rows_mm(x, weight.T, bias)

    @staticmethod
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        return rows_mm(grad_out, weight), None, None


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 1) row-wise dot products: a reduction over the fixed width only, the same order in any batch."""
    return (a * b).sum(dim=1, keepdim=True)


def fast_path_applies(model: nn.Module, names: list[str]) -> bool:
    """True when only user-side parameters adapt, with scalar rates, and every adapted tower bias comes
    with its layer's weight (the rank-1 form below covers exactly that)."""
    biases_alone = any(n.startswith("user_tower.") and n.endswith(".bias") and n[:-4] + "weight" not in names
                       for n in names)
    return (getattr(model, META_LR_PREFIX, None) is None and not biases_alone
            and getattr(model, "knn_scale", None) is None  # the per-user item-kNN term: the general path
            and getattr(model, "time_scale", None) is None  # the per-user time prior: the general path
            and all(n.startswith(Scorer.USER_SIDE) for n in names))


def _tower_forward(model, x, corrections, lr):
    """The user tower on inputs x (B, in), with per-layer rank-k corrections [(g, x_in, has_bias), ...]."""
    pre_acts, inputs = [], []
    h = x
    for i, layer in enumerate(model.user_tower):
        if not isinstance(layer, nn.Linear):
            h = layer(h)
            continue
        inputs.append(h)
        weight, bias = layer.weight.detach(), layer.bias.detach()
        # the same product either way; the autograd Function only where a gradient is taken (the inner
        # steps): in the last pass its bookkeeping is pure overhead, which a one-user call feels
        out = _RowsLinear.apply(h, weight, bias) if torch.is_grad_enabled() else rows_mm(h, weight.T, bias)
        for g, x_in, has_bias in corrections.get(i, ()):
            out = out - lr * g * (_row_dot(x_in, h) + (1.0 if has_bias else 0.0))
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


class _CatalogLogSumExp(torch.autograd.Function):
    """logsumexp over the catalog of every user's logits u_b @ V^T + b, with the exponentials made once (one
    exp pass, in place) and kept for the gradient (p_b @ V with p_b = exp_b / total_b: the product is made
    with exp_b and each row scaled by grad_b / total_b after it, so no second (B, N) array and no division
    pass). Autograd's logsumexp would exponentiate twice and keep the logits; on serving's (4096 x 10,000)
    batches the exp passes cost about as much as the matmuls. The (B, N) array keeps rows_mm's padding
    rows, so the two products that read it do not copy it to pad it again."""

    @staticmethod
    def forward(ctx, users, item_vectors, item_bias):
        rows = users.shape[0]
        exps = rows_mm(users, item_vectors.T, item_bias, padded=True)
        peak = exps.amax(dim=1, keepdim=True)
        exps.sub_(peak).exp_()
        # the row sums as a product too: torch's reductions split a long row between threads when
        # the batch is small, which changes the order of the sum
        total = rows_mm(exps, exps.new_ones(exps.shape[1], 1))[:rows]
        ctx.save_for_backward(exps, total, item_vectors)
        return (peak[:rows] + total.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad_lse):
        exps, total, item_vectors = ctx.saved_tensors
        return rows_mm(exps, item_vectors)[:total.shape[0]] * (grad_lse[:, None] / total), None, None


def catalog_logsumexp(users, item_vectors, item_bias, same_start: bool) -> torch.Tensor:
    """(B,) logsumexp of every user's catalog logits, differentiable wrt `users`."""
    if same_start:
        return _SameStartLogSumExp.apply(users, item_vectors, item_bias)
    return _CatalogLogSumExp.apply(users, item_vectors, item_bias)


def fast_user_vectors(model: nn.Module, support, *, names: list[str], steps: int, inner_lr: float | torch.Tensor,
                      reduction: str = "mean", item_vectors: torch.Tensor | None = None, kind: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapted user vectors (B, d) and user biases (B,) after `steps` first-order inner steps.
    inner_lr: one rate, or one per user (B,) (serving's per-size scales; 0 leaves a user at its start).
    item_vectors: the catalog's item tower outputs, when the caller has them already (serving scores
    with the same vectors: computing them once saves a pass over the catalog). kind: the history kind
    every user of the batch shows (0 'first', 1 'sample'), for a model conditioned on it."""
    cfg = model.cfg
    batch = len(support)
    feats = model.user_inputs(support.user_feats)  # side features and the support's set encoding
    user_init = model.user_init.detach().expand(batch, -1).clone()
    user_bias = model.user_bias.detach().expand(batch).clone()
    adapted_layers = {i: f"user_tower.{i}.bias" in names for i, layer in enumerate(model.user_tower)
                      if isinstance(layer, nn.Linear) and f"user_tower.{i}.weight" in names}
    item_vectors = model.catalog_vectors() if item_vectors is None else item_vectors
    if kind is None and model.kind_bias is not None:  # the batch's one kind (serving serves one at a time)
        kinds = support.user_feats["history_kind"].unique()
        if len(kinds) > 1:
            raise ValueError("fast_user_vectors serves one history kind at a time; pass kind= or split the batch")
        kind = int(kinds[0]) if len(kinds) else 0
    item_bias = model.item_biases(kind=kind).detach()
    lr_rows = (inner_lr if isinstance(inner_lr, torch.Tensor)
               else torch.full((batch,), float(inner_lr), device=support.items.device))
    lr_cols = lr_rows[:, None]  # one rate per user, against (B, width) gradients
    mask = support.mask
    labels = support.signed()  # 1 a like, -w a dislike (counted against its item), 0 padding
    n = ((labels != 0).to(mask.dtype).sum(dim=1).clamp(min=1.0) if reduction == "mean"
         else mask.new_ones(batch))  # as adapt.task_loss: a dislike of weight 0 is left out of the mean
    corrections: dict[int, list] = {}

    def tower(ui):
        x = ui if feats is None else torch.cat([ui, feats], dim=1)
        return _tower_forward(model, x, corrections, lr_cols)

    for step in range(steps):
        with torch.enable_grad():
            ui = user_init.requires_grad_(True)
            ub = user_bias.requires_grad_(True)
            u, pre_acts, inputs = tower(ui)
            if cfg.objective == "rating":
                pred = (item_dots(item_vectors, support.items, u, mask) + item_bias[support.items]).double() + (
                    ub[:, None] + model.global_bias).double()
                losses = ((pred - support.ratings.double()) ** 2 * mask).sum(dim=1) / n
            else:  # -mean label * log softmax at the support items = (sum of labels / n) * logsumexp - mean
                # labelled logit (a like's label 1; a dislike's -w: +w log p, its score pushed down)
                logits = (item_dots(item_vectors, support.items, u, mask) + item_bias[support.items]).double()
                same_start = step == 0 and feats is None  # user_init is shared; user inputs would differ
                lse = catalog_logsumexp(u, item_vectors.detach(), item_bias, same_start)
                losses = (labels.sum(dim=1) / n) * lse - (logits * labels).sum(dim=1) / n
            wanted = [ui, ub] + [out for i, out in pre_acts if i in adapted_layers]
            grads = torch.autograd.grad(losses.sum(), wanted, allow_unused=True)  # users are independent
        g_ui, g_ub, g_layers = grads[0], grads[1], grads[2:]
        x_ins = [x for (i, _), x in zip(pre_acts, inputs) if i in adapted_layers]
        for (i, has_bias), g, x_in in zip(adapted_layers.items(), g_layers, x_ins):
            corrections.setdefault(i, []).append((g.detach(), x_in.detach(), has_bias))
        user_init = user_init.detach() - (lr_cols * g_ui if "user_init" in names and g_ui is not None else 0.0)
        user_bias = user_bias.detach() - (lr_rows * g_ub if "user_bias" in names and g_ub is not None else 0.0)
    with torch.no_grad():
        u, _, _ = tower(user_init.detach())
    return u, user_bias.detach()
