"""`recmaml fit --resume`: an epoch checkpoint written atomically after every epoch, from which a killed fit
continues to the weights an uninterrupted run with the same seed ends with; another config or log is
refused (exit 2, one line); a finished fit leaves no checkpoint behind."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from recmaml import MetaRecommender, resume
from recmaml.files import default_file_mode
from recmaml.cli import main

TINY = REPO_ROOT / "configs" / "tiny.toml"
DETERMINISTIC = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process fits on one thread: the same arithmetic in every fit, and no oversubscribed cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def warm_csv(tmp_path_factory, taste_log):
    path = tmp_path_factory.mktemp("resume") / "warm.csv"
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(), "rating": taste_log.rating}
                 ).write_csv(path)
    return path


def _config(tmp_path, **meta):
    """tiny.toml (15 epochs, EMA on: the checkpoint holds it) with some [meta] fields changed."""
    text = TINY.read_text()
    for key, value in meta.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        if not found:
            text = text.replace("[meta]\n", f"[meta]\n{key} = {value}\n")
    path = tmp_path / ("config" + "".join(f"-{k}{v}" for k, v in meta.items()) + ".toml")
    path.write_text(text)
    return path


def _fit(config, data, out, *extra, quiet=True):
    """`recmaml fit`'s arguments; quiet=False keeps its log lines (what it says about the checkpoint)."""
    argv = ["fit", "--config", str(config), "--data", str(data), "--out", str(out), *extra]
    return [*argv, "--quiet"] if quiet else argv


def _epoch_of(path) -> int:
    state, _ = resume._read(path)
    return state["epoch"]


def _history(model_dir) -> list[dict]:
    """The epochs a saved model records, without their clock times."""
    epochs = json.loads((model_dir / "model.json").read_text())["history"]
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in epochs]


def _leftovers(out):
    return sorted(p.name for p in out.glob("*fit-checkpoint*"))


def _interrupt_after(monkeypatch, epochs: int):
    """Make the fit stop like a Ctrl-C right after writing the checkpoint of epoch `epochs`."""
    save = resume.save

    def save_then_interrupt(ckpt, **kwargs):
        save(ckpt, **kwargs)
        if len(kwargs["history"].epochs) == epochs:
            raise KeyboardInterrupt
    monkeypatch.setattr(resume, "save", save_then_interrupt)


def test_the_checkpoint_is_replaced_atomically(taste_log, tiny_config, tmp_path, monkeypatch):
    """A write that fails midway (a full disk, a kill) leaves the previous checkpoint whole and no temporary."""
    real_save_file = resume.save_file

    def half_written(tensors, path, metadata=None):
        if '"epoch": 2,' in metadata[resume._HEADER_KEY]:
            with open(path, "wb") as f:
                f.write(b"\x00" * 1000)  # half a file, then the failure
            raise OSError(28, "No space left on device")
        real_save_file(tensors, path, metadata=metadata)
    monkeypatch.setattr(resume, "save_file", half_written)
    config = tiny_config.replace(meta={"epochs": 4})
    with pytest.raises(OSError, match="No space left"):
        MetaRecommender(config).fit(taste_log, checkpoint_dir=tmp_path)
    path = tmp_path / resume.CHECKPOINT
    assert _epoch_of(path) == 1  # the previous checkpoint, readable
    assert _leftovers(tmp_path) == [resume.CHECKPOINT]  # the temporary was removed
    assert path.stat().st_mode & 0o777 == default_file_mode()  # the user's umask, not mkstemp's 0600


def test_a_killed_fit_resumes_to_the_weights_of_an_uninterrupted_one(warm_csv, tmp_path):
    """A real SIGKILL of `recmaml fit` once its checkpoint of epoch 2 is on disk; `fit --resume` then ends
    with the very bytes of the uninterrupted run's weights."""
    config = _config(tmp_path, epochs=40, patience=8)  # stops early (epoch 19): the patience count resumes too
    env = {**os.environ, **DETERMINISTIC}

    def start(out, *extra, quiet=True):
        argv = [sys.executable, "-m", "recmaml", *_fit(config, warm_csv, out, *extra, quiet=quiet)]
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    whole, out = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start(whole)
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()

    killed = start(out)
    checkpoint = out / resume.CHECKPOINT
    deadline = time.monotonic() + 300
    while not (checkpoint.is_file() and _epoch_of(checkpoint) >= 2) and killed.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the fit ended before it could be killed"
    assert not (out / "weights.safetensors").exists()
    done = _epoch_of(checkpoint)

    resumed = start(out, "--resume", quiet=False)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from epoch {done} of 40" in err, err

    mine, theirs = load_file(out / "weights.safetensors"), load_file(whole / "weights.safetensors")
    # every tensor the same (NaN where NaN: a prior that reads every row stores its threshold as NaN)
    assert mine.keys() == theirs.keys() and [k for k in mine if not torch.equal(mine[k].isnan(), theirs[k].isnan())
                                             or not torch.equal(mine[k].nan_to_num(), theirs[k].nan_to_num())] == []
    assert (out / "weights.safetensors").read_bytes() == (whole / "weights.safetensors").read_bytes()
    assert 2 <= done < len(_history(whole))  # killed midway
    assert _history(out) == _history(whole)  # the same epochs, losses and validation figures, and stop
    assert _leftovers(out) == [] and _leftovers(whole) == []  # a saved fit leaves no checkpoint


def test_an_interrupted_fit_resumes_in_process_and_says_so(warm_csv, tmp_path, monkeypatch, capsys):
    """Ctrl-C after epoch 12 keeps the checkpoint and says how to continue; --resume continues it. The best
    epoch (11 on this log) lies before the interruption: the resumed run must keep it, not take epoch 13."""
    config, whole, out = _config(tmp_path), tmp_path / "whole", tmp_path / "m"
    assert main(_fit(config, warm_csv, whole)) == 0
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 12)
        assert main(_fit(config, warm_csv, out, quiet=False)) == 130
    assert "rerun with --resume to continue" in capsys.readouterr().err
    assert _epoch_of(out / resume.CHECKPOINT) == 12
    assert main(_fit(config, warm_csv, out, "--resume", quiet=False)) == 0
    assert "resuming from epoch 12 of 15" in capsys.readouterr().err
    assert (out / "weights.safetensors").read_bytes() == (whole / "weights.safetensors").read_bytes()
    assert _history(out) == _history(whole)
    assert _leftovers(out) == []


def test_a_fit_killed_after_its_last_epoch_resumes_to_saving_it(warm_csv, tmp_path, monkeypatch, capsys):
    """The last epoch's checkpoint says training is over: --resume trains no more and saves that model."""
    config, whole, out = _config(tmp_path, epochs=3), tmp_path / "whole", tmp_path / "m"
    assert main(_fit(config, warm_csv, whole)) == 0
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        assert main(_fit(config, warm_csv, out)) == 130
    assert main(_fit(config, warm_csv, out, "--resume", quiet=False)) == 0
    assert "resuming from epoch 3 of 3" in capsys.readouterr().err
    assert (out / "weights.safetensors").read_bytes() == (whole / "weights.safetensors").read_bytes()
    assert _history(out) == _history(whole) and _leftovers(out) == []


def test_resuming_another_config_or_log_is_refused_in_one_line(warm_csv, tmp_path, monkeypatch, capsys):
    config, out = _config(tmp_path), tmp_path / "m"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        assert main(_fit(config, warm_csv, out)) == 130
    other_log = tmp_path / "other.csv"
    pl.read_csv(warm_csv).head(2000).write_csv(other_log)
    refusals = [
        (_fit(_config(tmp_path, meta_lr=0.02), warm_csv, out, "--resume"),
         ["--resume", "meta.meta_lr = 0.01", "0.02", "--config"]),
        (_fit(config, other_log, out, "--resume"), ["--resume", "other data", "--data"]),
    ]
    capsys.readouterr()
    for argv, words in refusals:
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("recmaml fit: error: --resume:"), err
        assert all(w in lines[0] for w in words), err
    assert _epoch_of(out / resume.CHECKPOINT) == 1  # a refusal leaves the checkpoint as it was
    assert not (out / "weights.safetensors").exists()

    (out / resume.CHECKPOINT).write_bytes(b"\x80\x04not a checkpoint")  # corrupt (a pickle's first bytes)
    assert main(_fit(config, warm_csv, out, "--resume")) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "not a readable fit checkpoint" in lines[0] and "without --resume" in lines[0]


def test_without_resume_a_checkpoint_is_ignored_and_a_finished_fit_leaves_none(warm_csv, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / resume.CHECKPOINT).write_bytes(b"an old, unreadable checkpoint")
    (out / f".{resume.CHECKPOINT}.999999999.abc.tmp").write_bytes(b"what a killed writer left")
    assert main(_fit(_config(tmp_path, epochs=3), warm_csv, out, quiet=False)) == 0
    assert "starting over (--resume continues it)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.safetensors"]

    assert main(_fit(_config(tmp_path, epochs=3), warm_csv, tmp_path / "fresh", "--resume", quiet=False)) == 0
    assert "--resume: no checkpoint in" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["model.json", "weights.safetensors"]


def test_a_checkpoint_and_a_model_from_before_the_gradient_groups_read_as_one_group(tiny_model_dir, tmp_path):
    """Both were trained as one group: a checkpoint whose config lacks meta.gradient_groups resumes a fit of
    one group and is refused, naming the key, for the default 2; a model.json without it loads as 1."""
    from recmaml.errors import CheckpointError

    current = {"config": {"meta": {"method": "maml", "gradient_groups": 1}}, "data": "d"}
    old = {"config": {"meta": {"method": "maml"}}, "data": "d"}
    resume._check_same_fit(tmp_path / "checkpoint", old, current)  # no error: the same fit
    current["config"]["meta"]["gradient_groups"] = 2
    with pytest.raises(CheckpointError, match="meta.gradient_groups = 1, this one has 2"):
        resume._check_same_fit(tmp_path / "checkpoint", old, current)

    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.json", "weights.safetensors"):
        (model / name).write_bytes((tiny_model_dir / name).read_bytes())
    meta = json.loads((model / "model.json").read_text())
    assert MetaRecommender.load(model).config.meta.gradient_groups == meta["config"]["meta"]["gradient_groups"] == 2
    del meta["config"]["meta"]["gradient_groups"]
    (model / "model.json").write_text(json.dumps(meta))
    assert MetaRecommender.load(model).config.meta.gradient_groups == 1
