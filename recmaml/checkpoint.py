"""Model directories: `weights.safetensors` plus `model.json` (resolved config, vocabularies, feature
specs, package and format versions, and the sha256 of the weights). Written atomically; checked on load.
No pickle is ever loaded. save_recommender and load_recommender lay a MetaRecommender out in one: its
main weights, the sample weights and the serving priors' tables in one weights file, under prefixes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recmaml.adapt import adapted_names
from recmaml.config import as_saved, config_from_dict, device_problem
from recmaml.data import Vocabulary
from recmaml.errors import CheckpointError, RecMamlError
from recmaml.files import atomic_write
from recmaml.meta import enable_meta_sgd
from recmaml.model import META_LR_PREFIX, FeatureSpec, Scorer
from recmaml.priors import ServingPriors

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
METADATA = "model.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], metadata: dict) -> None:
    """Weights first, metadata (holding the weights' hash) last: a crash in between leaves a directory
    whose hash check fails loudly instead of a silently mixed model."""
    from recmaml import __version__

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    meta = {
        "format_version": FORMAT_VERSION,
        "recmaml_version": __version__,
        "weights_sha256": _sha256(folder / WEIGHTS),
        **metadata,
    }
    atomic_write(folder / METADATA, lambda tmp: tmp.write_text(json.dumps(meta), encoding="utf-8"))


def _not_a_model(folder: Path) -> str:
    """Why `folder` holds no model, and the fix: it does not exist, it holds a model one level down (the
    quickstart's runs/quickstart holds runs/quickstart/model), or only an unfinished fit's checkpoint."""
    from recmaml.errors import spelled
    from recmaml.resume import exists as has_fit_checkpoint

    if not folder.exists():
        return "no such folder; check the path (a model is the folder `recmaml fit --out` or MetaRecommender.save wrote)"
    if not folder.is_dir():
        return "a file, not a model directory; give the folder `recmaml fit --out` or MetaRecommender.save wrote"
    inside = sorted(sub for sub in folder.iterdir() if (sub / METADATA).is_file() and (sub / WEIGHTS).is_file())
    if inside:
        where = spelled(f"MetaRecommender.load({str(inside[0])!r})", f"--model {inside[0]}")
        return f"not a model directory itself, but it holds one in {inside[0].name}/: pass {where}"
    if has_fit_checkpoint(folder):
        finish = spelled("fit(..., checkpoint_dir=folder, resume=True) with the same config and data",
                         f"recmaml fit --resume --out {folder} with the same --config and --data")
        return f"holds only the checkpoint of an unfinished fit (interrupted or killed), no model yet; finish it: {finish}"
    return (f"not a recmaml model directory (needs {METADATA} and {WEIGHTS}); train one with "
            f"{spelled('MetaRecommender.fit(...).save(path)', '`recmaml fit`')}")


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"a model directory is a path (str or pathlib.Path), got {type(path).__name__}")
    folder = Path(path)
    meta_path, weights_path = folder / METADATA, folder / WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: {_not_a_model(folder)}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path}: unreadable metadata ({err}); the model directory is corrupt") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: holds a JSON {type(meta).__name__}, not the model's metadata "
                              "object; the model directory is corrupt: retrain it or restore it")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: model format version {version!r}, this recmaml reads version "
                              f"{FORMAT_VERSION}; retrain the model or use the recmaml version that wrote it "
                              f"({meta.get('recmaml_version', 'unknown')})")
    actual = _sha256(weights_path)
    if actual != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights_path}: sha256 {actual} does not match {meta.get('weights_sha256')} "
                              f"recorded in {METADATA}; the weights are corrupt or from another model")
    try:  # safetensors never unpickles; a pickle, a truncated file or a forged header fails here
        return load_file(str(weights_path)), meta
    except Exception as err:  # safetensors' errors share no public base class
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({first}); the model "
                              "directory is corrupt: retrain it or restore it") from err


# ---- a MetaRecommender's directory ------------------------------------------------------------

def save_recommender(rec, path) -> None:
    """Write the fitted MetaRecommender `rec` to the model directory `path` (save_checkpoint)."""
    model = rec.model
    state = model.state_dict()
    if rec.sample_model is not None:
        state.update({f"{SAMPLE_PREFIX}{k}": v for k, v in rec.sample_model.state_dict().items()})
    if rec.priors is not None:
        state.update({f"{PRIORS_PREFIX}{k}": v for k, v in rec.priors.state_dict().items()})
    save_checkpoint(path, state, {
        "config": rec.config.to_dict(),
        "items": rec.items.to_json(),
        "user_spec": model.user_spec.to_json(),
        "item_spec": model.item_spec.to_json(),
        "user_layout": rec.user_layout,
        "history": None if rec.history is None else rec.history.epochs,
        "sample_history": None if rec.sample_history is None else rec.sample_history.epochs,
        "rating_range": rec.rating_range,
        "columns": rec.columns,
        "fitted_at": rec.fitted_at,
        "training_users": rec.training_users,
    })


def load_recommender(make, path, device: str = "cpu"):
    """The MetaRecommender saved in `path`, made by `make(config)` and filled, ready to serve on `device`."""
    state, meta = load_checkpoint(path)
    missing = [k for k in ("config", "items", "user_spec", "item_spec", "user_layout") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}/{METADATA}: missing {missing}; the model "
                              "directory is incomplete or was not written by MetaRecommender.save")
    problem = device_problem(device)
    if problem:
        raise RecMamlError(f"MetaRecommender.load(device={device!r}): {problem}")
    config = meta["config"]
    if isinstance(config, dict) and isinstance(config.get("meta"), dict):  # served where it is loaded, not
        config = {**config, "meta": {**config["meta"], "device": device}}  # where it was trained
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}/{METADATA}: 'config' is not a table of sections; "
                              "the model directory is corrupt")
    rec = make(config_from_dict(as_saved(config), f"{path}/{METADATA}"))
    rec.weights_sha256 = meta.get("weights_sha256")  # checked against the file by load_checkpoint
    try:
        rec.items = Vocabulary.from_json(meta["items"])
        rec.user_layout = meta["user_layout"]
        rec.columns = meta.get("columns")  # absent in models saved before it was recorded
        rec.fitted_at = meta.get("fitted_at")  # these two as well: repr(rec) then says they were not recorded
        training_users = meta.get("training_users")
        rec.training_users = None if training_users is None else int(training_users)
        rating_range = meta.get("rating_range")  # absent in models saved before it was recorded: no clipping
        rec.rating_range = None if rating_range is None else (float(rating_range[0]), float(rating_range[1]))
        user_spec, item_spec = FeatureSpec.from_json(meta["user_spec"]), FeatureSpec.from_json(meta["item_spec"])
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{path}/{METADATA}: malformed metadata ({type(err).__name__}: "
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
        raise CheckpointError(f"{path}: the serving priors' tables do not fit ({str(err)[:200]}); "
                              "the model directory is corrupt or mixed") from err
    if priors.ease_index.shape[0] != n_items:
        raise CheckpointError(f"{path}: the serving priors cover {priors.ease_index.shape[0]} items, "
                              f"the model {n_items}; the model directory is corrupt or mixed")
    return priors.to(device)


def _loaded_scorer(path, rec, state: dict, user_spec, item_spec, device: str) -> Scorer:
    """A scorer of the saved config's shape holding `state`, on `device` in eval mode."""
    model = Scorer(len(rec.items), rec.config.model, user_spec=user_spec, item_spec=item_spec)
    if any(k.startswith(f"{META_LR_PREFIX}.") for k in state):
        enable_meta_sgd(model, adapted_names(model, rec.config.meta.adapt), rec.config.meta.inner_lr)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # torch lists every mismatch over many lines: name the first and count
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        first = lines[0][:200] if lines else str(err)[:200]
        raise CheckpointError(f"{path}: weights do not fit the saved config ({len(lines)} problem(s); "
                              f"first: {first}); the model directory is corrupt or mixed") from err
    return model.to(device).eval()
