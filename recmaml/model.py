"""The scorer: embeddings plus MLPs. No training code lives here; the serving fast path that its user tower's
shape allows (rank-1 updates instead of per-user weights) is recmaml.fast_adapt.

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
from recmaml.memo import kept_while_unchanged
from recmaml.ordered import ordered_embedding_sum, ordered_sum, zero_row_float64


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
            items, table = user_feats["support_items"], self.support_embedding.weight
            if torch.is_grad_enabled() and table.requires_grad:  # meta-training: the embedding's own backward
                total = ordered_sum(self.support_embedding(items) * mask, dim=-2)
            else:  # serving: the same bits without the (B, S, width) array
                total = ordered_embedding_sum(table, items, mask, self._support_table64())
            parts.append(torch.tanh(total / mask.sum(dim=-2).clamp(min=1.0).sqrt()))
        if self.kind_code is not None:
            parts.append(self.kind_code(user_feats["history_kind"]))
        return torch.cat(parts, dim=-1) if parts else None

    def _support_table64(self) -> torch.Tensor:
        """The support embedding as ordered_embedding_sum reads it (float64, a zero row appended), kept
        while the weights are unchanged: serving reads it once per batch."""
        weight = self.support_embedding.weight
        return kept_while_unchanged(self, "_table64_kept", [weight], lambda: zero_row_float64(weight))

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
        item_side = self._item_side_tensors()

        def vectors() -> torch.Tensor:
            with torch.no_grad():
                return self.item_vectors()
        return kept_while_unchanged(self, "_catalog_kept", item_side, vectors)

    def _item_side_tensors(self) -> list[torch.Tensor]:
        """Every parameter and buffer of the item side (names starting with item_, and all of the item_
        submodules'), read afresh each call: a replaced module or buffer is seen at once. Walking only those
        modules costs about a quarter of state_dict's walk of the whole model (23 against 98 us, ML-100K's
        model), which one-user calls paid on every request."""
        own = [t for store in (self._parameters, self._buffers) for name, t in store.items()
               if name.startswith("item_") and t is not None]
        modules = [m for name, child in self._modules.items() if name.startswith("item_") and child is not None
                   for m in child.modules()]
        return own + [t for m in modules for store in (m._parameters, m._buffers) for t in store.values()
                      if t is not None]

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
