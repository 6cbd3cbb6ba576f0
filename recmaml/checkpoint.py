"""Model directories: `weights.safetensors` plus `model.json` (resolved config, vocabularies, feature
specs, package and format versions, and the sha256 of the weights). Written atomically; checked on load.
No pickle is ever loaded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recmaml.errors import CheckpointError
from recmaml.files import atomic_write

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
