"""The scorer: embeddings plus MLPs, and the serving fast path that its user tower's shape allows (rank-1
updates instead of per-user weights; fast_user_vectors). No training code lives here.

    user tower:  MLP( user vector (meta-learned init) ++ user side-feature embeddings )  -> u   (d)
    item tower:  MLP( item id embedding ++ item side-feature embeddings )               -> v_i (d)
    score(u, i) = <u, v_i> + item_bias_i  (+ user_bias + global_bias for the rating objective)

Why two towers joined by a dot product rather than one MLP over the user++item concatenation (MeLU's
choice): ranking a whole catalog for millions of cold users must be a matrix product. A joint MLP costs
one MLP evaluation per (user, item) pair, 10^10 of them for a million users over 10,000 items. Each
tower is itself an MLP over the concatenation of its side's embeddings, and the user tower is the
"head" that MeLU and ANIL adapt per user.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recmaml.config import ModelConfig
from recmaml.data import SideFeatures


TIME_EDGES = 128  # times at which the time prior's cumulative counts are kept (quantiles of the warm log)
KIND_DIM = 8  # width of the learned code of a user's history kind (model.history_kind)
META_LR_PREFIX = "meta_lrs"  # Meta-SGD's learned inner learning rates (a ParameterDict): never adapted themselves


@dataclass(frozen=True)
class FeatureSpec:
    """The shape of one side's features: names and level counts, saved with a model."""

    categorical: dict[str, int] = field(default_factory=dict)  # name -> number of levels (code 0 = missing)
    multi_hot: dict[str, int] = field(default_factory=dict)  # name -> number of levels
    numeric: tuple[str, ...] = ()

    @classmethod
    def of(cls, features: SideFeatures | None) -> FeatureSpec:
        if features is None:
            return cls()
        return cls(
            categorical={k: len(features.categorical_levels[k]) for k in features.categorical},
            multi_hot={k: len(features.multi_hot_levels[k]) for k in features.multi_hot},
            numeric=tuple(features.numeric),
        )

    @property
    def empty(self) -> bool:
        return not (self.categorical or self.multi_hot or self.numeric)

    def to_json(self) -> dict:
        return {**asdict(self), "numeric": list(self.numeric)}

    @classmethod
    def from_json(cls, obj: dict) -> FeatureSpec:
        return cls(dict(obj["categorical"]), dict(obj["multi_hot"]), tuple(obj["numeric"]))


def feature_tensors(features: SideFeatures | None, spec: FeatureSpec, n_rows: int) -> dict[str, torch.Tensor]:
    """Side features as tensors, one row per entity: 'cat' (codes), 'multi' (row-normalized multi-hot,
    all columns side by side) and 'num' (NaN -> 0). Entities without features get zeros (missing)."""
    def column(table, name, width, dtype):
        if features is None or name not in table:
            return np.zeros((n_rows, width), dtype=dtype)
        values = np.asarray(table[name], dtype=dtype)
        return values.reshape(n_rows, width)

    cat = [column(features.categorical if features else {}, n, 1, np.int64) for n in spec.categorical]
    multi = []
    for name, width in spec.multi_hot.items():
        m = column(features.multi_hot if features else {}, name, width, np.float32)
        multi.append(m / np.maximum(m.sum(axis=1, keepdims=True), 1.0))  # mean of the levels' embeddings
    num = [np.nan_to_num(column(features.numeric if features else {}, n, 1, np.float32)) for n in spec.numeric]
    return {
        "cat": torch.from_numpy(np.concatenate(cat, axis=1) if cat else np.zeros((n_rows, 0), np.int64)),
        "multi": torch.from_numpy(np.concatenate(multi, axis=1) if multi else np.zeros((n_rows, 0), np.float32)),
        "num": torch.from_numpy(np.concatenate(num, axis=1) if num else np.zeros((n_rows, 0), np.float32)),
    }


class FeatureEncoder(nn.Module):
    """Embeds side features: one embedding table per categorical column (row 0 = missing), a linear
    map of the concatenated normalized multi-hot columns per column, and the numeric values as they are."""

    def __init__(self, spec: FeatureSpec, dim: int):
        super().__init__()
        self.spec = spec
        offsets = np.cumsum([0, *[n + 1 for n in spec.categorical.values()]])
        self.register_buffer("cat_offsets", torch.as_tensor(offsets[:-1], dtype=torch.long), persistent=False)
        self.cat = nn.Embedding(int(offsets[-1]), dim) if spec.categorical else None
        self.multi = nn.Linear(sum(spec.multi_hot.values()), dim * len(spec.multi_hot), bias=False) if spec.multi_hot else None
        self.out_dim = dim * (len(spec.categorical) + len(spec.multi_hot)) + len(spec.numeric)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.cat is not None:
            codes = feats["cat"] + self.cat_offsets
            parts.append(self.cat(codes).flatten(-2))
        if self.multi is not None:
            parts.append(self.multi(feats["multi"]))
        if self.spec.numeric:
            parts.append(feats["num"])
        return torch.cat(parts, dim=-1)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Scorer(nn.Module):
    """Scores items for one user (call it under torch.func.vmap for many). See the module docstring."""

    PARAMETER_GROUPS = {
        # what meta.adapt names: the parameters a user's inner loop changes, by name prefix
        "user": ("user_init", "user_bias", "knn_scale"),
        "head": ("user_tower",),
        "user+head": ("user_init", "user_bias", "user_tower", "knn_scale"),
        "all": ("",),
    }
    USER_SIDE = ("user_init", "user_bias", "user_tower.")  # what only moves the user vector (the fast path)

    def __init__(
        self,
        n_items: int,
        cfg: ModelConfig,
        item_features: SideFeatures | None = None,
        user_spec: FeatureSpec | None = None,
        item_spec: FeatureSpec | None = None,
    ):
        super().__init__()
        d = cfg.embedding_dim
        self.cfg = cfg
        self.n_items = n_items
        self.user_spec = (user_spec or FeatureSpec()) if cfg.use_user_features else FeatureSpec()
        self.item_spec = (item_spec or FeatureSpec.of(item_features)) if cfg.use_item_features else FeatureSpec()

        self.user_init = nn.Parameter(torch.randn(d) * cfg.init_std)
        self.user_bias = nn.Parameter(torch.zeros(()))
        self.user_features = None if self.user_spec.empty else FeatureEncoder(self.user_spec, cfg.feature_dim)
        self.support_embedding = None
        if cfg.support_encoder:
            self.support_embedding = nn.Embedding(n_items, cfg.support_encoder)
            nn.init.normal_(self.support_embedding.weight, std=cfg.init_std)
        self.kind_code = self.kind_bias = None
        if cfg.history_kind:  # which kind of history a user shows: 0 'first' (earliest), 1 'sample' (random)
            self.kind_code = nn.Embedding(2, KIND_DIM)
            nn.init.normal_(self.kind_code.weight, std=cfg.init_std)
        user_in = (d + (self.user_features.out_dim if self.user_features else 0) + cfg.support_encoder
                   + (KIND_DIM if cfg.history_kind else 0))
        self.user_tower = mlp(user_in, cfg.user_hidden, d)

        self.item_embedding = nn.Embedding(n_items, d)
        nn.init.normal_(self.item_embedding.weight, std=cfg.init_std)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.global_bias = nn.Parameter(torch.zeros(()))
        if cfg.history_kind:  # what first interactions lean to (e.g. what a sign-up page shows), on top of
            self.kind_bias = nn.Parameter(torch.zeros(n_items))  # item_bias: samples are scored by item_bias alone
        self.item_features = None if self.item_spec.empty else FeatureEncoder(self.item_spec, cfg.feature_dim)
        item_in = d + (self.item_features.out_dim if self.item_features else 0)
        self.item_tower = mlp(item_in, cfg.item_hidden, d)
        self.knn_scale = None
        if cfg.item_knn:  # filled by set_item_knn from the warm log; a saved model carries them
            self.register_buffer("knn_index", torch.zeros(n_items, cfg.item_knn, dtype=torch.long))
            self.register_buffer("knn_weight", torch.zeros(n_items, cfg.item_knn))
            self.knn_scale = nn.Parameter(torch.tensor(1.0))
        self.time_scale = None
        if cfg.time_prior:  # filled by set_time_prior from the warm log; a saved model carries them
            self.register_buffer("time_edges", torch.zeros(TIME_EDGES, dtype=torch.float64))
            self.register_buffer("time_counts", torch.zeros(TIME_EDGES + 1, n_items))
            self.time_scale = nn.Parameter(torch.tensor(0.0))  # starts as a model without it
        for name, tensor in feature_tensors(item_features, self.item_spec, n_items).items():
            self.register_buffer(f"item_feature_{name}", tensor)

    def user_inputs(self, user_feats: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """What the user tower reads beside user_init: side-feature embeddings and the set encoding of the
        support (user_feats['support_items'], ['support_mask']: padded, one set per user), or None.
        Works on one user (vmap) and on a batch alike."""
        parts = []
        if self.user_features is not None:
            parts.append(self.user_features(user_feats))
        if self.support_embedding is not None:
            mask = user_feats["support_mask"].unsqueeze(-1)
            embedded = self.support_embedding(user_feats["support_items"])
            total = ordered_sum(embedded * mask, dim=-2)
            parts.append(torch.tanh(total / mask.sum(dim=-2).clamp(min=1.0).sqrt()))
        if self.kind_code is not None:
            parts.append(self.kind_code(user_feats["history_kind"]))
        return torch.cat(parts, dim=-1) if parts else None

    def item_biases(self, user_feats: dict[str, torch.Tensor] | None = None, kind: int | None = None) -> torch.Tensor:
        """The item biases a user's scores start from: item_bias, plus kind_bias for a user who shows its first
        interactions (history kind 0); (n_items,) for one user (under vmap) or (B, n_items) for a batch, or
        for every user of one `kind` (0 or 1) given as a number. One offset rather than a bias per kind: the
        sum of two biases would move at twice Adam's step size."""
        if self.kind_bias is None:
            return self.item_bias
        if kind is not None:
            return self.item_bias + self.kind_bias if kind == 0 else self.item_bias
        # arithmetic rather than indexing by a tensor, which torch.func.vmap cannot batch
        first = 1.0 - user_feats["history_kind"].to(self.kind_bias.dtype).unsqueeze(-1)
        return self.item_bias + first * self.kind_bias

    def user_vector(self, user_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.user_init
        extra = self.user_inputs(user_feats)
        if extra is not None:
            x = torch.cat([x.expand(*extra.shape[:-1], -1), extra], dim=-1)
        return self.user_tower(x)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item tower outputs for `items` (any shape of indices), or for the whole catalog."""
        if items is None:
            x = self.item_embedding.weight
            feats = {k: getattr(self, f"item_feature_{k}") for k in ("cat", "multi", "num")}
        else:
            x = self.item_embedding(items)
            feats = {k: getattr(self, f"item_feature_{k}")[items] for k in ("cat", "multi", "num")}
        if self.item_features is not None:
            x = torch.cat([x, self.item_features(feats)], dim=-1)
        return self.item_tower(x)

    def catalog_vectors(self) -> torch.Tensor:
        """item_vectors() of the whole catalog without a graph, computed once and reused by serving calls
        until an item-side parameter or buffer changes (an optimizer step, load_state_dict or a move to
        another device bumps its version or storage), so each call no longer pays a pass of the item tower."""
        key = tuple((t.data_ptr(), t._version) for name, t in self.state_dict(keep_vars=True).items()
                    if name.startswith("item_"))
        cached = getattr(self, "_catalog_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self.item_vectors())
            self._catalog_cache = cached
        return cached[1]

    def set_time_prior(self, edges: np.ndarray, cumulative: np.ndarray) -> None:
        """The time prior's table: TIME_EDGES sorted times (Unix seconds) and, per edge, each item's count of
        positives up to it ((TIME_EDGES + 1, n_items), row 0 all zeros); see recent_popularity."""
        with torch.no_grad():
            self.time_edges.copy_(torch.as_tensor(edges, dtype=torch.float64))
            self.time_counts.copy_(torch.as_tensor(cumulative, dtype=torch.float32))

    def latest_time(self) -> float:
        """The end of the warm log: the time of users who show no timestamp."""
        return float(self.time_edges[-1])

    def recent_popularity(self, user_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per user, its standardized log count of each item's positives in the model.time_window_days
        before user_feats['time']: (n_items,) for one user (under vmap) or (B, n_items)."""
        time = user_feats["time"].unsqueeze(-1)
        window = self.cfg.time_window_days * 86400.0
        end = torch.searchsorted(self.time_edges, time, right=True).squeeze(-1)
        start = torch.searchsorted(self.time_edges, time - window, right=True).squeeze(-1)
        counts = F.embedding(end, self.time_counts) - F.embedding(start, self.time_counts)
        x = torch.log1p(counts.clamp(min=0.0))
        return (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + 1e-6)

    def set_item_knn(self, index: torch.Tensor, weight: torch.Tensor) -> None:
        """The item-kNN table: per item, its neighbours' indices and similarities (n_items, item_knn),
        padded with weight 0."""
        with torch.no_grad():
            self.knn_index.copy_(index)
            self.knn_weight.copy_(weight)

    def support_knn(self, user_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per user, the sum of its support items' similarity rows over the catalog: (n_items,) for one
        user (under vmap) or (B, n_items)."""
        items, mask = user_feats["support_items"], user_feats["support_mask"]
        index = self.knn_index[items].flatten(-2)  # (..., S * M)
        weight = (self.knn_weight[items] * mask.unsqueeze(-1)).flatten(-2)
        out = torch.zeros(*index.shape[:-1], self.n_items, dtype=weight.dtype, device=weight.device)
        out = out.scatter_add(-1, index, weight)
        # standardized per user, so that the learned weight is on the scale of the other logits whatever
        # the table's own scale (EASE weights are ~0.01, cosines ~0.1-1)
        return (out - out.mean(dim=-1, keepdim=True)) / (out.std(dim=-1, keepdim=True) + 1e-6)

    def forward(self, user_feats: dict[str, torch.Tensor], items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of one user for `items` (indices of any shape), or for every item when None."""
        u = self.user_vector(user_feats)
        v = self.item_vectors(items)
        biases = self.item_biases(user_feats)
        bias = biases if items is None else biases[items]
        if self.knn_scale is not None:  # the item-item signal of the support, with its learned weight
            knn = self.support_knn(user_feats)
            bias = bias + self.knn_scale * (knn if items is None else knn[items])
        if self.time_scale is not None:  # what was popular at the user's time, with its learned weight
            recent = self.recent_popularity(user_feats)
            bias = bias + self.time_scale * (recent if items is None else recent[items])
        scores = v @ u + bias
        if self.cfg.objective == "rating":
            scores = scores + self.user_bias + self.global_bias
        return scores


# ---- serving fast path ------------------------------------------------------------------------------
# When only the user side adapts (user_init, user_bias, user_tower layers), each user feeds ONE vector
# through each Linear layer, so an inner step changes that layer by a rank-1 term: W_b = W - lr g_b x_b^T.
# Its output on a new input x' is then W x' + b - lr g_b (x_b . x' + 1), computable for all users with
# plain matrix products and without materializing one weight matrix per user. The result equals adapt()
# + batched_scores() with first_order=True (tests check it); it is what serving uses when it applies.

SERVING_ROWS = 64  # serving's matrix products have a multiple of this many rows (see rows_mm)
SERVING_DEPTH = 256  # and sum over at most this many terms; longer ones are cut and added in order


def rows_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, padded: bool = False) -> torch.Tensor:
    """a @ b (+ bias) with a's rows padded to a multiple of SERVING_ROWS (at least one block) and the
    inner dimension cut into pieces of at most SERVING_DEPTH terms, whose products are added in order.

    Why: MKL's float32 products choose their kernel, and so their summation order, by shape and by thread
    count: a user's row differs in its last bits between a batch of 7 and one of 4096 (a few rows take
    another kernel), and a long inner dimension is split between threads. Serving would then give other
    bits for a user in another batch, with another --chunk-rows or on a busier machine (serve.threads =
    'auto'). With at least SERVING_ROWS rows and short inner products, every row comes out the same in
    any batch and with any thread count (tests/test_determinism.py checks both). Its cost, measured on
    100,000 cold users of benchmarks/scale.py's catalog on one thread: adaptation 4% slower (12.7 s
    against 12.3 s with plain products). padded=True returns the product with its padding rows (a's rows
    rounded up): a caller that feeds it to another rows_mm saves the copy that padding it again would make."""
    rows, depth = a.shape
    pad = (-rows) % SERVING_ROWS if rows else SERVING_ROWS
    if pad:
        a = torch.cat([a, a.new_zeros(pad, depth)])
    out = None
    for lo in range(0, max(depth, 1), SERVING_DEPTH):
        part, weights = a[:, lo:lo + SERVING_DEPTH], b[lo:lo + SERVING_DEPTH]
        if out is not None:
            out.addmm_(part, weights)
        elif bias is None:
            out = torch.mm(part, weights)
        else:
            out = torch.addmm(bias, part, weights)
    return out if padded else out[:rows]


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
        out = _RowsLinear.apply(h, layer.weight.detach(), layer.bias.detach())
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


def _catalog_logsumexp(users, item_vectors, item_bias, same_start: bool) -> torch.Tensor:
    """(B,) logsumexp of every user's catalog logits, differentiable wrt `users`."""
    if same_start:
        return _SameStartLogSumExp.apply(users, item_vectors, item_bias)
    return _CatalogLogSumExp.apply(users, item_vectors, item_bias)


def ordered_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x summed over `dim` in index order, so that zeros padded at the end leave the result's bits alone.
    torch's sum reduces in an order that follows the length (vectorized and pairwise), so a user's padded
    support would round with the longest support of its batch; CPU cumsum runs each row in order (with a
    float64 accumulator), and its last element is the sum. Works under torch.func.vmap."""
    if x.shape[dim] == 0:
        return x.sum(dim=dim)
    return x.cumsum(dim=dim).select(dim, -1)


class _ItemDots(torch.autograd.Function):
    """(B, S) products u_b . v_i, differentiable wrt the users only (serving never differentiates the item
    side). The backward's sum over the S items is an ordered_sum, so the gradient (and the adapted user)
    does not change in its last bits with the batch's padded length."""

    @staticmethod
    def forward(ctx, picked, users):
        ctx.save_for_backward(picked)
        return (picked * users.unsqueeze(1)).sum(dim=2)

    @staticmethod
    def backward(ctx, grad_out):
        (picked,) = ctx.saved_tensors
        return None, ordered_sum(grad_out.unsqueeze(2) * picked, dim=1)


def item_dots(item_vectors: torch.Tensor, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """(B, S) products u_b . v_i of each user's items (B, S), in float32. A product and a sum over the
    embedding dimension rather than a bmm: that sum has the same length and order in every batch, where the
    bmm's kernel (and so the last bits of its result and of the gradient it passes back) follows the
    batch's padded shape. Sums over S of these values are taken in float64 by the callers, for the same
    reason; the gradient's sum over S is ordered (_ItemDots)."""
    return _ItemDots.apply(item_vectors[items].detach(), users)


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
    n = mask.sum(dim=1).clamp(min=1.0) if reduction == "mean" else mask.new_ones(batch)
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
                pred = (item_dots(item_vectors, support.items, u) + item_bias[support.items]).double() + (
                    ub[:, None] + model.global_bias).double()
                losses = ((pred - support.ratings.double()) ** 2 * mask).sum(dim=1) / n
            else:  # -mean log softmax at the support items = (rows / n) * logsumexp - mean support logit
                logits = (item_dots(item_vectors, support.items, u) + item_bias[support.items]).double()
                same_start = step == 0 and feats is None  # user_init is shared; user inputs would differ
                lse = _catalog_logsumexp(u, item_vectors.detach(), item_bias, same_start)
                losses = (mask.sum(dim=1) / n) * lse - (logits * mask).sum(dim=1) / n
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
