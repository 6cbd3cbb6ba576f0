"""Data-parallel meta-training: 2 gloo ranks with one gradient group each make the 1-process meta-update
(run with -m distributed; each test starts torchrun with 2 CPU processes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from recmaml import MetaRecommender

pytestmark = pytest.mark.distributed
HERE = Path(__file__).resolve().parent
GROUP = 20  # items per taste group in tests/planted.taste_groups


def _torchrun(*args, nproc: int = 2, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_two_ranks_with_a_group_each_make_the_one_process_meta_gradient_bit_for_bit(tmp_path):
    from distributed_worker import first_meta_gradient

    torch.set_num_threads(1)
    for batch_size in (64, 63, 1):  # an even split, groups of 32 and 31 users, and an empty group
        done = _torchrun(str(HERE / "distributed_worker.py"), str(tmp_path / "two.pt"), str(batch_size), "0")
        assert done.returncode == 0, done.stderr[-3000:]
        two_ranks, one_rank = torch.load(tmp_path / "two.pt"), first_meta_gradient(batch_size)
        assert two_ranks.keys() == one_rank.keys() and len(one_rank) > 5
        for name, grad in one_rank.items():
            assert torch.equal(two_ranks[name], grad), f"{name} ({batch_size})"


def _write_taste_log(taste_log, path) -> None:
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(),
                  "rating": taste_log.rating}).write_csv(path)


def test_fit_nproc_saves_the_one_process_model(taste_log, tmp_path):
    """Whole training runs, validation and fit's choices of serving weights included, end in equal weights
    and configs: the gradient groups make the ranks' arithmetic the single process's (one thread in every
    process, as --threads fixes it; 'auto' would follow the machine's load)."""
    from recmaml.cli import main

    _write_taste_log(taste_log, tmp_path / "warm.csv")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)  # the ranks import this checkout's recmaml
    fit = ["fit", "--config", "tiny", "--data", str(tmp_path / "warm.csv"), "--quiet", "--threads", "1"]
    assert main([*fit, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    torch.set_num_threads(1)
    assert main([*fit, "--out", str(tmp_path / "one")]) == 0
    saved = {name: json.loads((tmp_path / name / "model.json").read_text()) for name in ("one", "two")}
    assert saved["one"]["weights_sha256"] == saved["two"]["weights_sha256"]
    assert saved["one"]["config"] == saved["two"]["config"]
    assert [e["validation"] for e in saved["one"]["history"]] == [e["validation"] for e in saved["two"]["history"]]
    history = pl.DataFrame({"user_id": ["a"] * 3 + ["b"] * 3, "item_id": [0, 1, 2, 20, 21, 22], "rating": [5.0] * 6})
    ranked = MetaRecommender.load(tmp_path / "two").recommend(history, k=5)
    for user, group in (("a", 0), ("b", 1)):
        top = ranked.filter(pl.col("user_id") == user)["item_id"].to_numpy()
        assert (top // GROUP == group).sum() >= 4, (user, top)


def test_nproc_above_the_gradient_groups_is_an_error_naming_both(taste_log, tmp_path, capsys):
    from recmaml.cli import main

    _write_taste_log(taste_log, tmp_path / "warm.csv")
    code = main(["fit", "--config", "tiny", "--data", str(tmp_path / "warm.csv"), "--out", str(tmp_path / "m"),
                 "--quiet", "--nproc", "3"])
    err = capsys.readouterr().err
    assert code != 0 and "--nproc 3" in err and "--set meta.gradient_groups=3" in err, err
    assert not (tmp_path / "m").exists()
