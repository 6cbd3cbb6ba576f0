"""RankedLists -> CSV / TSV / Parquet / JSON Lines / SQL table / pandas or polars frame, and back.

Ranked lists are written as a long table with the columns user_id, item_id, score, rank. Files are
written to a temporary file in the destination folder and moved into place with os.replace, so a reader
never sees a half-written file and a failed write leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl

from recmaml.connectors.sql import SqlTableSink, display_uri, is_sql_uri, read_sql_frame, write_sql_table
from recmaml.files import atomic_path
from recmaml.data import RankedLists
from recmaml.errors import DataError, shown, spelled

DEFAULT_TABLE = "ranked_lists"

# File formats by extension; "ndjson" is another name for JSON Lines.
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FRAME_FORMATS = ("pandas", "polars")
FORMATS = ("csv", "tsv", "parquet", "jsonl", "ndjson", "sql", *FRAME_FORMATS)


# columns a ranked list may carry after the four, written when present: `because` (recommend's explain=,
# `recmaml recommend --explain`), a list of history item ids per row
OPTIONAL_COLUMNS = ("because",)
LIST_SEPARATOR = "|"  # a list column in a text or SQL output: its values joined, as a|b|c (the feature tables' lists)


def _ranked_frame(ranked) -> pl.DataFrame:
    """What `recommend` returns, of any input kind (RankedLists, a pandas or polars frame), as polars."""
    if isinstance(ranked, RankedLists):
        return ranked.to_polars()
    if isinstance(ranked, pl.DataFrame):
        RankedLists.from_frame(ranked.head(0))  # the columns it must have, checked with a clear message
        return ranked.select([*RankedLists.COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in ranked.columns)])
    if type(ranked).__module__.startswith("pandas"):
        return _ranked_frame(pl.from_pandas(ranked))
    raise DataError(f"ranked lists: expected RankedLists or a pandas/polars frame with columns "
                    f"{list(RankedLists.COLUMNS)}, got {type(ranked).__name__}")


def write_ranked_lists(ranked, dest=None, *, format=None, table=None, if_exists="replace"):
    """Write ranked lists to a file or an SQL table, or return them as a pandas or polars frame.
    ranked: what `recommend` returns for any input (RankedLists, or a pandas or polars frame).

    dest: a path ending .csv/.tsv/.parquet/.jsonl/.ndjson, an SQL URI (sqlite:///recs.db,
    postgresql://...; `table` defaults to "ranked_lists"), or "pandas"/"polars" (as is format=).
    if_exists ("replace", "append", "fail") applies to SQL tables; a file is always replaced, atomically.
    Returns the frame for pandas/polars, None otherwise.
    """
    return write_frame(_ranked_frame(ranked), dest, format=format, table=table, if_exists=if_exists)


def write_frame(frame: pl.DataFrame, dest=None, *, format=None, table=None, if_exists="replace"):
    """Any result table (ranked lists, predictions) to a file, an SQL table or a pandas/polars frame, with
    the same destinations and atomicity as write_ranked_lists."""
    kind = _resolve_format(dest, format)
    if kind == "pandas":
        return frame.to_pandas()
    if kind == "polars":
        return frame
    frame = _storable(frame, kind)
    if kind == "sql":
        write_sql_table(frame, dest, table or DEFAULT_TABLE, if_exists=if_exists)
        return None
    with atomic_path(Path(dest)) as tmp:
        _write_file(frame, tmp, kind)
    return None


def check_output(dest, *, format=None) -> str:
    """The kind of a file or SQL destination (csv, tsv, parquet, jsonl, sql), checked before any work is
    done: a known extension or URI, and an existing folder. Frames ("pandas", "polars") are refused."""
    kind = _resolve_format(dest, format)
    if kind in FRAME_FORMATS:
        raise DataError(f"{dest!r} is an in-memory frame, not an output; give a file (.csv, .parquet, .jsonl, "
                        "...) or an SQL URI")
    if kind != "sql":
        folder = Path(dest).parent
        if not folder.is_dir():
            raise DataError(f"{dest}: folder {str(folder)!r} does not exist; create it first")
        if Path(dest).is_dir():
            raise DataError(f"{dest}: is a directory; give a file name for the output (e.g. {Path(dest) / 'ranked.parquet'})")
        if not os.access(folder, os.W_OK):
            raise DataError(f"{dest}: folder {str(folder)!r} is not writable; choose another output folder")
    return kind


class RankedListsWriter:
    """Ranked lists written chunk by chunk, e.g. by a streaming `recmaml recommend`:

        with RankedListsWriter("recs.parquet") as out:
            for chunk in chunks:
                out.write(rec.recommend(chunk))

    Files grow in a temporary file next to `dest` and replace it only when the block ends without an
    error; on an error the temporary file is removed and `dest` is untouched. An SQL table is replaced in
    one transaction that receives the chunks as they come (memory holds one chunk), committed at the end.
    names: optional renaming of the columns written, e.g. {"user_id": "userId", "item_id": "movieId"} (the
    CLI's --keep-column-names)."""

    def __init__(self, dest, *, format=None, table=None, names: dict[str, str] | None = None):
        self.kind = check_output(dest, format=format)
        self.dest, self.table = dest, table or DEFAULT_TABLE
        self.rows = 0
        self.names = names or {}
        self._files = contextlib.ExitStack()
        self._handle = self._parquet = self._sql = None
        self._empty = RankedLists.concat([]).to_polars().rename(self.names)  # the columns of an output that stays empty

    def __enter__(self) -> RankedListsWriter:
        if self.kind == "sql":
            self._sql = SqlTableSink(self.dest, self.table, empty=self._empty).__enter__()
        else:
            tmp = self._files.enter_context(atomic_path(Path(self.dest)))
            self._handle = self._files.enter_context(open(tmp, "wb"))
        return self

    def write(self, ranked) -> None:
        frame = _storable(_ranked_frame(ranked).rename(self.names), self.kind)
        if self.rows == 0:  # string ids stay strings in an output that stays empty
            self._empty = frame.head(0)
        if len(ranked):
            if self.kind == "sql":
                self._sql.write(frame)
            else:
                self._write_file_part(frame)
        self.rows += len(ranked)

    def _write_file_part(self, frame: pl.DataFrame) -> None:
        if self.kind != "parquet":
            _write_file(frame, self._handle, self.kind, header=self.rows == 0)
            return
        import pyarrow.parquet as pq  # one file, one row group per chunk

        table = frame.to_arrow()
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._handle, table.schema, compression="zstd")
        self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.kind == "sql":
            self._sql.__exit__(exc_type, exc, tb)
            return
        try:
            if exc_type is None and self.rows == 0:
                self._write_file_part(self._empty)  # an empty output still has the columns
        except BaseException:
            exc_type, exc, tb = sys.exc_info()
            raise
        finally:
            if self._parquet is not None:
                self._parquet.close()  # before its file: a parquet writer left open writes on at exit
            self._files.__exit__(exc_type, exc, tb)  # close the file, then move it into place or remove it


def read_ranked_lists(source, *, format=None, table=None) -> RankedLists:
    """Ranked lists from a file, an SQL table or a pandas/polars frame, with the four columns checked."""
    if isinstance(source, pl.DataFrame) or type(source).__module__.startswith("pandas"):
        frame = source if isinstance(source, pl.DataFrame) else pl.from_pandas(source)
        return _frame_to_ranked(frame, "the frame")
    kind = _resolve_format(source, format)
    if kind in FRAME_FORMATS:
        raise DataError(f"read_ranked_lists needs a file, a database URI or a frame, got {source!r}")
    if kind == "sql":
        frame = read_sql_frame(source, table=table or DEFAULT_TABLE)
        return _frame_to_ranked(frame, f"{display_uri(source)} table {table or DEFAULT_TABLE!r}")
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if kind == "jsonl" and path.stat().st_size == 0:  # empty lists were written as an empty file
        return RankedLists.concat([])
    try:
        frame = _read_file(path, kind)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: not readable as {kind} ranked lists ({str(err).splitlines()[0][:200]})") from err
    return _frame_to_ranked(frame, str(path))


# --- formats -------------------------------------------------------------------------------------------


def _resolve_format(dest, format) -> str:
    """One of csv, tsv, parquet, jsonl, sql, pandas, polars."""
    if format is not None:
        fmt = str(format).lower()
        if fmt not in FORMATS:
            raise DataError(f"unknown output format {format!r}; use format= one of {list(FORMATS)}")
        if fmt in FRAME_FORMATS:
            return fmt
        if dest is None:
            raise DataError(f"format {fmt!r} needs a destination path or URI")
        return "jsonl" if fmt == "ndjson" else fmt
    if dest is None:
        raise DataError(f"pass a destination (a file path, an SQL URI) or format= one of {list(FRAME_FORMATS)}")
    if isinstance(dest, str) and dest.lower() in FRAME_FORMATS:
        return dest.lower()
    if is_sql_uri(dest):
        return "sql"
    suffix = Path(dest).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise DataError(f"{dest}: {_unknown_extension(suffix)}")
    return FILE_FORMATS[suffix]


def _unknown_extension(suffix: str) -> str:
    """Why an output name does not say its format, and the fix (the CLI has no output --format: --format
    is for inputs, so there the name alone decides)."""
    what = "no file extension" if not suffix else f"unknown file extension {suffix!r}"
    if suffix in (".xlsx", ".xls"):
        what += " (Excel files are not written; Excel opens a .csv)"
    names = ", ".join(FILE_FORMATS)
    return spelled(f"{what}; end the name with one of {names}, give an SQL URI, or pass format= one of "
                   f"{list(FORMATS)}",
                   f"{what}; end the output's name with one of {names} (e.g. --out recs.parquet), or give an SQL "
                   "URI (--out sqlite:///recs.db)")


def _storable(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """`frame` as `kind` can hold it: Parquet and JSON Lines keep list columns; CSV, TSV and SQL tables
    get their values joined by LIST_SEPARATOR (an empty list: an empty text)."""
    if kind in ("parquet", "jsonl"):
        return frame
    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    return frame.with_columns(pl.col(name).cast(pl.List(pl.String)).list.join(LIST_SEPARATOR) for name in lists)


def _write_file(frame: pl.DataFrame, target, kind: str, header: bool = True) -> None:
    """One frame to a path or an open binary file (header: the CSV header line, for the first part)."""
    if kind in ("csv", "tsv"):
        frame.write_csv(target, separator="\t" if kind == "tsv" else ",", include_header=header)
    elif kind == "parquet":
        frame.write_parquet(target)
    else:
        frame.write_ndjson(target)


def _read_file(path: Path, kind: str) -> pl.DataFrame:
    if kind == "parquet":
        return pl.read_parquet(path)
    if kind == "jsonl":
        return pl.read_ndjson(path)
    # CSV has no types: every column is read as text and parsed here. Ids become integers only when every
    # id is one, as inference would otherwise turn string ids such as "nan" or "1e3" into floats.
    frame = pl.read_csv(path, separator="\t" if kind == "tsv" else ",", infer_schema=False)
    return frame.with_columns(_int_if_canonical(frame[c]) for c in ("user_id", "item_id") if c in frame.columns)


def _int_if_canonical(text: pl.Series) -> pl.Series:
    """The column as Int64 when every value is a canonical integer ("12", not "012" or "+12"), so that
    the conversion never changes an id; else unchanged."""
    as_int = text.cast(pl.Int64, strict=False)
    if as_int.is_not_null().all() and (as_int.cast(pl.String) == text).all():
        return as_int
    return text


# --- validation ----------------------------------------------------------------------------------------


def _frame_to_ranked(frame: pl.DataFrame, source: str) -> RankedLists:
    missing = [c for c in RankedLists.COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: ranked lists need columns {list(RankedLists.COLUMNS)}; missing {missing}; found {frame.columns}"
        )
    for col in RankedLists.COLUMNS:
        nulls = frame[col].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            raise DataError(f"{source}: column {col!r} has {int(nulls.sum())} missing values (first at data row {row})")
    score = _numeric(frame["score"], pl.Float32, source, "numbers")
    rank = _numeric(frame["rank"], pl.Int32, source, "integers")
    return RankedLists(_ids(frame["user_id"]), _ids(frame["item_id"]), score.to_numpy(), rank.to_numpy())


def _numeric(series: pl.Series, dtype, source: str, what: str) -> pl.Series:
    """The column cast to `dtype`; text is parsed, and a value that is not one of `what` is an error."""
    parsed = series.cast(dtype, strict=False)
    bad = parsed.is_null() & series.is_not_null()
    if dtype.is_integer() and series.dtype.is_float():
        bad = bad | (series != series.round(0))
    if bad.any() or (series.dtype != pl.String and not series.dtype.is_numeric()):
        row = int(bad.arg_true()[0]) + 1 if bad.any() else 1
        raise DataError(f"{source}: column {series.name!r} must hold {what}; found {shown(series[row - 1])} at data row {row}")
    return parsed


def _ids(series: pl.Series) -> np.ndarray:
    """Integer ids as int64, anything else as a numpy string array (the two kinds a Vocabulary holds)."""
    if series.dtype.is_integer():
        return series.cast(pl.Int64).to_numpy()
    return series.cast(pl.String).to_numpy().astype(str)
