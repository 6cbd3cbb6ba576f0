"""Epoch checkpoints of meta-training, so that a killed `recmaml fit` continues (`--resume`) to the very
weights an uninterrupted run with the same seed ends with.

After every epoch, meta_train writes everything the rest of the loop depends on: the model's, the EMA's and
the best epoch's weights, Adam's moments and steps, the torch generator and the task sampler's numpy
generator (the only random draws of the loop), the history (the epoch count, the best validation figure and
epoch, from which the patience count follows), the training time so far, and a fingerprint of the config
and the data. Tensors and their JSON description go into ONE safetensors file (the JSON in its header's
metadata), so that a single os.replace moves the new checkpoint into place: a kill at any moment leaves
either the previous checkpoint or the new one, never a mix. Loading never unpickles.
"""

from __future__ import annotations

import contextlib

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from recmaml.files import atomic_write, sweep_debris
from recmaml.config import Config, as_saved
from recmaml.data import Interactions
from recmaml.errors import CheckpointError, spelled

log = logging.getLogger(__name__)

CHECKPOINT = ".fit-checkpoint.safetensors"
"""The checkpoint's name inside the model directory (`fit --out`); removed once the model is saved."""
FORMAT_VERSION = 1
_HEADER_KEY = "recmaml_fit_checkpoint"  # the safetensors metadata entry holding the JSON part


@dataclass(frozen=True)
class EpochCheckpoint:
    """Where meta_train keeps its epoch checkpoint, and whether it continues from one found there."""

    path: Path
    resume: bool = False

    @classmethod
    def in_folder(cls, folder, resume: bool = False) -> EpochCheckpoint:
        return cls(Path(folder) / CHECKPOINT, resume)


def exists(folder) -> bool:
    return (Path(folder) / CHECKPOINT).is_file()


SAMPLE_WEIGHTS = "sample-weights"  # the folder of the sample weights' checkpoint, inside a fit's (model.sample_weights)


def discard(folder) -> None:
    """Remove the checkpoints of `folder` (its fit is saved), the sample weights' too, and the temporaries
    killed writers left."""
    for where in (Path(folder), Path(folder) / SAMPLE_WEIGHTS):
        path = where / CHECKPOINT
        path.unlink(missing_ok=True)
        if where.is_dir():
            sweep_debris(where, f".{path.name}.")
    with contextlib.suppress(OSError):
        (Path(folder) / SAMPLE_WEIGHTS).rmdir()  # only when empty


# ---- what a checkpoint must match ------------------------------------------------------------------------


def fingerprint(cfg: Config, log_: Interactions, user_feats: dict[str, torch.Tensor], model: torch.nn.Module) -> dict:
    """What makes two fits the same fit: the training sections of the config (not `serve`, not
    meta.device: ranks of one distributed fit train on different devices, and not meta.threads: a fit
    started beside another job may resume on an idle machine) and a sha256 of the data as the
    model sees it (the log's index columns, the user features and the model's buffers, which hold the item
    features and the item-kNN tables)."""
    config = json.loads(json.dumps(cfg.to_dict(), default=str))  # as it reads back: tuples become lists
    config.pop("serve", None)
    config.get("meta", {}).pop("device", None)
    config.get("meta", {}).pop("threads", None)
    digest = hashlib.sha256(f"{log_.n_users},{log_.n_items}".encode())
    columns = {"user_idx": log_.user_idx, "item_idx": log_.item_idx, "rating": log_.rating, "timestamp": log_.timestamp}
    tensors = {**{f"user_feats.{k}": v for k, v in user_feats.items()}, **dict(model.named_buffers(prefix="buffer"))}
    for name, array in [*columns.items(), *((k, v.detach().cpu().numpy()) for k, v in sorted(tensors.items()))]:
        digest.update(name.encode())
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return {"config": config, "data": digest.hexdigest()}


def _first_difference(old, new, where: str = "") -> tuple[str, object, object] | None:
    """The first dotted key (e.g. 'meta.meta_lr') whose value differs between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if old == new else (where, old, new)


def _check_same_fit(path: Path, saved: dict, current: dict) -> None:
    resume = spelled("fit(resume=True)", "--resume")
    start_over = f"or fit without {spelled('resume=True', '--resume')} to start over"
    saved_config = saved.get("config")
    diff = _first_difference(as_saved(saved_config) if isinstance(saved_config, dict) else saved_config,
                             current["config"])
    if diff:
        key, old, new = diff
        raise CheckpointError(f"{resume}: {path} was written by a fit with {key} = {old!r}, this one has {new!r}; "
                              f"resume with the same {spelled('config', '--config')}, {start_over}")
    if saved.get("data") != current["data"]:
        raise CheckpointError(f"{resume}: {path} was written by a fit on other data; resume with the same "
                              f"{spelled('warm log (and side features)', '--data (and --user-features / --item-features)')}"
                              f", {start_over}")


# ---- writing and reading --------------------------------------------------------------------------------


def _cpu_copies(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (views of one parameter): each gets its own copy
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save(ckpt: EpochCheckpoint, *, model, optimizer, ema, best_state, sampler, history, elapsed: float,
         finished: bool, fingerprint: dict, device: str) -> None:
    """Write the state after `len(history.epochs)` epochs, atomically (a temporary file, then os.replace)."""
    tensors = {**_cpu_copies("model", model.state_dict()), "rng.torch": torch.get_rng_state()}
    if ema is not None:
        tensors.update(_cpu_copies("ema", ema.state_dict()))
    if best_state is not None:
        tensors.update(_cpu_copies("best", best_state))
    for index, moments in optimizer.state_dict()["state"].items():  # Adam: step, exp_avg, exp_avg_sq
        tensors.update(_cpu_copies(f"adam.{index}", moments))
    if torch.device(device).type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    state = {
        "format_version": FORMAT_VERSION,
        "epoch": len(history.epochs),
        "of": history.max_epochs,
        "finished": finished,  # stopped (all epochs, early stopping, time budget): a resume trains no more
        "elapsed_seconds": elapsed,
        "history": {"epochs": history.epochs, "best_epoch": history.best_epoch, "best_score": history.best_score,
                    "stopped": history.stopped},
        "sampler_rng": sampler.rng.bit_generator.state,
        "has_best": best_state is not None,
        "fingerprint": fingerprint,
    }
    metadata = {_HEADER_KEY: json.dumps(state, default=float)}
    ckpt.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(ckpt.path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    unreadable = f"{path}: not a readable fit checkpoint"
    fix = "delete it, or fit without --resume to start over"
    try:  # safetensors never unpickles: a pickle or a truncated file fails here
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(_HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors' errors share no public base class
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(f"{unreadable} ({first}); {fix}") from err
    try:
        state = json.loads(header)
    except (TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{unreadable} (no recmaml state in its header); {fix}") from err
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{unreadable} (format {version!r}, this recmaml reads {FORMAT_VERSION}); {fix}")
    return state, tensors


def restore(ckpt: EpochCheckpoint, current: dict, *, model, optimizer, ema, sampler, history, device: str):
    """Load `ckpt` into the freshly built training objects. Returns (best_state, elapsed seconds, finished),
    or None when there is no checkpoint to resume from (a fresh start, which it logs)."""
    if not ckpt.path.is_file():
        log.info("--resume: no checkpoint in %s; starting from the first epoch", ckpt.path.parent)
        return None
    state, tensors = _read(ckpt.path)
    _check_same_fit(ckpt.path, state.get("fingerprint") or {}, current)
    try:
        model.load_state_dict(_part(tensors, "model"), strict=True)
        if ema is not None:
            ema.load_state_dict(_part(tensors, "ema"), strict=True)
        adam = optimizer.state_dict()  # keeps the param groups this config built; only the moments are saved
        adam["state"] = {}
        for key, value in _part(tensors, "adam").items():
            index, name = key.split(".", 1)
            adam["state"].setdefault(int(index), {})[name] = value
        optimizer.load_state_dict(adam)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        sampler.rng.bit_generator.state = state["sampler_rng"]
        saved = state["history"]
        history.restore(saved)
        best_state = _part(tensors, "best") if state["has_best"] else None
        elapsed, finished = float(state["elapsed_seconds"]), bool(state["finished"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:  # RuntimeError: torch's shape mismatches
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(f"{ckpt.path}: a malformed fit checkpoint ({type(err).__name__}: {first}); delete it, "
                              "or fit without --resume to start over") from err
    log.info("resuming from epoch %d of %d (the checkpoint in %s)", len(history.epochs), history.max_epochs,
             ckpt.path.parent)
    return best_state, elapsed, finished
