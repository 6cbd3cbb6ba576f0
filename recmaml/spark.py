"""Spark batch scoring (extra `spark`): cold users' histories in a Spark DataFrame to ranked lists.

    from recmaml.spark import recommend
    ranked = recommend(spark.read.parquet("histories/"), "runs/ml100k", k=20)   # user_id, item_id, score, rank
    ranked.write.parquet("ranked/")

Users are split into buckets, ranges of user ids (`repartitionByRange`), and each bucket is one
`mapInPandas` partition, so that a Python worker adapts thousands of users in one batched call instead of
one call per user; every bucket holds all rows (history and candidates) of its users. Within the
worker the bucket goes through recmaml.serve, the same path as `MetaRecommender.recommend` and `recmaml
recommend`, so the lists are the same, written the same way (float32 scores, users in ascending id
order). The model is read once per Python worker (a module cache keyed by the model's path and the
sha256 of its weights, so a retrained model at the same path is read again), with one torch thread per
task slot. Data moves between the JVM and Python as Arrow batches (what mapInPandas uses).
"""

from __future__ import annotations

import contextlib
import json
import warnings
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


@contextlib.contextmanager
def _dropped_rows_to(accumulator):
    """In a worker: the warnings about dropped history rows (unknown items, duplicated pairs), which come
    once per bucket, added to the driver's `accumulator` instead of printed with their source lines, so
    that the driver can sum them into one line for the job; others pass on. None: printed as they come."""
    if accumulator is None:
        yield
        return
    from recmaml.frames import DuplicateInteractionsWarning
    from recmaml.cold import UnknownItemsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    dropped = [w.message for w in caught if issubclass(w.category, (UnknownItemsWarning, DuplicateInteractionsWarning))]
    if dropped:
        accumulator.add(dropped)
    for w in caught:
        if w.message not in dropped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def dropped_rows(spark):
    """An accumulator for recommend(dropped=...): after an action on the ranked lists (a write, a count) its
    `.value` is the list of the workers' UnknownItemsWarning and DuplicateInteractionsWarning, whose
    `rows`, `item_ids` and `what` a driver sums into one summary (`recmaml spark-recommend` does). A
    retried task adds its warnings again."""
    return spark.sparkContext.accumulator([], _ListSum())


class _ListSum:
    """A Spark AccumulatorParam (its two methods) whose values are lists, added by concatenation."""

    def zero(self, value):
        return []

    def addInPlace(self, first, second):
        first.extend(second)
        return first


def _serve_pandas(key, history, candidates, k: int, exclude_seen: bool, batch_size, dropped=None):
    """One bucket: pandas frames (user_id, item_id[, rating, timestamp]) to a pandas frame of ranked lists."""
    import numpy as np

    from recmaml.data import RankedLists
    from recmaml.frames import as_interactions
    from recmaml.serve import serve_chunks

    rec = _cached_model(*key)
    if rec.config.model.objective == "rating" and "rating" not in history.columns:
        history = history.assign(rating=np.zeros(len(history), np.float32))
    parts: list = []
    with _dropped_rows_to(dropped):
        history_log = as_interactions(history, "history")
        cand_log = None if candidates is None or len(candidates) == 0 else as_interactions(
            candidates[["user_id", "item_id"]], "candidates")
        # a bucket holds a slice of the users: whether the whole input's ids match the model is not its to judge
        serve_chunks(rec, [history_log] if len(history) else [], parts.append, k=k, exclude_seen=exclude_seen,
                     candidates=cand_log, batch_size=batch_size, allow_unknown_items=True)
    ranked = RankedLists.concat(parts).to_pandas()
    if len(ranked) == 0:  # untyped empty columns: Arrow casts them to the schema's id types
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(OUTPUT_COLUMNS, ("object", "object", "float32", "int32"))})
    return ranked.astype({"score": "float32", "rank": "int32"})[list(OUTPUT_COLUMNS)]


def _schema(histories, user_col: str, item_col: str):
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    types = {f.name: f.dataType for f in histories.schema.fields}
    return StructType([StructField("user_id", types[user_col]), StructField("item_id", types[item_col]),
                       StructField("score", FloatType()), StructField("rank", IntegerType())])  # float32, as the CLI


def _check_columns(frame, what: str, needed: list[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; found {frame.columns}; name the columns with "
                        + spelled("user_col=/item_col=/rating_col=", "--user-col, --item-col, --rating-col"))


def recommend(histories, model_dir, k: int = 20, candidates=None, *, user_col: str = "user_id",
              item_col: str = "item_id", rating_col: str | None = "rating", exclude_seen: bool = True,
              buckets: int | None = None, batch_size: int | None = None, dropped=None):
    """Ranked lists (user_id, item_id, score, rank) of every user of `histories`, a Spark DataFrame of
    (user, item[, rating, timestamp]) rows, with the model saved at `model_dir` (a path every executor
    can read), in the order `recmaml recommend` writes them (by user id; with candidates, the users who
    have only candidates last). candidates: optional Spark DataFrame of (user, item) rows; then each user
    ranks only its own candidates, and users with candidates but no history are ranked from the
    meta-learned start. buckets: ranges of user ids the users are split into (default: 4 per
    default-parallelism slot, so that a range holds many users and every slot gets work). dropped: an
    accumulator from `dropped_rows(spark)` that collects the warnings about dropped history rows instead
    of each worker printing its own."""
    from pyspark.sql import functions as F

    from recmaml.serve import check_k

    check_k(k)
    _check_columns(histories, "histories", [user_col, item_col])
    key = _model_key(model_dir)
    spark = histories.sparkSession
    n_buckets = buckets or 4 * spark.sparkContext.defaultParallelism
    if n_buckets < 1:
        raise DataError(f"buckets must be at least 1, got {n_buckets}")
    keep = [F.col(user_col).alias("user_id"), F.col(item_col).alias("item_id")]
    if rating_col and rating_col in histories.columns:
        keep.append(F.col(rating_col).cast("double").alias("rating"))
    rows = histories.select(*keep)
    if candidates is not None:  # one table, so that a user's history and candidates reach one worker
        _check_columns(candidates, "candidates", [user_col, item_col])
        types = {f.name: f.dataType for f in rows.schema.fields}
        cand = candidates.select(F.col(user_col).cast(types["user_id"]).alias("user_id"),
                                 F.col(item_col).cast(types["item_id"]).alias("item_id"))
        rows = rows.withColumn("__candidate", F.lit(False)).unionByName(
            cand.withColumn("__candidate", F.lit(True)), allowMissingColumns=True)
    # ranges of user ids, not hashes: each range holds whole users and the ranges come in ascending order,
    # so the lists come out in the CLI's order from one scoring pass (sorting the output instead would
    # score everything twice: once more to sample the sort's ranges). The CLI's order: users with a
    # history by id, then those with candidates only (recmaml.serve), which each range's serving keeps
    order = ["user_id"]
    if candidates is not None:
        from pyspark.sql import Window

        order = ["__candidates_only", "user_id"]
        rows = rows.withColumn("__candidates_only", F.min("__candidate").over(Window.partitionBy("user_id")))
    ranges = rows.repartitionByRange(n_buckets, *order)

    def score_range(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = list(batches)  # Arrow batches of one range, which may split a user's rows
        if not frames:
            return
        frame = pd.concat(frames, ignore_index=True)
        history, cands = frame, None
        if "__candidate" in frame.columns:
            is_candidate = frame.pop("__candidate").astype(bool)
            history = frame[~is_candidate].drop(columns="__candidates_only").reset_index(drop=True)
            cands = frame[is_candidate][["user_id", "item_id"]]
        yield _serve_pandas(key, history, cands, k, exclude_seen, batch_size, dropped)

    return ranges.mapInPandas(score_range, _schema(histories, user_col, item_col))


def _spark_format(path: str, format: str | None, flag: str) -> str:
    kind = (format or Path(path.rstrip("/")).suffix.lstrip(".")).lower()
    if kind not in ("parquet", "csv"):
        raise DataError(f"{flag} {path}: Spark scoring reads and writes Parquet or CSV; give a path ending "
                        f".parquet or .csv (a file or a folder of parts), or pass --format parquet|csv")
    return kind


def check_input(path: str, format: str | None = None, flag: str = "--history") -> str:
    """The Spark format of an input ('parquet' or 'csv'), checked without Spark: a local path must exist."""
    kind = _spark_format(path, format, flag)
    if "://" not in path and not Path(path).exists():
        raise DataError(f"{flag} {path}: no such file or folder")
    return kind


def check_output(path: str, format: str | None = None) -> str:
    """The Spark format of an output ('parquet' or 'csv'), checked without Spark: a local folder's parent
    must exist."""
    kind = _spark_format(path, format, "--out")
    if "://" not in path and not Path(path).resolve().parent.is_dir():
        raise DataError(f"--out {path}: folder {Path(path).resolve().parent} does not exist; create it first")
    return kind


def check_job(model_dir, history: str, out: str, *, history_format: str | None = None,
              candidates: str | None = None, candidates_format: str | None = None, out_format: str | None = None):
    """Everything a scoring job can get wrong before it starts Spark: the model, the inputs and the output
    (starting the JVM takes seconds and prints its own lines before an error would show)."""
    _model_key(model_dir)
    check_input(history, history_format)
    if candidates:
        check_input(candidates, candidates_format, "--candidates")
    check_output(out, out_format)


def read_table(spark, path: str, format: str | None = None, flag: str = "--history"):
    """A Parquet or CSV file or folder (CSV with a header, types inferred) as a Spark DataFrame."""
    kind = check_input(path, format, flag)
    reader = spark.read.option("header", True).option("inferSchema", True) if kind == "csv" else spark.read
    return reader.format(kind).load(path)


def write_table(frame, path: str, format: str | None = None) -> None:
    """Write a Spark DataFrame as a folder of Parquet or CSV parts. A local folder is written beside its
    destination and moved into place when Spark has finished, so a failed job leaves the old output;
    a cluster URI (hdfs://, s3a://) relies on Spark's output committer."""
    import os
    import shutil
    import tempfile

    kind = check_output(path, format)
    writer = lambda dest: frame.write.mode("overwrite").option("header", True).format(kind).save(dest)  # noqa: E731
    if "://" in path:
        writer(path)
        return
    dest = Path(path).resolve()
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
    with _jvm_errors_only(quiet):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines (hostname, native libraries) are not the user's
    return spark


# log4j2 for a JVM started quietly: WARN stays the root level (so Spark prints no "Setting default log
# level" note) but the console shows errors only
_QUIET_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


@contextlib.contextmanager
def _jvm_errors_only(quiet: bool):
    """While a new JVM starts: with `quiet`, log4j2 configured to print errors only (the WARN lines a JVM
    prints as it starts, about the hostname or native libraries, come before setLogLevel could stop them).
    The JVM reads LOG4J_CONFIGURATION_FILE from the environment it inherits; a user's own setting, or a
    JVM that is already running, is left alone."""
    import os
    import tempfile

    from pyspark import SparkContext

    if not quiet or "LOG4J_CONFIGURATION_FILE" in os.environ or SparkContext._jvm is not None:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="recmaml-log4j2-", suffix=".properties")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_QUIET_LOG4J2)
    os.environ["LOG4J_CONFIGURATION_FILE"] = path
    try:
        yield
    finally:
        del os.environ["LOG4J_CONFIGURATION_FILE"]
        os.unlink(path)  # read once, as the JVM started


__all__ = ["check_job", "dropped_rows", "read_table", "recommend", "session", "write_table"]
