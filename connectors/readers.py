"""Interaction logs from files, frames and databases -> Interactions.

Each source becomes a polars frame (lazy where the format allows it, so that only the needed columns are
read) and goes through `recmaml.frames.frame_to_interactions`, which does every check. This module only
picks the format, opens the source and turns library errors into DataErrors that name the file and the fix.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from recmaml.frames import (
    Columns, check_ids, ids_to_numpy, frame_of, frame_to_interactions, is_frame, missing_columns,
    missing_columns_error,
)
from recmaml.data import Interactions, SideFeatures
from recmaml.errors import DataError, cut, spelled

# Accepted values of format= (and --format), mapped to (reader, MovieLens/LibRec variant or None).
_FORMATS = {
    "csv": ("csv", None),
    "tsv": ("tsv", None),
    "parquet": ("parquet", None),
    "jsonl": ("jsonl", None),
    "ndjson": ("jsonl", None),
    "sql": ("sql", None),
    "movielens": ("movielens", None),
    "movielens-100k": ("movielens", "ml-100k"),
    "movielens-1m": ("movielens", "ml-1m"),
    "movielens-latest": ("movielens", "ml-latest"),
    "ml-100k": ("movielens", "ml-100k"),
    "ml-1m": ("movielens", "ml-1m"),
    "ml-latest": ("movielens", "ml-latest"),
    "filmtrust": ("librec", "filmtrust"),
    "ciaodvd": ("librec", "ciaodvd"),
    "lastfm": ("hetrec", "lastfm"),
    "hetrec-lastfm": ("hetrec", "lastfm"),
}
# Readers of whole data sets (a folder or its ratings file), which return Interactions, not a frame.
_DATASET_KINDS = ("movielens", "librec", "hetrec")
_EXTENSIONS = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".db": "sql", ".sqlite": "sql", ".sqlite3": "sql",
}
_COMPRESSED = (".gz", ".zst", ".zlib")
_SQL_PREFIXES = ("sqlite://", "postgresql://", "postgres://")
_DELIMITERS = ("\t", ",", ";", "|")  # detection order: on a tie the first wins
_ACCEPTED = "csv, tsv, parquet, jsonl, sql, movielens-100k, movielens-1m, movielens-latest, filmtrust, ciaodvd, lastfm"
# Rows used to guess column types; the whole file is scanned only when this guess turns out wrong.
_INFER_ROWS = 10_000


def read_interactions(
    source,
    *,
    format: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = "rating",
    timestamp_col: str | None = "timestamp",
    delimiter: str | None = None,
    rating_range: tuple[float, float] | None = None,
    table: str | None = None,
    query: str | None = None,
    user_features: SideFeatures | None = None,
    item_features: SideFeatures | None = None,
    encoding: str = "utf8",
    decimal: str = ".",
) -> Interactions:
    """Read an interaction log: a CSV/TSV/Parquet/JSON Lines file, a SQL database, a MovieLens, FilmTrust,
    CiaoDVD or HetRec Last.fm folder or ratings file, or a pandas/polars frame. The format comes from `format=` or from
    the file's extension (data-set folders and their ratings files are recognised by their file names).

    rating_col=None (or "") reads implicit feedback; timestamp_col=None (or "") ignores timestamps. The
    default rating/timestamp columns are optional; columns named explicitly must exist. decimal="," reads
    ratings written with a decimal comma (3,5), as European spreadsheets export them.
    """
    name = source_name(source)
    kind, variant = resolve_source_format(source, format)
    if kind in _DATASET_KINDS:
        return _read_dataset(source, kind, variant, rating_range, user_features, item_features)
    columns = Columns.named(user_col, item_col, rating_col, timestamp_col, decimal=_checked_decimal(decimal))

    def convert(full_inference: bool) -> Interactions:
        with library_errors(name, kind, encoding):
            frame = open_source(source, kind, delimiter, table, query, encoding, full_inference,
                          id_columns=(columns.user, columns.item))
            return frame_to_interactions(
                frame, name, columns,
                rating_range=rating_range, user_features=user_features, item_features=item_features,
            )

    return _with_type_retry(kind, convert)


LATIN_1 = "encoding='latin-1'"


def _format_flag() -> str:
    return spelled("format=", "--format")


def _checked_decimal(decimal: str) -> str:
    if decimal not in (".", ","):
        raise DataError(f"decimal {decimal!r}: the ratings' decimal mark is '.' or ','"
                        f" ({spelled('decimal=', '--decimal')})")
    return decimal


def _with_type_retry(kind: str, convert):
    """convert(full_inference=False), and for text formats once more with types inferred from the whole
    file when the types guessed from the first rows were wrong further down (an id column that turns to
    strings); the second failure is the one reported."""
    if kind not in ("csv", "tsv", "jsonl"):
        return convert(full_inference=False)
    try:
        return convert(full_inference=False)
    except DataError as err:
        if not isinstance(err.__cause__, pl.exceptions.ComputeError):
            raise
    return convert(full_inference=True)


def read_pairs(
    source,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    format: str | None = None,
    table: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf8",
) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, item ids) of a table of (user, item) pairs, e.g. the pairs to predict, in the source's
    row order with repeats kept. Any source read_interactions accepts except MovieLens/LibRec data sets."""
    name = source_name(source)
    kind, variant = resolve_source_format(source, format)
    if kind in _DATASET_KINDS:
        raise DataError(f"{name}: a {_dataset_name(kind, variant)} folder is a log, not a table of pairs; pass a "
                        "CSV/Parquet/... file")

    def convert(full_inference: bool):
        with library_errors(name, kind, encoding):
            frame = open_source(source, kind, delimiter, table, None, encoding, full_inference,
                          id_columns=(user_col, item_col))
            found = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
            missing = missing_columns(Columns(user=user_col, item=item_col), found)
            if missing:
                raise missing_columns_error(name, missing, found)
            frame = frame.select(user_col, item_col)
            frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
            for col in (user_col, item_col):
                check_ids(frame, name, col)
            return ids_to_numpy(frame[user_col]), ids_to_numpy(frame[item_col])

    return _with_type_retry(kind, convert)


def read_frame(
    source,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    table: str | None = None,
    query: str | None = None,
    encoding: str = "utf8",
) -> pl.LazyFrame | pl.DataFrame:
    """The raw frame of any source read_interactions accepts, except MovieLens/LibRec data sets (e.g.
    candidate or pair files). Files come back lazy: select the columns you need before collecting."""
    name = source_name(source)
    kind, variant = resolve_source_format(source, format)
    if kind in _DATASET_KINDS:
        raise DataError(f"{name}: {_dataset_name(kind, variant)} data is read with read_interactions, not "
                        "read_frame")
    with library_errors(name, kind, encoding):
        frame = open_source(source, kind, delimiter, table, query, encoding, full_inference=False)
        frame.collect_schema()  # cheap, and a broken file (truncated, wrong encoding) fails here, named
    return frame


# --- picking the format -------------------------------------------------------------------------------


def source_name(source) -> str:
    if isinstance(source, pl.LazyFrame):
        return "polars LazyFrame"
    if isinstance(source, pl.DataFrame):
        return "polars DataFrame"
    if is_frame(source):
        return "pandas DataFrame"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)


def _is_sql_uri(source) -> bool:
    # URI prefixes only: .db/.sqlite paths are recognised by their extension below
    return isinstance(source, str) and source.lower().startswith(_SQL_PREFIXES)


def resolve_source_format(source, format: str | None) -> tuple[str, str | None]:
    """(reader kind, MovieLens/LibRec variant) from format= or, failing that, from the source itself."""
    if is_frame(source):
        return "frame", None
    if format is not None:
        key = format.strip().lower().replace("_", "-")
        if key not in _FORMATS:
            raise DataError(f"{source_name(source)}: unknown format {format!r}; use {_format_flag()} "
                            f"with one of: {_ACCEPTED}")
        return _FORMATS[key]
    if _is_sql_uri(source):
        return "sql", None
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"cannot read interactions from a {type(source).__name__}; pass a file path, a "
                        "database URI, or a pandas/polars DataFrame")
    path = Path(source)
    # Before the extension rule, which reads .txt as CSV: only the exact LibRec layouts match (a ratings.txt
    # beside trust.txt, a movie-ratings.txt, or their folders), so other .txt files stay CSV.
    librec = _detect_librec(path)
    if librec is not None:
        return "librec", librec
    if _detect_hetrec(path) is not None:  # a folder holding user_artists.dat, or that .dat file
        return "hetrec", "lastfm"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:  # ratings.csv.gz reads as ratings.csv
        suffixes = suffixes[:-1]
    kind = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if kind is not None:
        return kind, None
    _check_exists(path)
    variant = _detect_movielens(path)
    if variant is not None:
        return "movielens", variant
    what = "folder" if path.is_dir() else "file extension"
    raise DataError(f"{path}: cannot tell the format from the {what}; pass {_format_flag()} "
                    f"with one of: {_ACCEPTED}")


def _detect_movielens(path: Path) -> str | None:
    try:
        from recmaml.connectors.movielens import detect_movielens
    except ImportError:  # the MovieLens reader is optional for every other format
        return None
    return detect_movielens(path)


def _detect_librec(path: Path) -> str | None:
    from recmaml.connectors.librec import detect_librec

    return detect_librec(path)


def _detect_hetrec(path: Path) -> str | None:
    from recmaml.connectors.hetrec import detect_hetrec

    return detect_hetrec(path)


def _dataset_name(kind: str, variant: str | None) -> str:
    return {"filmtrust": "FilmTrust", "ciaodvd": "CiaoDVD", "lastfm": "HetRec Last.fm"}.get(variant, "MovieLens")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path")


# --- opening each kind of source -----------------------------------------------------------------------


def open_source(source, kind, delimiter, table, query, encoding, full_inference, streaming: bool = False,
          id_columns: tuple[str, ...] = ()) -> pl.LazyFrame | pl.DataFrame:
    """The source as a frame; `streaming`: it will be read in a streaming pass (sink_parquet), so a
    Parquet file is decoded batch by batch rather than whole. `id_columns` of a CSV/TSV file are read as
    text unless their first rows are canonical integers ('7', not '007', '+7' or '7.0')."""
    if kind == "frame":
        return frame_of(source)
    if kind == "sql":
        from recmaml.connectors.sql import read_sql_frame

        return read_sql_frame(os.fspath(source), table=table, query=query)
    path = Path(source)
    _check_exists(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the file inside it, or {_format_flag()} movielens-*")
    _check_readable(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); expected a header and interaction rows")
    infer = None if full_inference else _INFER_ROWS
    if kind == "parquet":
        return _scan_parquet(path, whole=not streaming)
    if kind == "jsonl":
        if _is_utf8(encoding):
            return pl.scan_ndjson(path, infer_schema_length=infer)
        return pl.read_ndjson(_recoded(path, encoding), infer_schema_length=infer).lazy()
    separator = delimiter or ("\t" if kind == "tsv" else _detect_delimiter(path))
    if _is_utf8(encoding):
        lossy = "lossy" in encoding.lower()  # utf8-lossy: undecodable bytes become U+FFFD
        text = _text_columns(lambda: pl.read_csv(path, separator=separator, infer_schema=False, n_rows=_INFER_ROWS,
                                                 encoding="utf8-lossy" if lossy else "utf8"), id_columns)
        return pl.scan_csv(path, separator=separator, infer_schema_length=infer, schema_overrides=text,
                           encoding="utf8-lossy" if lossy else "utf8")
    recoded = _recoded(path, encoding)
    text = _text_columns(lambda: pl.read_csv(recoded, separator=separator, infer_schema=False, n_rows=_INFER_ROWS),
                         id_columns)
    recoded.seek(0)
    return pl.read_csv(recoded, separator=separator, infer_schema_length=infer, schema_overrides=text).lazy()


def _text_columns(read_head, id_columns: tuple[str, ...]) -> dict:
    """{column: pl.String} for the id columns whose first rows (read_head(): the file's first _INFER_ROWS
    rows, as text; read only when there are id columns) are not all canonical integers: inference would
    make the ids '007' and '0.' the numbers 7 and 0, and merge them with '7' and '0', so they stay text."""
    if not id_columns:
        return {}
    head = read_head()
    text = {}
    for name in (c for c in id_columns if c in head.columns):
        values = head[name].drop_nulls()
        as_int = values.cast(pl.Int64, strict=False)
        if (as_int.is_null() & values.str.contains(r"^[+-]?\d+$")).any():
            continue  # integers past 64 bits: inference's error names the value and says to read them as text
        if not (as_int.is_not_null().all() and (as_int.cast(pl.String) == values).all()):
            text[name] = pl.String
    return text


def _check_readable(path: Path) -> None:
    """Open the file once, so that a file without read permission is named as such by every reader (not as
    a file that does not parse)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err}); check its permissions") from err


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "") in ("utf8", "utf8lossy")


def _recoded(path: Path, encoding: str) -> io.BytesIO:
    """The file's text re-encoded as UTF-8, for encodings polars does not read itself (e.g. latin-1)."""
    try:
        codecs.lookup(encoding)
    except LookupError as err:
        raise DataError(f"{path}: unknown encoding {encoding!r}; use e.g. encoding='utf8' or 'latin-1'") from err
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid {encoding} text at byte {err.start}; pass the file's encoding "
                        "with encoding=") from err
    return io.BytesIO(text.encode("utf8"))


def _detect_delimiter(path: Path) -> str:
    """The most frequent of tab, comma, semicolon and pipe in the header line (comma when none is)."""
    if path.suffix.lower() in _COMPRESSED:
        return ","  # not worth decompressing here; pass delimiter= for other separators
    with open(path, "rb") as f:
        header = f.readline(65536)
    counts = [header.count(d.encode()) for d in _DELIMITERS]
    best = max(counts)
    return _DELIMITERS[counts.index(best)] if best else ","


def _read_dataset(source, kind, variant, rating_range, user_features, item_features) -> Interactions:
    """A MovieLens or LibRec data set; rating_range=None means the data set's own range."""
    if kind == "movielens":
        from recmaml.connectors.movielens import read_movielens

        interactions = read_movielens(source, variant, rating_range=rating_range)
    elif kind == "hetrec":  # plays: counts, no rating range to check
        from recmaml.connectors.hetrec import read_lastfm

        interactions = read_lastfm(source)
    else:
        from recmaml.connectors.librec import read_ciaodvd, read_filmtrust

        reader = read_filmtrust if variant == "filmtrust" else read_ciaodvd
        interactions = reader(source, **({} if rating_range is None else {"rating_range": rating_range}))
    extra = {k: v for k, v in (("user_features", user_features), ("item_features", item_features)) if v is not None}
    # Interactions aligns given features to its vocabularies in __post_init__.
    return dataclasses.replace(interactions, **extra) if extra else interactions


# --- errors from polars, with the file and the fix ------------------------------------------------------


@contextmanager
def library_errors(name: str, kind: str, encoding: str):
    """Re-raise errors of polars/pyarrow/the OS while reading `name` as DataErrors that say what to do."""
    try:
        yield
    except DataError:
        raise
    except pl.exceptions.PolarsError as err:
        line = _first_bad_json_line(name) if kind == "jsonl" and _is_utf8(encoding) else None
        raise DataError(f"{name}: {_hint(kind, str(err), encoding, line)}") from err
    except pl.exceptions.PanicException as err:  # a BaseException: polars' reader gave up on corrupt bytes
        raise DataError(f"{name}: {_hint(kind, str(err) or 'the reader failed on corrupt data', encoding)}") from err
    except OSError as err:
        raise DataError(f"{name}: cannot read the file ({err}); check the path and its permissions") from err


def _scan_parquet(path: Path, whole: bool = True) -> pl.LazyFrame:
    """A lazy frame over a Parquet file whose pages pyarrow decodes.

    Parquet files are not decoded by polars: its page decoder aborts the whole process on some corrupt
    page headers (a Rust panic or a multi-exabyte allocation, which no `except` catches), where pyarrow
    raises an exception, which becomes a DataError here. Column selection, row limits and filters reach
    the reader. whole: the selected columns are read at once (pyarrow's threads, no copy into polars);
    else batch by batch, so that a streaming pass (sink_parquet) over a large log stays bounded in memory."""
    import pyarrow.parquet as pq
    from polars.io.plugins import register_io_source

    schema = _check_parquet_footer(path)
    with _parquet_errors(path):
        polars_schema = pl.from_arrow(schema.empty_table()).schema

    def as_frame(data):
        data.validate(full=True)  # e.g. invalid UTF-8 in strings, which polars would take unchecked
        return pl.from_arrow(data, rechunk=False) if data.num_columns else pl.DataFrame(height=data.num_rows)

    def batches(with_columns, predicate, n_rows, batch_size):
        # pre_buffer off: pyarrow's coalesced reads ahead of decoding made it half as fast here
        with _parquet_errors(path), pq.ParquetFile(path, pre_buffer=False) as file:
            if whole and n_rows is None:
                frame = as_frame(file.read(columns=with_columns))
                yield frame if predicate is None else frame.filter(predicate)
                return
            left = n_rows
            # at least a million rows a batch: polars asks for 100,000, and each batch costs a conversion
            for batch in file.iter_batches(batch_size=max(batch_size or 0, 1_000_000), columns=with_columns):
                if left is not None:
                    if left <= 0:
                        return
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                frame = as_frame(batch)
                yield frame if predicate is None else frame.filter(predicate)

    return register_io_source(batches, schema=polars_schema, explain_name="recmaml-parquet")


@contextmanager
def _parquet_errors(path: Path):
    """pyarrow's errors (and polars' on its batches) while reading Parquet `path`, as DataErrors."""
    import pyarrow as pa

    try:
        yield
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError, MemoryError, pl.exceptions.PolarsError,
            pl.exceptions.PanicException) as err:
        raise DataError(f"{path}: {_hint('parquet', str(err) or type(err).__name__, 'utf8')}") from err


def _check_parquet_footer(path: Path):
    """The file's Arrow schema, read from its footer with pyarrow, after checking that the footer's sizes
    fit in the file (a corrupt length there once made a reader try a multi-exabyte allocation)."""
    import pyarrow.parquet as pq

    size = path.stat().st_size
    with _parquet_errors(path):
        with pq.ParquetFile(path) as file:
            meta, schema = file.metadata, file.schema_arrow
        for group in range(meta.num_row_groups):
            row_group = meta.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
                if (start is None or start < 0 or chunk.total_compressed_size < 0
                        or start + chunk.total_compressed_size > size):
                    raise DataError(f"{path}: not a valid Parquet file (row group {group}, column "
                                    f"{chunk.path_in_schema!r} points past the end of the file); is it truncated? "
                                    "re-export or re-download it")
    return schema


def _first_bad_json_line(name: str) -> int | None:
    """The number of the first line of JSON Lines file `name` that is not one JSON object (blank lines
    are skipped), for the error message; None when every line parses or the file cannot be scanned."""
    import json

    path = Path(name)
    if path.suffix.lower() in _COMPRESSED or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    if not isinstance(json.loads(line), dict):
                        return number
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    return number
    except OSError:
        return None
    return None


def _hint(kind: str, message: str, encoding: str, line: int | None = None) -> str:
    first_line = cut(message.strip().splitlines()[0] if message.strip() else message, 300)  # polars quotes values whole
    if kind == "parquet":  # binary: an encoding never helps
        return f"not a valid Parquet file ({first_line}); is it truncated? re-export or re-download it"
    if "utf-8" in message.lower() or "utf8" in message.lower():
        return (f"the text is not valid {encoding} ({first_line}); pass the file's encoding, "
                f"e.g. {spelled(LATIN_1, '--encoding latin-1')}")
    if kind == "jsonl":
        where = f" at line {line:,}" if line else ""
        return f"not valid JSON Lines{where} ({first_line}); each line must be one JSON object"
    if kind in ("csv", "tsv"):
        return (f"cannot parse the file as {kind.upper()} ({first_line}); check the delimiter "
                f"({spelled('delimiter=', '--delimiter')}) and that every row has the header's columns")
    return first_line
