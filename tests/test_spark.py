"""Spark batch scoring gives the CLI's ranked lists (run with -m spark; needs pyspark and Java)."""

import numpy as np
import polars as pl
import pytest

pytest.importorskip("pyspark")

from recmaml import MetaRecommender, RankedLists  # noqa: E402
from recmaml.cli import main  # noqa: E402
from recmaml.connectors import read_ranked_lists  # noqa: E402

pytestmark = pytest.mark.spark
GROUP = 20  # items per taste group in recmaml.synthetic.taste_groups


@pytest.fixture(scope="module")
def spark():
    from recmaml.spark import session

    spark = session("local[2]", quiet=True)
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """300 cold users with string ids and 1-8 rows each, in no particular order, and candidates for some
    of them plus users who have candidates only."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("spark-inputs")
    rows = []
    for u in range(300):
        group = u % 3
        items = rng.choice(np.arange(group * GROUP, (group + 1) * GROUP), size=1 + u % 8, replace=False)
        rows += [(f"user-{u}", int(i), float(rng.integers(3, 6))) for i in items]
    history = pl.DataFrame(rows, schema=["user_id", "item_id", "rating"], orient="row").sample(fraction=1.0, seed=1,
                                                                                               shuffle=True)
    history.write_parquet(folder / "history.parquet")
    cand_users = [f"user-{u}" for u in range(0, 300, 7)] + ["only-candidates-1", "only-candidates-2"]
    cands = pl.DataFrame([(u, int(i)) for u in cand_users for i in rng.choice(60, size=6, replace=False)],
                         schema=["user_id", "item_id"], orient="row")
    cands.write_parquet(folder / "candidates.parquet")
    return folder


def _key(ranked):
    return sorted(zip(ranked.user_id.tolist(), ranked.rank.tolist(), ranked.item_id.tolist()))


def _assert_same_lists(spark_out, cli_out):
    assert len(spark_out) == len(cli_out) > 0
    assert _key(spark_out) == _key(cli_out)  # ids and ranks exactly
    order = lambda r: np.lexsort((r.rank, r.user_id.astype(str)))  # noqa: E731
    np.testing.assert_allclose(spark_out.score[order(spark_out)], cli_out.score[order(cli_out)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_candidates", [False, True])
def test_spark_local_gives_the_clis_ranked_lists(spark, model_dir, inputs, tmp_path, with_candidates):
    extra = ["--candidates", str(inputs / "candidates.parquet")] if with_candidates else []
    base = ["--model", str(model_dir), "--history", str(inputs / "history.parquet"), "--k", "5", "--quiet", *extra]
    assert main(["recommend", *base, "--out", str(tmp_path / "cli.parquet")]) == 0
    assert main(["spark-recommend", *base, "--out", str(tmp_path / "spark.parquet"), "--master", "local[2]"]) == 0
    cli_out = read_ranked_lists(tmp_path / "cli.parquet")
    spark_out = RankedLists.from_frame(pl.read_parquet(tmp_path / "spark.parquet" / "*.parquet"))
    _assert_same_lists(spark_out, cli_out)
    users = set(spark_out.user_id.tolist())
    if with_candidates:
        assert {"only-candidates-1", "only-candidates-2"} <= users and len(users) == 45
    else:
        assert len(users) == 300
    assert not list(tmp_path.glob(".spark.parquet.*"))  # the temporary folder is gone


def test_the_python_api_returns_a_spark_frame_of_ranked_lists(spark, model_dir, inputs):
    from recmaml import spark as recmaml_spark

    histories = spark.read.parquet(str(inputs / "history.parquet")).withColumnRenamed("user_id", "uid")
    ranked = recmaml_spark.recommend(histories, model_dir, k=3, user_col="uid", buckets=3)
    assert ranked.columns == ["user_id", "item_id", "score", "rank"]
    local = ranked.toPandas()
    assert local.groupby("user_id").size().eq(3).all() and local.user_id.nunique() == 300
    with pytest.raises(Exception, match="missing column"):
        recmaml_spark.recommend(histories, model_dir, k=3)  # no user_id column: named with the fix


def test_a_worker_keeps_one_model_per_path_and_weights(model_dir, tmp_path):
    import shutil

    from recmaml.spark import _MODELS, _cached_model, _model_key

    key = _model_key(model_dir)
    first = _cached_model(*key)
    assert _cached_model(*key) is first and len(_MODELS) == 1  # read once, then reused
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert _cached_model(*_model_key(copy)) is not first and len(_MODELS) == 1  # another model replaces it


def _train_on_ranks(data, out):  # what the README's TorchDistributor recipe runs on each rank
    from recmaml import MetaRecommender, distributed, load_config
    from recmaml.connectors import read_interactions

    rec = MetaRecommender(load_config("tiny")).fit(read_interactions(data))
    rank, size = distributed.rank_and_size()
    if rank == 0:
        rec.save(out)
    return size


def test_the_readmes_torch_distributor_recipe_trains_on_two_ranks(spark, taste_log, tmp_path, monkeypatch):
    import os
    import sys
    from pathlib import Path

    from pyspark.ml.torch.distributor import TorchDistributor

    # the ranks unpickle _train_on_ranks by reference: they must import this module (and this checkout)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))

    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(),
                  "rating": taste_log.rating}).write_parquet(tmp_path / "warm.parquet")
    world = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(
        _train_on_ranks, str(tmp_path / "warm.parquet"), str(tmp_path / "model"))
    assert world == 2  # rank 0 ran inside a process group of two
    history = pl.DataFrame({"user_id": ["a"] * 3, "item_id": [0, 1, 2], "rating": [5.0] * 3})
    top = MetaRecommender.load(tmp_path / "model").recommend(history, k=5)["item_id"].to_numpy()
    assert (top // GROUP == 0).sum() >= 4
