"""Histories of any size, in chunks of whole users: what `recmaml recommend` streams.

The input need not be grouped or sorted by user. A log larger than one chunk is split in one streaming
pass (polars' streaming engine) into parts by ranges of the user id, written as Parquet to a temporary
folder; each part then holds every row of its users and is read, validated and served on its own. Peak
memory is bounded by one part (about `chunk_rows` rows), not by the number of users.

The temporary folder (next to the system's temp files, or `workdir`) is removed when the iteration
ends, also on errors.

Parts are ranges of ids, cut at quantiles of a sample of the rows, and come in id order: as a whole log
read in one chunk sorts its users (a Vocabulary is sorted), the users come out in ascending id order
whatever `chunk_rows` is, so `recmaml recommend --chunk-rows` never changes the output's order.

Streamed: CSV/TSV, Parquet and JSON Lines files. SQL sources and in-memory frames are read whole.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recmaml.connectors.readers import library_errors, open_source, resolve_source_format, source_name, read_frame, read_interactions
from recmaml.files import sweep_debris
from recmaml.data import Interactions
from recmaml.errors import DataError, spelled
from recmaml.frames import Columns, DuplicateInteractionsWarning, frame_to_interactions

DEFAULT_CHUNK_ROWS = 2_000_000
_PART_KEY = "__recmaml_part"
_SAMPLE_ROWS = 200_000  # rows sampled to place the parts' boundaries (their quantiles)


def iter_user_chunks(
    source,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    format: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = "rating",
    timestamp_col: str | None = "timestamp",
    delimiter: str | None = None,
    table: str | None = None,
    encoding: str = "utf8",
    decimal: str = ".",
    workdir: str | Path | None = None,
    on_rows=None,
) -> Iterator[Interactions]:
    """Yield Interactions of about `chunk_rows` rows each; every user's rows are in exactly one of them.
    Arguments as for read_interactions. A source of at most chunk_rows rows comes back as one chunk.
    on_rows: optional callable(n_rows), told the source's row count before the first chunk (for a
    progress bar's total; an SQL source or frame is counted once read)."""
    if chunk_rows < 1:
        raise DataError(f"{spelled('chunk_rows', '--chunk-rows')} must be at least 1, got {chunk_rows}")
    kind, _ = resolve_source_format(source, format)
    read_kwargs = dict(format=format, user_col=user_col, item_col=item_col, rating_col=rating_col,
                       timestamp_col=timestamp_col, delimiter=delimiter, table=table, encoding=encoding,
                       decimal=decimal)
    if kind not in ("csv", "tsv", "parquet", "jsonl"):
        log_ = read_interactions(source, **read_kwargs)
        if on_rows is not None:
            on_rows(len(log_))
        yield log_
        return
    name = source_name(source)
    with library_errors(name, kind, encoding):
        frame = read_frame(source, format=format, delimiter=delimiter, encoding=encoding)  # checks the file
        # a Parquet footer has the count (reading it from the pages would decode a whole column)
        n_rows = _parquet_rows(source) if kind == "parquet" else frame.select(pl.len()).collect().item()
    if on_rows is not None:
        on_rows(n_rows)
    if n_rows <= chunk_rows:
        yield read_interactions(source, **read_kwargs)
        return

    columns = Columns.named(user_col, item_col, rating_col, timestamp_col, decimal=decimal)
    n_parts = math.ceil(n_rows / chunk_rows)
    parent = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    sweep_debris(parent, "recmaml-parts-")  # what killed runs left behind
    folder = Path(tempfile.mkdtemp(prefix=f"recmaml-parts-{os.getpid()}-", dir=parent))
    try:
        _partition(source, kind, name, columns, n_rows, n_parts, folder, delimiter, encoding)
        parts = sorted((p for p in folder.iterdir() if p.is_dir()), key=_part_number)
        if not parts:
            raise RuntimeError(f"partitioning {name} into {n_parts} parts wrote nothing to {folder}")
        for i, part in enumerate(parts):
            yield frame_to_interactions(pl.scan_parquet(part / "*.parquet"),
                                        f"{name} (users of part {i + 1} of {len(parts)})", columns)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _partition(source, kind, name, columns: Columns, n_rows: int, n_parts: int, folder: Path, delimiter,
               encoding) -> None:
    """Write the rows into `folder`/<part>/*.parquet by ranges of the user id (parts 0, 1, ... in id
    order), in a streaming pass after one that samples the ids.

    Column types of text formats are guessed from the first rows; when a later row contradicts the guess
    (an id column that turns to text), the pass is redone once with types inferred from the whole file,
    as read_interactions does."""
    for full_inference in (False, True):
        try:
            with library_errors(name, kind, encoding):
                frame = open_source(source, kind, delimiter, None, None, encoding, full_inference, streaming=True)
                # the first rows through the full validation: a missing column fails before the long pass
                # (their duplicates are reported when their part is read, not twice)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DuplicateInteractionsWarning)
                    frame_to_interactions(frame.head(1000), name, columns)
                found = frame.collect_schema().names()
                wanted = [c for c in (columns.user, columns.item, columns.rating, columns.timestamp) if c and c in found]
                breaks = _user_breaks(frame, columns.user, n_rows, n_parts)
                frame.select(wanted).with_columns(_part_of(columns.user, breaks).alias(_PART_KEY)).sink_parquet(
                    pl.PartitionBy(folder, key=_PART_KEY, include_key=False), mkdir=True)
            return
        except DataError as err:
            retry = not full_inference and kind != "parquet" and isinstance(err.__cause__, pl.exceptions.ComputeError)
            if not retry:
                raise
            for leftover in folder.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)


def _user_breaks(frame: pl.LazyFrame, user_col: str, n_rows: int, n_parts: int) -> pl.Series:
    """At most n_parts - 1 sorted user ids that cut the log into parts of about equal row counts: part i
    holds the users from break i - 1 (inclusive) up to break i (exclusive). From the quantiles of every
    step-th row's user (a streaming pass); a user with more rows than a part is one part on its own."""
    step = max(1, n_rows // _SAMPLE_ROWS)
    sample = (frame.with_row_index("__recmaml_row").filter(pl.col("__recmaml_row") % step == 0)
              .select(pl.col(user_col)).drop_nulls().collect(engine="streaming").to_series().sort())
    cuts = [sample[len(sample) * i // n_parts] for i in range(1, n_parts)] if len(sample) else []
    return pl.Series(user_col, cuts, dtype=sample.dtype).unique(maintain_order=True)


def _part_of(user_col: str, breaks: pl.Series) -> pl.Expr:
    """Each row's part: the number of breaks at or below its user id (a binary search per row). Applied
    batch by batch, so the streaming engine keeps it streaming: `pl.lit(breaks).search_sorted(col)` would
    have it gather the whole column first (twice the partition pass's memory, measured)."""
    return pl.col(user_col).map_batches(lambda ids: breaks.search_sorted(ids, side="right"),
                                        return_dtype=pl.get_index_type(), is_elementwise=True)


def _parquet_rows(path) -> int:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        return file.metadata.num_rows


def _part_number(folder: Path) -> int:
    """The part number of a PartitionBy folder named `<key>=<number>` (sorted as numbers: 2 before 10)."""
    return int(folder.name.rsplit("=", 1)[1])
