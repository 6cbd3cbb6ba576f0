"""Spark batch scoring gives the CLI's ranked lists and output (run with -m spark; needs pyspark and
Java); what `spark-recommend` checks before it starts Spark is tested without either."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from recmaml import MetaRecommender, RankedLists
from recmaml.cli import main
from recmaml.connectors import read_ranked_lists

GROUP = 20  # items per taste group in tests/planted.taste_groups


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
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


@pytest.mark.spark
@pytest.mark.parametrize("with_candidates", [False, True])
def test_spark_local_gives_the_clis_ranked_lists(spark, model_dir, inputs, tmp_path, with_candidates):
    extra = ["--candidates", str(inputs / "candidates.parquet")] if with_candidates else []
    base = ["--model", str(model_dir), "--history", str(inputs / "history.parquet"), "--k", "5", "--quiet", *extra]
    assert main(["recommend", *base, "--out", str(tmp_path / "cli.parquet")]) == 0
    assert main(["spark-recommend", *base, "--out", str(tmp_path / "spark.parquet"), "--master", "local[2]"]) == 0
    cli_out = read_ranked_lists(tmp_path / "cli.parquet")
    parts = pl.read_parquet(tmp_path / "spark.parquet" / "*.parquet")  # the parts in the order of their names
    spark_out = RankedLists.from_frame(parts)
    _assert_same_lists(spark_out, cli_out)
    # written as the CLI writes them: float32 scores, users in ascending id order with their ranks in order
    assert parts.schema["score"] == pl.Float32 and parts.schema["rank"] == pl.Int32
    np.testing.assert_array_equal(parts["user_id"].to_numpy(), cli_out.user_id)
    np.testing.assert_array_equal(parts["rank"].to_numpy(), cli_out.rank)
    users = set(spark_out.user_id.tolist())
    if with_candidates:
        assert {"only-candidates-1", "only-candidates-2"} <= users and len(users) == 45
    else:
        assert len(users) == 300
    assert not list(tmp_path.glob(".spark.parquet.*"))  # the temporary folder is gone


@pytest.mark.spark
def test_the_python_api_returns_a_spark_frame_of_ranked_lists(spark, model_dir, inputs):
    from recmaml import spark as recmaml_spark

    histories = spark.read.parquet(str(inputs / "history.parquet")).withColumnRenamed("user_id", "uid")
    ranked = recmaml_spark.recommend(histories, model_dir, k=3, user_col="uid", buckets=3)
    assert ranked.columns == ["user_id", "item_id", "score", "rank"]
    local = ranked.toPandas()
    assert local.groupby("user_id").size().eq(3).all() and local.user_id.nunique() == 300
    with pytest.raises(Exception, match="missing column"):
        recmaml_spark.recommend(histories, model_dir, k=3)  # no user_id column: named with the fix


@pytest.mark.spark
def test_a_worker_keeps_one_model_per_path_and_weights(model_dir, tmp_path):
    import shutil

    from recmaml.spark import _MODELS, _cached_model, _model_key

    key = _model_key(model_dir)
    first = _cached_model(*key)
    assert _cached_model(*key) is first and len(_MODELS) == 1  # read once, then reused
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert _cached_model(*_model_key(copy)) is not first and len(_MODELS) == 1  # another model replaces it


def _train_on_ranks(data, out):  # what docs/distributed.md's TorchDistributor recipe runs on each rank
    from recmaml import MetaRecommender, distributed, load_config
    from recmaml.connectors import read_interactions

    rec = MetaRecommender(load_config("tiny")).fit(read_interactions(data))
    rank, size = distributed.rank_and_size()
    if rank == 0:
        rec.save(out)
    return size


@pytest.mark.spark
def test_the_docs_torch_distributor_recipe_trains_on_two_ranks(spark, taste_log, tmp_path, monkeypatch):
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


@pytest.fixture
def no_spark_start(monkeypatch):
    """Fails a test whose command would start Spark (a JVM) at all."""
    from recmaml import spark as recmaml_spark

    def start(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(recmaml_spark, "session", start)


def test_spark_recommend_checks_model_inputs_and_output_before_starting_spark(tiny_model_dir, tmp_path,
                                                                             no_spark_start, capsys):
    # no pyspark or Java needed: every one of these fails before the JVM would start, in one line
    history = tmp_path / "history.csv"
    history.write_text("user_id,item_id\n1,2\n")
    ok = ["--model", str(tiny_model_dir), "--history", str(history), "--out", str(tmp_path / "ranked.parquet")]
    cases = [
        (["--model", str(tmp_path / "nomodel")], "nomodel: not a saved recmaml model"),
        (["--history", str(tmp_path / "absent.parquet")], "--history"),
        (["--history", str(tmp_path / "history.xlsx")], "Parquet or CSV"),
        (["--candidates", str(tmp_path / "absent.csv")], "--candidates"),
        (["--out", str(tmp_path / "no" / "ranked.parquet")], "does not exist"),
        (["--out", str(tmp_path / "ranked.xlsx")], "--out"),
        (["--k", "0"], "--k"),
    ]
    for change, words in cases:
        argv = list(ok)
        for flag, value in zip(change[::2], change[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        assert main(["spark-recommend", *argv]) == 2, change
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("recmaml spark-recommend: error:") and words in lines[0], err
    assert not (tmp_path / "ranked.parquet").exists()


def _with_unknown_items(inputs, tmp_path):
    history = pl.read_parquet(inputs / "history.parquet")
    unknown = pl.DataFrame({"user_id": [f"user-{u}" for u in range(0, 300, 30)],
                            "item_id": [10_000 + u for u in range(10)], "rating": [4.0] * 10})
    path = tmp_path / "with_unknown.parquet"
    pl.concat([history, unknown]).write_parquet(path)
    return path


@pytest.mark.spark
def test_unknown_items_are_one_summary_line_like_the_clis(spark, model_dir, inputs, tmp_path, capfd):
    history = _with_unknown_items(inputs, tmp_path)  # 10 unknown items over 10 users, in several buckets
    base = ["--model", str(model_dir), "--history", str(history), "--k", "5"]
    assert main(["recommend", *base, "--out", str(tmp_path / "cli.csv")]) == 0
    cli_lines = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert main(["spark-recommend", *base, "--out", str(tmp_path / "spark.csv"), "--buckets", "4"]) == 0
    err = capfd.readouterr().err  # the workers' stderr too, which Spark passes on
    assert "UnknownItemsWarning" not in err and "serve.py" not in err, err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert lines == cli_lines == ["warning: dropped 10 history rows naming 10 items the model does not know"]


@pytest.mark.spark
def test_quiet_spark_recommend_prints_none_of_the_jvms_warn_lines(model_dir, inputs, tmp_path):
    # a fresh process: the JVM's WARN lines (hostname, native libraries) come as it starts
    pytest.importorskip("pyspark")
    history = _with_unknown_items(inputs, tmp_path)
    done = subprocess.run([sys.executable, "-m", "recmaml", "--quiet", "spark-recommend", "--model", str(model_dir),
                           "--history", str(history), "--out", str(tmp_path / "ranked.parquet"),
                           "--master", "local[2]"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines()
             if line.strip() and not line.startswith("WARNING: Using incubator modules")]  # the JVM's own, not log4j's
    assert noise == [], done.stderr
    assert len(pl.read_parquet(tmp_path / "ranked.parquet" / "*.parquet")) == 300 * 20
