"""`recmaml tune`: random search with successive halving over config fields, scored on validation users.

    space = load_space("ml-100k-space.toml")           # or the shipped default: load_space("default")
    result = tune(log, space, trials=24, budget_minutes=20, protocol="random", k=5)
    result.best_config                                  # a Config; write_config(result.best_config, path)

A space is a TOML file whose tables are config sections and whose values say what to try:

    [meta]
    inner_lr = [0.1, 0.3, 1.0]                          # a list: one of these values
    meta_lr = { low = 1e-3, high = 1e-2, log = true }   # a range: uniform (or log-uniform) floats
    [tasks]
    support_max = { low = 10, high = 30, int = true }   # integers

Scoring: the users are split as `recmaml benchmark` splits them for `seed` (make_splits), and a trial is
fitted on the warm users of the validation split and scored by nDCG@20 of the validation cold users at
support size `k`. Those are warm users of the benchmark's split, so tuning never sees the users that a
benchmark with the same seed tests.

Successive halving (Jamieson & Talwalkar 2016): every trial first trains with a small time budget
(meta.max_seconds); the best 1/eta of them train again with eta times the budget, and so on, so that most
trials stop early and the budget goes to the promising ones. Each rung refits from scratch.
"""

from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recmaml.config import Config, config_from_dict, shipped_config_dir
from recmaml.data import Interactions
from recmaml.errors import ConfigError


@dataclass(frozen=True)
class Dimension:
    section: str
    key: str
    choices: tuple = ()  # a list in the space
    low: float | None = None  # a range in the space
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def sample(self, rng: np.random.Generator):
        if self.choices:
            value = self.choices[int(rng.integers(len(self.choices)))]
            return list(value) if isinstance(value, tuple) else value
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.integer else float(value)


def load_space(path_or_name: str | Path) -> list[Dimension]:
    """A search space from a TOML file, or the shipped one by name ('default'); every field is checked
    against Config (unknown fields, empty lists, ranges with low > high, values of the wrong type)."""
    path = Path(path_or_name)
    if not path.is_file():
        folder = shipped_config_dir()
        shipped = folder / "spaces" / f"{path.stem}.toml" if folder is not None and path.parent == Path(".") else None
        if shipped is None or not shipped.is_file():
            raise ConfigError(f"{path}: search space not found; pass a TOML file or 'default' (--space)")
        path = shipped
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return space_from_dict(raw, str(path))


def space_from_dict(raw: dict, source: str = "space") -> list[Dimension]:
    problems, dims = [], []
    defaults = Config().to_dict()
    for section, fields_ in raw.items():
        if section not in defaults or not isinstance(fields_, dict):
            problems.append(f"unknown section [{section}]; valid sections: {sorted(defaults)}")
            continue
        for key, spec in fields_.items():
            name = f"{section}.{key}"
            if key not in defaults[section]:
                problems.append(f"unknown field {name}; valid fields of [{section}]: {sorted(defaults[section])}")
                continue
            if isinstance(spec, list):
                if not spec:
                    problems.append(f"{name} = []: give at least one value to try")
                    continue
                dims.append(Dimension(section, key, choices=tuple(tuple(v) if isinstance(v, list) else v for v in spec)))
            elif isinstance(spec, dict):
                unknown = set(spec) - {"low", "high", "log", "int"}
                low, high = spec.get("low"), spec.get("high")
                if unknown or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                    problems.append(f"{name}: a range is {{ low = ..., high = ..., log = true|false, int = true|false }}")
                    continue
                if low > high or (spec.get("log") and low <= 0):
                    problems.append(f"{name}: empty range low = {low}, high = {high}" + (" (log needs low > 0)" if spec.get("log") else ""))
                    continue
                dims.append(Dimension(section, key, low=float(low), high=float(high), log=bool(spec.get("log")),
                                      integer=bool(spec.get("int"))))
            else:
                problems.append(f"{name} = {spec!r}: give a list of values or a range {{ low = ..., high = ... }}")
    if not dims and not problems:
        problems.append("the space names no field to search")
    # every value a trial could take must make a valid config
    for dim in dims:
        for value in (dim.choices or (dim.low, dim.high)):
            value = list(value) if isinstance(value, tuple) else value
            if dim.integer:
                value = int(round(value))
            try:
                config_from_dict({dim.section: {dim.key: value}}, source)
            except ConfigError as err:
                problems.append(f"{dim.name} = {value!r}: {str(err).split(': ', 1)[-1]}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return dims


@dataclass
class Trial:
    number: int
    params: dict  # {"section.key": value}
    scores: dict = field(default_factory=dict)  # rung budget (s) -> validation nDCG@20
    seconds: float = 0.0

    @property
    def best_budget(self) -> float:
        return max(self.scores)

    @property
    def score(self) -> float:
        return self.scores[self.best_budget]


@dataclass
class TuneResult:
    trials: list[Trial]
    best_config: Config
    best: Trial
    seconds: float
    untuned: Trial | None = None  # the base config (its values of the space's fields), at the top rung's budget


def trial_config(base: Config, params: dict) -> Config:
    sections: dict = {}
    for name, value in params.items():
        section, key = name.split(".", 1)
        sections.setdefault(section, {})[key] = value
    return base.replace(**sections)


def rung_budgets(budget_seconds: float, trials: int, eta: int, min_seconds: float) -> list[float]:
    """Seconds of meta-training per trial at each rung, so that the whole schedule (trials x first budget
    + trials/eta x eta x first budget + ...) fits the budget: every rung costs about the same."""
    rungs = max(1, int(math.floor(math.log(max(trials, 1), eta))) + 1)
    first = budget_seconds / (trials * rungs)
    if first < min_seconds:  # too little per trial: fewer rungs, each longer
        rungs = max(1, int(budget_seconds / (trials * min_seconds)))
        first = budget_seconds / (trials * rungs)
    return [first * eta ** r for r in range(rungs)]


def tune(log: Interactions, space: list[Dimension], *, trials: int = 24, budget_minutes: float = 20.0,
         base: Config | None = None, protocol: str = "random", k: int = 5, seed: int = 0, eta: int = 3,
         min_seconds: float = 2.0, progress=None) -> TuneResult:
    """Random search over `space` with successive halving; see the module docstring. progress: optional
    tqdm-like object (update, set_postfix), advanced once per trial fit."""
    from recmaml.benchmark import FittedMeta, validation_value, make_splits, log_relevance_threshold
    from recmaml.recommender import MetaRecommender

    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials} (--trials)")
    if budget_minutes <= 0:
        raise ConfigError(f"the budget must be > 0 minutes, got {budget_minutes} (--budget-minutes)")
    base = base or Config()
    splits = make_splits(log, protocol, seed, (k,), 0.2)
    relevance_threshold = log_relevance_threshold(log)
    rng = np.random.default_rng(seed)
    pool = [Trial(i, {d.name: d.sample(rng) for d in space}) for i in range(trials)]
    budgets = rung_budgets(budget_minutes * 60.0, trials, eta, min_seconds)
    start = time.perf_counter()

    def score(trial: Trial, seconds: float) -> None:
        """Fit the trial's config with `seconds` of meta-training and score it on the validation users."""
        began = time.perf_counter()
        cfg = trial_config(base, trial.params).replace(meta={"max_seconds": seconds})
        rec = MetaRecommender(cfg).fit(splits.val_warm, progress=False)
        trial.scores[seconds] = validation_value(FittedMeta(rec), splits.val, protocol, False, relevance_threshold)
        trial.seconds += time.perf_counter() - began
        if progress is not None:
            progress.update(1)

    alive = pool
    for rung, seconds in enumerate(budgets):
        for trial in alive:
            score(trial, seconds)
            if progress is not None:
                progress.set_postfix(rung=f"{rung + 1}/{len(budgets)}", best=f"{max(t.score for t in pool if t.scores):.4f}")
        if rung + 1 < len(budgets):
            keep = max(1, len(alive) // eta)
            alive = sorted(alive, key=lambda t: _finite(t.scores[seconds]), reverse=True)[:keep]
    # the base config on the same footing as the trials that went furthest: what tuning gained over it
    untuned = Trial(-1, untuned_params(base, space))
    score(untuned, budgets[-1])
    ranked = leaderboard(pool)
    return TuneResult(ranked, trial_config(base, ranked[0].params), ranked[0], time.perf_counter() - start, untuned)


def untuned_params(base: Config, space: list[Dimension]) -> dict:
    """The base config's values of the space's fields (what the trials would have been without tuning)."""
    values = base.to_dict()
    return {d.name: values[d.section][d.key] for d in space}


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -np.inf


def leaderboard(trials: list[Trial]) -> list[Trial]:
    """Trials best first: those that reached a later rung rank above those stopped earlier."""
    return sorted(trials, key=lambda t: (t.best_budget, _finite(t.score)), reverse=True)


def planned_fits(trials: int, rungs: int, eta: int) -> int:
    """How many fits the schedule makes, the untuned config's included (the progress bar's total)."""
    total, alive = 1, trials
    for rung in range(rungs):
        total += alive
        if rung + 1 < rungs:
            alive = max(1, alive // eta)
    return total


def leaderboard_rows(trials: list[Trial]) -> list[dict]:
    return [{"rank": i + 1, "trial": t.number, "validation_ndcg@20": round(t.score, 5),
             "budget_s": round(t.best_budget, 1), "fit_s": round(t.seconds, 1), **t.params}
            for i, t in enumerate(leaderboard(trials))]


def leaderboard_table(trials: list[Trial], base: Config, top: int = 10, untuned: Trial | None = None) -> str:
    """The leaderboard as `recmaml tune` prints it: the best `top` trials with their score and the rung
    budget they reached, and only the fields whose values differ between trials; a last row gives the
    untuned config's values of those fields (the base config: --config, else the code's defaults) and,
    when `untuned` was scored (TuneResult.untuned), its score at its budget."""
    rows = leaderboard_rows(trials)
    varied = [name for name in rows[0] if "." in name and len({repr(r[name]) for r in rows}) > 1]
    values = base.to_dict()
    header = ["rank", "trial", "nDCG@20", "budget_s", *varied]
    cells = [[str(r["rank"]), str(r["trial"]), f"{r['validation_ndcg@20']:.4f}", f"{r['budget_s']:g}",
              *(_cell(r[name]) for name in varied)] for r in rows[:top]]
    scored = ["", ""] if untuned is None else [f"{untuned.score:.4f}", f"{untuned.best_budget:g}"]
    cells.append(["untuned", "", *scored, *(_cell(values[n.split(".", 1)[0]][n.split(".", 1)[1]]) for n in varied)])
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in (header, *cells)]
    shared = [name for name in rows[0] if "." in name and name not in varied]
    if shared:
        lines.append("the same in every trial: " + ", ".join(f"{name} = {_cell(rows[0][name])}" for name in shared))
    if len(rows) > top:
        lines.append(f"({len(rows) - top} more trials in leaderboard.csv)")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def config_toml(cfg: Config, changed_from: Config | None = None, header: str = "") -> str:
    """A TOML text of `cfg` (only the fields that differ from `changed_from`, default the code's defaults),
    which load_config and `recmaml fit --config` read back to the same Config."""
    base = (changed_from or Config()).to_dict()
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for section, values in cfg.to_dict().items():
        diff = {k: v for k, v in values.items() if v != base[section][k]}
        if not diff:
            continue
        lines += ["", f"[{section}]"] if lines else [f"[{section}]"]
        for key, value in diff.items():
            if value is None:
                continue  # absent = the default (None); TOML has no null
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    return str(value)


__all__ = ["Dimension", "TuneResult", "config_toml", "leaderboard_rows", "load_space", "space_from_dict", "tune"]
