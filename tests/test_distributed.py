"""Data-parallel meta-training: 2 gloo ranks with half the meta-batch each make the 1-rank meta-update
(run with -m distributed; each test starts torchrun with 2 CPU processes)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recmaml.config import SIZE_BUCKETS

from recmaml import MetaRecommender

pytestmark = pytest.mark.distributed
HERE = Path(__file__).resolve().parent
GROUP = 20  # items per taste group in tests/planted.taste_groups


def _torchrun(*args, nproc: int = 2, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_two_ranks_with_half_the_batch_each_make_the_one_rank_meta_gradient(tmp_path):
    from distributed_worker import first_meta_gradient

    torch.set_num_threads(1)
    for batch_size in (64, 63, 1):  # an even split, ranks with 32 and 31 users, and one with none
        done = _torchrun(str(HERE / "distributed_worker.py"), str(tmp_path / "two.pt"), str(batch_size), "0")
        assert done.returncode == 0, done.stderr[-3000:]
        two_ranks, one_rank = torch.load(tmp_path / "two.pt"), first_meta_gradient(batch_size)
        assert two_ranks.keys() == one_rank.keys() and len(one_rank) > 5
        for name, grad in one_rank.items():
            torch.testing.assert_close(two_ranks[name], grad, atol=1e-7, rtol=1e-4, msg=f"{name} ({batch_size})")


def test_fit_nproc_trains_a_model_that_saves_and_serves_like_the_one_process_model(taste_log, tmp_path):
    """Whole training runs agree in what they serve. Scores are compared up to a constant per user: Adam
    turns a gradient that is zero up to rounding (the item tower's bias, which moves all of a user's
    scores alike) into a step of +-lr by its sign, so that weight differs while no ranking does."""
    from recmaml.cli import main

    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(),
                  "rating": taste_log.rating}).write_csv(tmp_path / "warm.csv")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)  # the ranks import this checkout's recmaml
    # one thread in every process (meta.threads = 'auto' would follow the machine's load): the ranks' and
    # the single process's products then differ only in how the batch is split
    fit = ["fit", "--config", "tiny", "--data", str(tmp_path / "warm.csv"), "--quiet", "--threads", "1"]
    assert main([*fit, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    torch.set_num_threads(1)
    assert main([*fit, "--out", str(tmp_path / "one")]) == 0
    history = pl.DataFrame({"user_id": ["a"] * 3 + ["b"] * 3, "item_id": [0, 1, 2, 20, 21, 22], "rating": [5.0] * 6})
    served = {name: MetaRecommender.load(tmp_path / name) for name in ("one", "two")}
    ranked = served["two"].recommend(history, k=5)
    for user, group in (("a", 0), ("b", 1)):
        top = ranked.filter(pl.col("user_id") == user)["item_id"].to_numpy()
        assert (top // GROUP == group).sum() >= 4, (user, top)
    # fit chose the same serving scales on both; compared at one full step each (the scale fit chose for
    # this size, up to 4, multiplies the rounding differences of the two trainings' weights alike)
    assert served["one"].config.serve == served["two"].config.serve
    one, two = (served[name].with_scales((1.0,) * len(SIZE_BUCKETS)).score(history, users=["a", "b"])
                for name in ("one", "two"))
    np.testing.assert_allclose(two - two.mean(axis=1, keepdims=True), one - one.mean(axis=1, keepdims=True),
                               atol=2e-3, rtol=0)
    assert (np.argsort(-two, axis=1)[:, :10] == np.argsort(-one, axis=1)[:, :10]).mean() > 0.9
