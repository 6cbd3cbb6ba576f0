"""Spark batch scoring (extra `spark`): cold users' histories in a Spark DataFrame to ranked lists.

    from recmaml.spark import recommend
    ranked = recommend(spark.read.parquet("histories/"), "runs/ml100k", k=20)   # user_id, item_id, score, rank
    ranked.write.parquet("ranked/")

Users are hashed into buckets and each bucket is one `applyInPandas` group (the iterator form on Spark
4.1+), so that a Python worker adapts thousands of users in one batched call instead of one call per user;
every bucket holds all rows of its users. Within the worker the bucket goes through recmaml.serve, the
same path as `MetaRecommender.recommend` and `recmaml recommend`, so the lists are the same. The model is
read once per Python worker (a module cache keyed by the model's path and the sha256 of its weights, so a
retrained model at the same path is read again), with one torch thread per task slot. Data moves between
the JVM and Python as Arrow batches (what applyInPandas uses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from recmaml.errors import DataError, spelled

_MODELS: dict = {}  # (model path, weights sha256) -> MetaRecommender, one per Python worker process
OUTPUT_COLUMNS = ("user_id", "item_id", "score", "rank")


def _model_key(model_dir) -> tuple[str, str]:
    """(absolute path, weights sha256) of a saved model, read from its model.json on the driver."""
    from recmaml.checkpoint import METADATA

    path = Path(model_dir).resolve()
    try:
        meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a saved recmaml model ({METADATA}: {err}); pass the folder that "
                        "MetaRecommender.save or `recmaml fit --out` wrote") from err
    return str(path), str(meta.get("weights_sha256", ""))


def _cached_model(path: str, sha: str):
    from recmaml import MetaRecommender

    key = (path, sha)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker: a new sha at the same path replaces the old one
        rec = MetaRecommender.load(path)
        rec.config = rec.config.replace(serve={"threads": 1})  # one per Spark task slot: the slots fill the cores
        _MODELS[key] = rec
    return _MODELS[key]


def _serve_pandas(key, history, candidates, k: int, exclude_seen: bool, batch_size):
    """One bucket: pandas frames (user_id, item_id[, rating, timestamp]) to a pandas frame of ranked lists."""
    import numpy as np

    from recmaml.data import RankedLists
    from recmaml.frames import as_interactions
    from recmaml.serve import serve_chunks

    rec = _cached_model(*key)
    if rec.config.model.objective == "rating" and "rating" not in history.columns:
        history = history.assign(rating=np.zeros(len(history), np.float32))
    history_log = as_interactions(history, "history")
    cand_log = None if candidates is None or len(candidates) == 0 else as_interactions(
        candidates[["user_id", "item_id"]], "candidates")
    parts: list = []
    # a bucket holds a slice of the users: whether the whole input's ids match the model is not its to judge
    serve_chunks(rec, [history_log] if len(history) else [], parts.append, k=k, exclude_seen=exclude_seen,
                 candidates=cand_log, batch_size=batch_size, allow_unknown_items=True)
    ranked = RankedLists.concat(parts).to_pandas()
    if len(ranked) == 0:  # untyped empty columns: Arrow casts them to the schema's id types
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(OUTPUT_COLUMNS, ("object", "object", "float64", "int32"))})
    return ranked.astype({"score": "float64", "rank": "int32"})[list(OUTPUT_COLUMNS)]


def _iterator_form() -> bool:
    """Whether this Spark takes applyInPandas functions over an iterator of frames (4.1 and later)."""
    import pyspark

    major, minor = (int(part) for part in pyspark.__version__.split(".")[:2])
    return (major, minor) >= (4, 1)


def _schema(histories, user_col: str, item_col: str):
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    types = {f.name: f.dataType for f in histories.schema.fields}
    return StructType([StructField("user_id", types[user_col]), StructField("item_id", types[item_col]),
                       StructField("score", DoubleType()), StructField("rank", IntegerType())])


def _check_columns(frame, what: str, needed: list[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; found {frame.columns}; name the columns with "
                        + spelled("user_col=/item_col=/rating_col=", "--user-col, --item-col, --rating-col"))


def recommend(histories, model_dir, k: int = 20, candidates=None, *, user_col: str = "user_id",
              item_col: str = "item_id", rating_col: str | None = "rating", exclude_seen: bool = True,
              buckets: int | None = None, batch_size: int | None = None):
    """Ranked lists (user_id, item_id, score, rank) of every user of `histories`, a Spark DataFrame of
    (user, item[, rating, timestamp]) rows, with the model saved at `model_dir` (a path every executor
    can read). candidates: optional Spark DataFrame of (user, item) rows; then each user ranks only its
    own candidates, and users with candidates but no history are ranked from the meta-learned start.
    buckets: groups the users are hashed into (default: 4 per default-parallelism slot, so that a group
    holds many users and every slot gets work)."""
    from pyspark.sql import functions as F

    from recmaml.serve import _check_k

    _check_k(k)
    _check_columns(histories, "histories", [user_col, item_col])
    key = _model_key(model_dir)
    spark = histories.sparkSession
    n_buckets = buckets or 4 * spark.sparkContext.defaultParallelism
    if n_buckets < 1:
        raise DataError(f"buckets must be at least 1, got {n_buckets}")
    keep = [F.col(user_col).alias("user_id"), F.col(item_col).alias("item_id")]
    if rating_col and rating_col in histories.columns:
        keep.append(F.col(rating_col).cast("double").alias("rating"))
    bucket = F.pmod(F.hash("user_id"), F.lit(n_buckets)).alias("__bucket")
    history = histories.select(*keep).withColumn("__bucket", bucket)
    schema = _schema(histories, user_col, item_col)
    if candidates is None:
        if _iterator_form():
            def score_bucket(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
                # the iterator form: a bucket arrives as Arrow batches, which may split a user's rows
                frame = pd.concat(list(batches), ignore_index=True).drop(columns="__bucket")
                yield _serve_pandas(key, frame, None, k, exclude_seen, batch_size)
        else:
            def score_bucket(frame: pd.DataFrame) -> pd.DataFrame:
                return _serve_pandas(key, frame.drop(columns="__bucket"), None, k, exclude_seen, batch_size)

        return history.groupBy("__bucket").applyInPandas(score_bucket, schema)

    _check_columns(candidates, "candidates", [user_col, item_col])
    cand = candidates.select(F.col(user_col).alias("user_id"), F.col(item_col).alias("item_id")).withColumn(
        "__bucket", bucket)

    def score_cogroup(left, right):
        return _serve_pandas(key, left.drop(columns="__bucket"), right.drop(columns="__bucket"), k, exclude_seen,
                             batch_size)

    return history.groupBy("__bucket").cogroup(cand.groupBy("__bucket")).applyInPandas(score_cogroup, schema)


def _spark_format(path: str, format: str | None, flag: str) -> str:
    kind = (format or Path(path.rstrip("/")).suffix.lstrip(".")).lower()
    if kind not in ("parquet", "csv"):
        raise DataError(f"{flag} {path}: Spark scoring reads and writes Parquet or CSV; give a path ending "
                        f".parquet or .csv (a file or a folder of parts), or pass --format parquet|csv")
    return kind


def read_table(spark, path: str, format: str | None = None, flag: str = "--history"):
    """A Parquet or CSV file or folder (CSV with a header, types inferred) as a Spark DataFrame."""
    kind = _spark_format(path, format, flag)
    if "://" not in path and not Path(path).exists():
        raise DataError(f"{flag} {path}: no such file or folder")
    reader = spark.read.option("header", True).option("inferSchema", True) if kind == "csv" else spark.read
    return reader.format(kind).load(path)


def write_table(frame, path: str, format: str | None = None) -> None:
    """Write a Spark DataFrame as a folder of Parquet or CSV parts. A local folder is written beside its
    destination and moved into place when Spark has finished, so a failed job leaves the old output;
    a cluster URI (hdfs://, s3a://) relies on Spark's output committer."""
    import os
    import shutil
    import tempfile

    kind = _spark_format(path, format, "--out")
    writer = lambda dest: frame.write.mode("overwrite").option("header", True).format(kind).save(dest)  # noqa: E731
    if "://" in path:
        writer(path)
        return
    dest = Path(path).resolve()
    if not dest.parent.is_dir():
        raise DataError(f"--out {path}: folder {dest.parent} does not exist; create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        writer(str(tmp / "parts"))
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(tmp / "parts", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def session(master: str | None = None, app_name: str = "recmaml", quiet: bool = False):
    """A SparkSession (the active one, or a new one on `master`, e.g. local[2]) set up for scoring: Arrow
    batches of 10,000 rows between the JVM and Python; quiet: no stage progress bars, errors only."""
    import os
    import sys

    from pyspark.sql import SparkSession

    # Python workers run this interpreter (with torch and recmaml) unless the job says otherwise
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name).config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
    if master:
        builder = builder.master(master)
    if quiet:
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines (hostname, native libraries) are not the user's
    return spark


__all__ = ["read_table", "recommend", "session", "write_table"]
