"""Every knob of recmaml, as frozen dataclasses with defaults in code. A TOML file only overrides them.

    [model]   the scorer's shape and objective
    [tasks]   how warm users become support/query tasks
    [meta]    the outer loop (MAML variant, learning rates, epochs, early stopping)
    [serve]   adaptation and scoring of cold users

Unknown keys and wrong types are errors that list every problem at once and the valid keys.

The defaults are the recipe the benchmark chose over all four shared logs, not ML-100K's alone
(benchmarks/EXPERIMENTS.md has each probe and its command): `recmaml tune` on ML-100K found the learning
rates, meta-batch, support sizes and EMA (benchmarks/recipes/tuned-ml-100k/best.toml); mixed support orders
were kept because they serve users who show their first interactions without losing much on random ones;
ALS item factors, a set encoder of the support and zero-shot tasks were each kept for what they measured.
Settings that depend on the log (the positive threshold; the epochs and patience, from its number of users;
the history kind served by default; whether the time prior applies) are derived at fit by
`recmaml.build.resolve_for_log`, and the serving scales per support size are chosen at the end of
fit on its validation users (`recmaml.calibrate`); all are saved in the model's resolved config.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from recmaml.errors import ConfigError



@dataclass(frozen=True)
class ModelConfig:
    objective: str = "implicit"
    """'implicit' (rank items: softmax over positives and sampled negatives, or 'bpr') or 'rating' (MSE)."""
    loss: str = "softmax"
    """Implicit objective's loss: 'softmax' (sampled softmax) or 'bpr'."""
    embedding_dim: int = 64
    """Width of item embeddings, of the user vector, and of the towers' outputs."""
    user_hidden: tuple[int, ...] = (64,)
    """Hidden layer widths of the user tower (an MLP over the user vector and user side features)."""
    item_hidden: tuple[int, ...] = ()
    """Hidden layer widths of the item tower (an MLP over the item embedding and item side features)."""
    feature_dim: int = 16
    """Width of each side-feature embedding."""
    item_knn: int = 0
    """Neighbours per item of an item-kNN (cosine) similarity of the warm log (0: none). When set, the sum
    of the support items' similarity rows is added to every score with a meta-learned weight: the
    item-item signal that strong fold-in baselines live on, beside the two towers."""
    item_knn_shrink: float = 10.0
    """Shrinkage of that cosine similarity (damps pairs seen by few users)."""
    item_item: str = "cosine"
    """What the item_knn table holds: 'cosine' (item-kNN similarities) or 'ease' (each item's item_knn
    largest weights of an EASE model of the warm log, Steck 2019, fitted on its 5,000 most frequent items).
    The support's sum of those rows is standardized per user and weighed by a meta-learned weight that
    each user's inner steps adapt."""
    item_item_lam: float = 200.0
    """EASE's L2 regularization (model.item_item = 'ease')."""
    support_encoder: int = 256
    """Width of a set encoder of the user's support items (0: none): tanh of the sum of their input
    embeddings over sqrt(count), fed to the user tower beside user_init, so the inner loop starts from a
    point conditioned on what the user showed (a few-shot Mult-VAE/DAE encoder is such an initializer)
    instead of one start shared by every user; the gradient steps then refine it."""
    time_prior: bool = False
    """Add the warm log's popularity in a window before each user's time (its latest interaction shown,
    standardized log counts of the items rated at least tasks.positive_threshold) to the scores, with a
    meta-learned weight: what was popular when a user arrived. Off by default until it is measured on
    more seeds and logs: on ml-latest-small (seed 0) it gained 2.7-3.9% at one item shown and -0.3 to
    +1.1% at five, and a model with it serves on the slower general path (benchmarks/EXPERIMENTS.md);
    adapting its weight per user (meta.adapt naming time_scale) lost 12-15%. Needs
    timestamps (fit turns it off on a log without them, and for the rating objective); the model carries
    the counts it needs."""
    time_window_days: float = 1095.0
    """The window of model.time_prior, in days."""
    sample_weights: bool = True
    """On a log with timestamps, also meta-train a second set of weights on random supports alone, which
    serves 'sample' histories (history_kind 'sample'), while the main weights, trained on both kinds,
    serve 'first' ones: each kind as a model trained for it would (the main weights serve samples about
    3% below such a model, and first interactions better than a model trained on them alone). Twice the
    training time and the model's size; serving is unchanged."""
    history_kind: bool = True
    """Condition the scorer on the kind of history a user shows: 'first' (its earliest interactions, what a
    real new user shows) or 'sample' (a random sample of them, what a random-split benchmark shows). A
    learned code of the kind feeds the user tower and a learned per-kind item bias is added to the
    scores, so that one model trained on both kinds of task serves each as a model trained for it would
    (recommend(history_kind=...), CLI --history-kind). Off for a log without timestamps, whose tasks are
    all random samples."""
    use_user_features: bool = True
    use_item_features: bool = True
    init_std: float = 0.05
    item_init: str = "als"
    """Start of the item embeddings: 'random', or 'als' (implicit ALS item factors of the warm log, which
    gives meta-learning a collaborative starting point; fit(item_factors=...) overrides either)."""
    als_regularization: float = 1.0
    """Regularization of the ALS fit behind item_init = 'als'."""


@dataclass(frozen=True)
class TaskConfig:
    support_min: int = 0
    """Fewest support interactions of a training task; 0 includes zero-shot tasks, whose query is judged
    at the meta-learned start itself (what a user with no usable history is ranked from)."""
    support_max: int = 30
    """Most support interactions of a training task; sizes are drawn uniformly in [support_min, support_max]."""
    query_max: int = 64
    """Most query interactions of a training task (a random subset when a user has more)."""
    order: str = "mixed"
    """'random', 'temporal' (the support is a user's earliest interactions) or 'mixed' (each task one or
    the other, temporal with probability tasks.temporal_fraction), so that one model serves cold users
    who show random items and users who show their first ones."""
    temporal_fraction: float = 0.5
    """With order = 'mixed': the share of tasks whose support is the user's earliest interactions."""
    negatives: int = 0
    """Sampled negatives per user for the implicit objective; 0 scores the whole catalog (exact softmax).
    Serving adapts cold users with the exact softmax whatever this is: sampled negatives only make
    training cheaper on large catalogs (and measured worse on ML-100K)."""
    negative_sampling: str = "uniform"
    """'uniform' or 'popularity' (proportional to item counts, with logQ correction in the softmax)."""
    positive_threshold: float | str | None = "auto"
    """Implicit objective: query interactions rated at least this count as positives (None: all). 'auto'
    follows the log's own scale (recmaml.data.relevant_rating: 4 on 1-5, 3.5 on 0.5-4, 8 on 1-10; all
    interactions on a log without ratings, on a rating column of counts such as plays (with a note), and
    for the rating objective); fit records the value it used in the model's resolved config, and warns
    (FewPositivesWarning) when the value leaves under 5% of the warm log's rows positive."""
    validation_users: float = 0.2
    """Fraction of warm users held out for early stopping."""
    validation_support: int = 5
    """Support size of validation users (their other interactions are the query)."""


@dataclass(frozen=True)
class MetaConfig:
    method: str = "maml"
    """'maml' (second-order), 'fomaml' (first-order) or 'metasgd' (learned per-parameter inner rates)."""
    adapt: str = "user+head"
    """Parameters adapted per user: 'user', 'head', 'user+head', 'all', or comma-separated name prefixes."""
    inner_steps: int = 1
    inner_lr: float = 0.5
    support_reduction: str = "mean"
    """How the inner loss pools a support set: 'mean', or 'sum' (steps grow with the evidence shown)."""
    meta_lr: float = 2e-3
    meta_batch_size: int = 128
    """Users per outer step."""
    gradient_groups: int = 2
    """The meta-batch's gradient is taken in this many fixed groups of its users (user i in group i mod
    gradient_groups, each group's gradient on its own) and the groups' gradients are added in group order.
    fit --nproc N gives each of N processes every N-th group (N <= gradient_groups), so the arithmetic is
    the same in one process and in N CPU processes of one machine, and so is the model, bit for bit, with
    the same threads per process (GPUs: as deterministic as their kernels). 2 costs a one-process fit about
    5% over 1 on ML-100K (two fits each); set 4 or 8 to train on that many processes or GPUs. Models saved
    before it existed read as 1, which is how they were trained."""
    epochs: int | str = "auto"
    """Most passes over the training users; 'auto' derives them from the log's size (about 6,000 outer
    steps, within 10 to 300 epochs: recmaml.meta.training_length), recorded in the model's config."""
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    """Max global norm of the meta-gradient (0 disables clipping)."""
    patience: int | str = "auto"
    """Epochs without validation improvement before stopping (0 disables early stopping); 'auto': a
    seventh of the epochs, at least 3 (40 of 300)."""
    max_seconds: float = 0.0
    """Wall-clock budget for meta-training (0: none)."""
    threads: int | str = "auto"
    """torch threads while meta-training; 'auto' takes the cores no other process is running on when
    training starts (recmaml.threads.serving_threads, as serve.threads does for serving), at least 1: torch's
    threads spin on a busy machine (a 300-user fit beside one busy loop on 2 cores: 98.6 s with torch's
    default threads, 54.4 s with one, 27.6 s idle). A number fixes the count, which reruns that must
    repeat the same arithmetic bit for bit want (CLI: --threads)."""
    ema: float = 0.99
    """Decay of an exponential moving average of the meta-weights, which is what gets validated and kept
    (0 disables it; 0.9-0.99 smooths the noise of small meta-batches)."""
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class ServeConfig:
    batch_size: int = 1024
    """Cold users adapted and scored together; bounds serving memory. 1,024 rather than 4,096: the (users x
    catalog) arrays of a batch stay nearer the cache (ML-100K, 8,192 users on Interactions, one thread:
    16.7k users/s against 13.3k with 4,096; 256 users: 12.8k, the per-batch overhead shows). A user's
    scores are the same in any batch (tests/test_determinism.py)."""
    inner_steps: int | None = None
    """Inner steps at serving time (None: as in training)."""
    threads: int | str = "auto"
    """torch threads while serving (recommend, score, predict); 'auto' takes the cores no other process
    is running on when a call starts (recmaml.threads.serving_threads), at least 1: torch's threads spin on a
    busy machine, so a serving call beside a CPU-bound job is several times slower with them all."""
    inner_lr_scale: float = 1.0
    """Multiplies the inner learning rate (Meta-SGD: its learned rates) at serving time, on top of the
    per-size scales below."""
    history_kind: str = "auto"
    """The kind of history cold users show by default: 'first' (their earliest interactions: a real new
    user) or 'sample' (a random sample). 'auto': 'first' when the warm log has timestamps, else 'sample';
    fit records the value. recommend(history_kind=...) and the CLI's --history-kind override it per call."""
    first_scales: tuple[float, ...] | str = "auto"
    """Per support size (SIZE_BUCKETS: 1, 2, 3-4, 5-9, 10-19, 20 or more items), a multiplier of the
    inner learning rate for 'first' histories: 0 serves that size without adapting. 'auto': fit chooses
    each from SCALE_GRID on its own validation users (the best validation nDCG@20; 0 unless adapting
    beats not adapting) and records them, so one item moves a user less than twenty do."""
    sample_scales: tuple[float, ...] | str = "auto"
    """The same for 'sample' histories."""
    priors: bool = True
    """Add the serving priors to the scorer's scores (recmaml.priors): the support's EASE scores and what
    was popular when the user arrived (on a log without timestamps, in the whole log), each with a weight
    per support size and history kind that fit chooses on its validation users (0 where it does not
    help). Implicit objective only (a rating model predicts ratings, not ranks)."""
    first_ease_weights: tuple[float, ...] | str = "auto"
    """Per support size (PRIOR_BUCKETS: 0, 1, 2, 3-4, 5-9, 10-19, 20 or more items), the weight of the
    support's standardized EASE scores beside the scorer's standardized scores, for 'first' histories.
    'auto': fit chooses them on its validation users and records them: for 1 to 20 items a smooth function
    of the size (a weight at 1 item and one at 20 from PRIOR_GRID, joined on the log of the size,
    recmaml.calibrate.smooth_weights), for none one weight of PRIOR_GRID."""
    first_recent_weights: tuple[float, ...] | str = "auto"
    """The same for the popularity at the user's time, or of the whole log without timestamps ('first'
    histories)."""
    sample_ease_weights: tuple[float, ...] | str = "auto"
    """serve.first_ease_weights for 'sample' histories."""
    sample_recent_weights: tuple[float, ...] | str = "auto"
    """serve.first_recent_weights for 'sample' histories."""
    dislike_threshold: float | str | None = "auto"
    """Implicit objective: a history row rated below this is a dislike, which does not count for its item
    as a like does (recmaml.scoring.with_dislikes): it is left out, or with serve.dislike_weight > 0 counted
    against its item. 'auto': fit sets the middle of the warm log's rating scale (3 on 1-5: 1 and 2 stars
    are dislikes; 2.25 on FilmTrust's 0.5-4) and records it; None: every row is a like, whatever its rating
    (a model saved before this setting serves so). A row without a rating (NaN) is a like."""
    dislike_weight: float = 0.0
    """How strongly a dislike counts against its item, against a like's 1 for it: the inner step pushes its
    score down, the EASE prior subtracts its row. 0 (the default) leaves a dislike out: counting against
    measured 2-9% lower nDCG@20 on ML-100K (benchmarks/EXPERIMENTS.md, "Dislikes")."""


SIZE_BUCKETS = (1, 2, 3, 5, 10, 20)
"""Lower bounds of the support-size buckets of serve.first_scales and serve.sample_scales."""
SCALE_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""The inner learning rate multipliers fit tries per support size and history kind."""
HISTORY_KINDS = ("first", "sample")
PRIOR_BUCKETS = (0, *SIZE_BUCKETS)
"""Lower bounds of the support-size buckets of the serving priors' weights (size 0 included: a user with
no history is ranked by the priors and the meta-learned start)."""
PRIOR_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0)
"""The weights fit tries for each serving prior, at 1 and at 20 history items (and for none), per history
kind (16: the prior alone, all but breaking its ties by the scorer)."""
PRIOR_WEIGHT_FIELDS = ("first_ease_weights", "first_recent_weights", "sample_ease_weights", "sample_recent_weights")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections) -> Config:
        """A copy with some fields changed: `cfg.replace(meta={"epochs": 5})`."""
        raw = self.to_dict()
        for section, values in sections.items():
            raw.setdefault(section, {}).update(values)
        return config_from_dict(raw, "Config.replace")


_CHOICES = {
    ("model", "objective"): ("implicit", "rating"),
    ("model", "loss"): ("softmax", "bpr"),
    ("model", "item_init"): ("random", "als"),
    ("model", "item_item"): ("cosine", "ease"),
    ("tasks", "order"): ("random", "temporal", "mixed"),
    ("tasks", "negative_sampling"): ("uniform", "popularity"),
    ("meta", "method"): ("maml", "fomaml", "metasgd"),
    ("meta", "support_reduction"): ("mean", "sum"),
    ("serve", "history_kind"): ("auto", *HISTORY_KINDS),
}


def _check_type(value, annotation) -> tuple[bool, object]:
    """Whether `value` fits the field's annotation, and the value converted (lists become tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(annotation):
            ok, converted = _check_type(value, arg)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if origin is tuple:
        element = typing.get_args(annotation)[0]
        kinds = (int, float) if element is float else (int,)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
            return False, value
        return True, tuple(element(v) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(value, (int, float)) else value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, annotation), value


SAVED_BEFORE_THEY_EXISTED = {"model": {"history_kind": False}, "meta": {"gradient_groups": 1}}
"""Settings added after models and fit checkpoints were first saved, with the value that reproduces how a
config saved without them was trained (not today's default)."""


def as_saved(raw: dict) -> dict:
    """A saved config (model.json's, a fit checkpoint's) with SAVED_BEFORE_THEY_EXISTED filled in where a
    section it has lacks them."""
    raw = dict(raw)
    for section, settings in SAVED_BEFORE_THEY_EXISTED.items():
        if isinstance(raw.get(section), dict):
            raw[section] = {**settings, **raw[section]}
    return raw


def config_from_dict(raw: dict, source: str = "config") -> Config:
    """Build a Config from nested dicts, listing every problem at once."""
    problems: list[str] = []
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    built = {}
    for key in raw:
        if key not in sections:
            problems.append(f"unknown section [{key}]; valid sections: {sorted(sections)}")
    for name in sections:
        cls = hints[name]
        values = raw.get(name, {})
        if not isinstance(values, dict):
            problems.append(f"[{name}] must be a table")
            continue
        field_types = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in field_types:
                problems.append(f"unknown key {name}.{key}; valid keys of [{name}]: {sorted(field_types)}")
                continue
            ok, converted = _check_type(value, field_types[key])
            if not ok:
                problems.append(f"{name}.{key} = {value!r} has the wrong type; expected {field_types[key]}")
                continue
            choices = _CHOICES.get((name, key))
            if choices and converted not in choices:
                problems.append(f"{name}.{key} = {value!r}; valid values: {list(choices)}")
                continue
            kwargs[key] = converted
        built[name] = cls(**kwargs)
    if not problems:
        problems = _check_ranges(Config(**built))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return Config(**built)


def _check_ranges(cfg: Config) -> list[str]:
    problems = []
    t, m = cfg.tasks, cfg.meta
    if not 0 <= t.support_min <= t.support_max or t.support_max < 1:
        problems.append("tasks.support_min must be >= 0 and <= tasks.support_max, and tasks.support_max >= 1")
    if isinstance(t.positive_threshold, str) and t.positive_threshold != "auto":
        problems.append(f"tasks.positive_threshold = {t.positive_threshold!r}; use a rating, 'auto' or leave it out")
    if not 0.0 <= t.temporal_fraction <= 1.0:
        problems.append("tasks.temporal_fraction must be in [0, 1]")
    if t.query_max < 1:
        problems.append("tasks.query_max must be >= 1")
    if not 0.0 <= t.validation_users < 1.0:
        problems.append("tasks.validation_users must be in [0, 1)")
    if m.inner_steps < 0:
        problems.append("meta.inner_steps must be >= 0")
    for name in ("epochs", "patience"):
        value = getattr(m, name)
        if isinstance(value, str) and value != "auto":
            problems.append(f"meta.{name} = {value!r}; use a whole number or 'auto'")
    if m.meta_batch_size < 1 or (isinstance(m.epochs, int) and m.epochs < 1):
        problems.append("meta.meta_batch_size and meta.epochs must be >= 1")
    if m.gradient_groups < 1:  # more groups than a batch's users is allowed: the empty ones add nothing
        problems.append(f"meta.gradient_groups = {m.gradient_groups}; it must be >= 1")
    if isinstance(m.patience, int) and m.patience < 0:
        problems.append("meta.patience must be >= 0 (0 disables early stopping)")
    if cfg.model.item_knn < 0 or cfg.model.item_knn_shrink < 0:
        problems.append("model.item_knn and model.item_knn_shrink must be >= 0 (item_knn 0: none)")
    if cfg.model.support_encoder < 0:
        problems.append("model.support_encoder must be >= 0 (0: no set encoder)")
    if not cfg.model.time_window_days > 0:
        problems.append("model.time_window_days must be > 0")
    if cfg.model.embedding_dim < 1:
        problems.append("model.embedding_dim must be >= 1")
    if cfg.serve.batch_size < 1:
        problems.append("serve.batch_size must be >= 1")
    if cfg.serve.inner_steps is not None and cfg.serve.inner_steps < 0:
        problems.append("serve.inner_steps must be >= 0 (or absent: as in training)")
    for name, threads in (("meta.threads", m.threads), ("serve.threads", cfg.serve.threads)):
        if (isinstance(threads, str) and threads != "auto") or (isinstance(threads, int) and threads < 1):
            problems.append(f"{name} = {threads!r}; use a whole number >= 1 or 'auto'")
    if isinstance(cfg.serve.dislike_threshold, str) and cfg.serve.dislike_threshold != "auto":
        problems.append(f"serve.dislike_threshold = {cfg.serve.dislike_threshold!r}; use a rating, 'auto' or leave it "
                        "out")
    if not cfg.serve.dislike_weight >= 0:
        problems.append("serve.dislike_weight must be >= 0 (0: a dislike is left out)")
    if not cfg.serve.inner_lr_scale > 0:
        problems.append("serve.inner_lr_scale must be > 0")
    for names, buckets, what in ((("first_scales", "sample_scales"), SIZE_BUCKETS, "multipliers"),
                                 (PRIOR_WEIGHT_FIELDS, PRIOR_BUCKETS, "weights")):
        for name in names:
            problems += _per_size_problems(f"serve.{name}", getattr(cfg.serve, name), buckets, what)
    if t.negatives < 0:
        problems.append("tasks.negatives must be >= 0 (0: the whole catalog)")
    if cfg.model.loss == "bpr" and t.negatives == 0:
        problems.append("model.loss = 'bpr' needs sampled negatives: set tasks.negatives > 0")
    if not 0.0 <= m.ema < 1.0:
        problems.append("meta.ema must be in [0, 1)")
    if m.inner_lr <= 0:
        problems.append("meta.inner_lr must be > 0")
    if not m.meta_lr > 0:
        problems.append(f"meta.meta_lr = {m.meta_lr}; it must be > 0 (0 would train nothing)")
    for name in ("weight_decay", "grad_clip", "max_seconds"):
        if getattr(m, name) < 0:
            problems.append(f"meta.{name} = {getattr(m, name)}; it must be >= 0 (0 turns it off)")
    if not 0 <= m.seed < 2**63:
        problems.append(f"meta.seed = {m.seed}; use a whole number in [0, 2**63)")
    for name in ("user_hidden", "item_hidden"):
        widths = getattr(cfg.model, name)
        if any(w < 1 for w in widths):
            problems.append(f"model.{name} = {list(widths)}; every layer width must be >= 1 ([] for no hidden layer)")
    if cfg.model.feature_dim < 1:
        problems.append("model.feature_dim must be >= 1")
    if t.validation_support < 1:
        problems.append("tasks.validation_support must be >= 1 (the items a validation user reveals)")
    problem = device_problem(m.device)
    if problem:
        problems.append(f"meta.device: {problem}")
    if not any(p.strip() for p in m.adapt.split(",")):  # which names exist is the scorer's to say (at fit)
        problems.append(f"meta.adapt = {m.adapt!r}; use 'user', 'head', 'user+head', 'all' or comma-separated "
                        "parameter names")
    return problems


def _per_size_problems(name: str, values, buckets: tuple[int, ...], what: str) -> list[str]:
    """What is wrong with a per-support-size field (serve.*_scales, serve.*_weights): 'auto', or one value
    >= 0 per bucket."""
    if isinstance(values, str):
        return [] if values == "auto" else [f"{name} = {values!r}; use 'auto' or a list of {len(buckets)} {what}"]
    if len(values) != len(buckets) or any(not v >= 0 for v in values):
        return [f"{name} = {list(values)}; give {len(buckets)} {what} >= 0, one per support size from "
                f"{list(buckets)} (or 'auto')"]
    return []


def device_problem(device: str) -> str | None:
    """Why torch cannot use `device` ('cpu', 'cuda', 'cuda:N', 'mps') on this machine, or None."""
    import torch

    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (not index.isdigit() or kind != "cuda")):
        return f"unknown device {device!r}; use cpu, cuda, cuda:N or mps"
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            return f"device {device!r} is not available ({build}, torch {torch.__version__}); use cpu"
        if index and int(index) >= torch.cuda.device_count():
            return f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0.."
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return f"device {device!r} is not available (MPS needs Apple silicon and a torch build with MPS); use cpu"
    return None


def shipped_config_dir() -> Path | None:
    """The folder of the configs that ship with recmaml: recmaml/configs in an installed package (the
    top-level configs/ folder is installed there), else configs/ of the checkout this code runs from."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if folder.is_dir():
            return folder
    return None


def shipped_configs() -> list[str]:
    """Names of the shipped configs ('ml-100k', 'tiny', ...), which load_config and --config accept."""
    folder = shipped_config_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder else []


def resolve_config(path_or_name: str | Path) -> Path:
    """A config file: the path when it exists, else the shipped config of that name ('ml-100k' or
    'ml-100k.toml'); an error that lists the shipped names otherwise."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; pass the TOML file itself (e.g. {path / 'config.toml'}) or the "
                          f"name of a shipped config: {', '.join(shipped_configs()) or '(none installed)'}")
    folder = shipped_config_dir()
    if folder is not None and path.parent == Path("."):
        shipped = folder / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{path}: config file not found; pass an existing TOML file or the name of a shipped "
                      f"config: {', '.join(shipped_configs()) or '(none installed)'}")


def load_config(path: str | Path | None = None, **overrides) -> Config:
    """Defaults, overridden by a TOML file (if given: a path, or a shipped config's name such as
    'ml-100k'), overridden by `overrides` ({section: {key: value}})."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = resolve_config(path)
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config ({err.strerror or err}); check its permissions") from err
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw, source)
