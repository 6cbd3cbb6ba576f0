"""One polars frame -> Interactions: the validation every reader shares.

Each reader of connectors/ (CSV, Parquet, JSON Lines, SQL, DataFrames, MovieLens) produces a polars frame
and calls `frame_to_interactions`, so that every source gets the same checks and the same error messages.
MetaRecommender calls it too, for the pandas and polars frames its methods accept; it lives in recmaml so
that connectors depends on recmaml and never the reverse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from recmaml.data import INDEX_DTYPE, Interactions, SideFeatures, Vocabulary
from recmaml.errors import DataError, shown, spelled, warn_caller
from recmaml.times import SECONDS_BELOW, in_seconds

log = logging.getLogger(__name__)


class DuplicateInteractionsWarning(UserWarning):
    """Some (user, item) pairs appeared more than once; only the latest row of each was kept. `rows`
    counts the dropped rows, for summaries over many chunks."""

    def __init__(self, message: str, rows: int = 0):
        super().__init__(message)
        self.rows = rows


# Column names seen in the wild, to suggest the right mapping flag when a column is missing.
_ALIASES = {
    "user": ("user_id", "userid", "user", "uid", "customer_id", "visitorid", "reviewerid"),
    "item": ("item_id", "itemid", "item", "movieid", "movie_id", "iid", "product_id", "productid", "asin"),
    "rating": ("rating", "ratings", "score", "stars", "value", "preference"),
    "timestamp": ("timestamp", "ts", "time", "datetime", "date", "unix_timestamp", "event_time"),
}


@dataclass(frozen=True)
class Columns:
    """Which source columns hold the interaction fields. `rating`/`timestamp` may be absent from the
    source unless `require_rating`/`require_timestamp` (the user named them explicitly)."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"
    require_rating: bool = False
    require_timestamp: bool = False
    decimal: str = "."  # the ratings' decimal mark: "," reads the 3,5 of a European spreadsheet as 3.5

    @classmethod
    def named(cls, user_col: str = "user_id", item_col: str = "item_id", rating_col: str | None = "rating",
              timestamp_col: str | None = "timestamp", decimal: str = ".") -> Columns:
        """The columns as read_interactions' keywords name them: rating_col/timestamp_col None or '' leave
        that field out; a rating or timestamp column named other than the default must exist."""
        return cls(user=user_col, item=item_col, rating=rating_col or None, timestamp=timestamp_col or None,
                   require_rating=bool(rating_col) and rating_col != "rating",
                   require_timestamp=bool(timestamp_col) and timestamp_col != "timestamp", decimal=decimal)


NO_RATING_FLAG, NO_TIMESTAMP_FLAG = "--rating-col ''", "--timestamp-col ''"  # the CLI's rating_col=None


def _flag(role: str) -> str:
    return spelled(f"{role}_col=", f"--{role}-col")


def missing_columns_error(source: str, missing: list[tuple[str, str]], found: list[str]) -> DataError:
    """One error naming every missing column at once (`missing`: (role, wanted) pairs), with one fix: the
    mapping of each column whose name is guessable from `found`, or the flag/keyword that names it."""
    separator = next((c for c in ",;|\t" if len(found) == 1 and c in found[0]), None)
    if separator is not None:  # the whole header is one column: the file uses another delimiter
        fix = (f"the header reads as one column, so the file's delimiter is likely {separator!r}: pass "
               + spelled(f"delimiter={separator!r}", f"--delimiter {separator!r}"))
    else:
        mapped, unnamed = [], []
        for role, _ in missing:
            guess = next((c for c in found if c.lower().replace(" ", "_") in _ALIASES[role]), None)
            if guess is None:
                unnamed.append(_flag(role))
            else:
                mapped.append(spelled(f"{role}_col={guess!r}", f"--{role}-col {guess}"))
        parts = ([f"pass {spelled(', ', ' ').join(mapped)}"] if mapped else []) + (
            [f"name the column with {' and '.join(unnamed)}"] if unnamed else [])
        fix = "; ".join(parts)
    what = ", ".join(f"{wanted!r} for the {role}" for role, wanted in missing)
    return DataError(f"{source}: missing column{'s' if len(missing) > 1 else ''} {what}; found {found}; {fix}")


def missing_columns(columns: Columns, found: list[str]) -> list[tuple[str, str]]:
    """(role, wanted) of every column `columns` needs that `found` lacks: user and item always, rating and
    timestamp only when named explicitly (require_*)."""
    needed = [("user", columns.user), ("item", columns.item)]
    if columns.require_rating and columns.rating:
        needed.append(("rating", columns.rating))
    if columns.require_timestamp and columns.timestamp:
        needed.append(("timestamp", columns.timestamp))
    return [(role, col) for role, col in needed if col not in found]


def _first_row(mask: pl.Series) -> int:
    """1-based number of the first True row (data rows, header excluded)."""
    return int(mask.arg_true()[0]) + 1


MAX_ID_CHARS = 1_000
_INT64_MAX = 2**63 - 1


def check_ids(df: pl.DataFrame, source: str, col: str) -> None:
    if df[col].dtype == pl.Boolean:  # JSON true/false: two "ids" that are surely a wrong column
        raise DataError(f"{source}: column {col!r} holds true/false values, not ids; name the id column with "
                        + spelled("user_col=/item_col=", "--user-col/--item-col"))
    nulls = df[col].is_null()
    if df[col].dtype == pl.String:
        nulls = nulls | (df[col].str.strip_chars() == "")
    if nulls.any():
        raise DataError(
            f"{source}: column {col!r} has {int(nulls.sum())} null or empty ids (first at data row "
            f"{_first_row(nulls)}); drop or fill those rows before loading"
        )
    if df[col].dtype == pl.String:
        nul = df[col].str.contains("\x00", literal=True)
        if nul.any():  # ids become numpy text arrays, which cannot tell a trailing NUL from padding
            raise DataError(f"{source}: column {col!r} has an id with a NUL character at data row {_first_row(nul)}; "
                            "ids must not contain NUL (\\x00): is the file UTF-16 (pass its encoding with "
                            f"{spelled('encoding=', '--encoding')}) or binary?")
        too_long = df[col].str.len_chars() > MAX_ID_CHARS
        if too_long.any():  # ids become fixed-width arrays: one 1 MB id would make every id 1 MB wide
            row = _first_row(too_long)
            raise DataError(f"{source}: column {col!r} has an id of {df[col].str.len_chars()[row - 1]:,} characters "
                            f"at data row {row} (at most {MAX_ID_CHARS:,}); is it the right column, or a broken "
                            "quote that swallowed the rest of the file?")
    if df[col].dtype.is_float():
        frac = df[col] != df[col].round(0)
        if frac.any():
            row = _first_row(frac)
            raise DataError(f"{source}: column {col!r} has non-integer id {shown(df[col][row - 1])} at data row {row}")
    # numeric ids become int64: 2**63 (which polars reads as Int128), a UInt64 hash or 1e20 would not convert
    dtype, outside = df[col].dtype, None
    if dtype.is_float():
        outside = (df[col] >= 2.0**63) | (df[col] < -(2.0**63))
    elif dtype in (pl.UInt64, pl.UInt128):
        outside = df[col] > _INT64_MAX
    elif dtype == pl.Int128:
        outside = (df[col] > _INT64_MAX) | (df[col] < -_INT64_MAX - 1)
    if outside is not None and outside.any():
        row = _first_row(outside)
        raise DataError(f"{source}: column {col!r} has id {shown(df[col][row - 1])} at data row {row}, outside "
                        "the 64-bit integer range of numeric ids (-2**63 to 2**63-1); write such ids as text "
                        "(e.g. with a letter prefix) or map them to smaller numbers")


# Rows converted at a time by `_to_numpy`: big enough to be fast, small enough that temporaries don't count.
_BLOCK_ROWS = 1 << 20


def _to_numpy(series: pl.Series, dtype, keep: np.ndarray | None = None) -> np.ndarray:
    """A numeric series without nulls as one numpy array of `dtype`, only the rows where `keep` is True
    when given. Filled block by block: a frame read from Parquet or CSV has many chunks, and converting it
    whole would first make a contiguous full-size copy."""
    if keep is None and series.n_chunks() == 1:
        return series.to_numpy().astype(dtype, copy=False)  # zero-copy view when the dtype matches
    out = np.empty(len(series) if keep is None else int(np.count_nonzero(keep)), dtype=dtype)
    filled = 0
    for start in range(0, len(series), _BLOCK_ROWS):
        block = series.slice(start, _BLOCK_ROWS).to_numpy()
        if keep is not None:
            block = block[keep[start : start + _BLOCK_ROWS]]
        out[filled : filled + len(block)] = block
        filled += len(block)
    return out


def factorized_ids(series: pl.Series) -> tuple[Vocabulary, np.ndarray]:
    """Vocabulary.fit_transform(ids_to_numpy(series)): the sorted unique ids and each row's index. String
    ids are factorized by polars (sorted unique ids, then a hash join for each row's index) and only the
    unique ids become a numpy array: numpy's unique sorts every row's string (about 10 x slower on 250,000
    rows of 20,000 user ids)."""
    if series.dtype.is_integer() or series.dtype.is_float():
        return Vocabulary.fit_transform(ids_to_numpy(series))
    text = series.cast(pl.String)
    unique = text.unique().sort()  # UTF-8 byte order: code point order, as numpy sorts str
    ids = unique.to_numpy().astype(str)
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):  # numpy's str drops trailing NULs: two ids became one
        return Vocabulary.fit_transform(ids_to_numpy(series))
    lookup = pl.DataFrame({"id": unique, "index": pl.int_range(len(unique), eager=True, dtype=pl.Int32)})
    index = text.to_frame("id").join(lookup, on="id", how="left", maintain_order="left")["index"]
    return Vocabulary(ids), index.to_numpy().astype(INDEX_DTYPE, copy=False)


def ids_to_numpy(series: pl.Series) -> np.ndarray:
    if series.dtype.is_integer() or series.dtype.is_float():
        return _to_numpy(series.cast(pl.Int64), np.int64)
    return series.cast(pl.String).to_numpy().astype(str)


DECIMAL_COMMA = "decimal=','"


def _decimal_comma_hint(series: pl.Series) -> str:
    """Advice for text ratings such as '3,5': the decimal comma of a European spreadsheet."""
    text = series.cast(pl.String).str.strip_chars()
    if not text.str.contains(r"^[+-]?\d*,\d+$").any():
        return ""
    return f" (it reads as a decimal comma: pass {spelled(DECIMAL_COMMA, '--decimal ,')} to read 3,5 as 3.5)"


def _rating_column(df: pl.DataFrame, source: str, col: str, rating_range, decimal: str = ".") -> pl.Series:
    """The validated ratings as a Float64 series (converted to numpy once duplicates are dropped)."""
    series = df[col]
    if not series.dtype.is_numeric():
        text = series.cast(pl.String).str.strip_chars()
        if decimal != ".":
            text = text.str.replace(decimal, ".", literal=True)
        parsed = text.cast(pl.Float64, strict=False)
        bad = parsed.is_null() & series.is_not_null()
        if bad.any():
            row = _first_row(bad)
            raise DataError(
                f"{source}: column {col!r} has a non-numeric rating {shown(series[row - 1])} at data row {row}; "
                f"fix the value{_decimal_comma_hint(series)}, or pass {spelled('rating_col=None', NO_RATING_FLAG)} "
                "to load implicit feedback"
            )
        series = parsed
    series = series.cast(pl.Float64)
    missing = series.is_null() | series.is_nan()
    if missing.any():
        raise DataError(
            f"{source}: column {col!r} has {int(missing.sum())} missing ratings (first at data row "
            f"{_first_row(missing)}); fill or drop them"
        )
    # inf, -inf and values past float32's range (1e300 becomes inf in the model) cannot be learned from
    unusable = series.abs() > float(np.finfo(np.float32).max)
    if unusable.any():
        row = _first_row(unusable)
        raise DataError(
            f"{source}: column {col!r} has {int(unusable.sum())} ratings that are infinite or too large for "
            f"32-bit floats (first {shown(series[row - 1])} at data row {row}); fix or drop those rows"
        )
    if rating_range is not None:
        lo, hi = rating_range
        outside = (series < lo) | (series > hi)
        if outside.any():
            row = _first_row(outside)
            raise DataError(
                f"{source}: {int(outside.sum())} ratings in column {col!r} lie outside the declared range "
                f"[{lo}, {hi}] (first {shown(series[row - 1])} at data row {row}); fix the data or the rating range"
            )
    return series


def _timestamp_column(df: pl.DataFrame, source: str, col: str) -> pl.Series:
    """The validated timestamps as an Int64 series of Unix seconds."""
    series = df[col]
    if series.dtype == pl.Date:
        series = series.cast(pl.Datetime("ms"))
    if isinstance(series.dtype, pl.Datetime):
        series = series.dt.epoch("s")
    elif series.dtype == pl.String:
        parsed = series.str.strip_chars().cast(pl.Int64, strict=False)
        if parsed.is_null().sum() > series.is_null().sum():
            try:
                parsed = series.str.to_datetime(strict=False).dt.epoch("s")
            except pl.exceptions.ComputeError:  # polars found no date format in the first values
                parsed = pl.Series(col, [None] * len(series), dtype=pl.Int64)
        bad = parsed.is_null() & series.is_not_null()
        if bad.any():
            row = _first_row(bad)
            raise DataError(
                f"{source}: column {col!r} has an unreadable timestamp {shown(series[row - 1])} at data row {row}; "
                f"use Unix seconds or ISO 8601, or pass {spelled('timestamp_col=None', NO_TIMESTAMP_FLAG)}"
            )
        series = parsed
    elif not series.dtype.is_numeric():
        raise DataError(f"{source}: column {col!r} has type {series.dtype}, expected Unix seconds or a datetime")
    nulls = series.is_null()
    if nulls.any():
        raise DataError(
            f"{source}: column {col!r} has {int(nulls.sum())} missing timestamps (first at data row "
            f"{_first_row(nulls)}); fill them or pass {spelled('timestamp_col=None', NO_TIMESTAMP_FLAG)}"
        )
    return _in_seconds(series.cast(pl.Int64), f"{source}: column {col!r}")


def _in_seconds(series: pl.Series, what: str) -> pl.Series:
    """Numbers of a unit finer than seconds (milliseconds, ...: recmaml.times) converted to Unix seconds,
    with a TimestampUnitWarning naming `what`; seconds as they are (a datetime column is already seconds)."""
    largest = series.abs().max() if len(series) else None
    if largest is None or largest < SECONDS_BELOW:
        return series
    return pl.Series(series.name, in_seconds(series.to_numpy(), what), dtype=pl.Int64)


def _pair_keys(user_idx: np.ndarray, item_idx: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 per row that is equal for equal (user, item) pairs."""
    key = user_idx.astype(np.int64)
    key *= max(n_items, 1)
    key += item_idx
    return key


def _latest_per_pair(
    user_idx, item_idx, timestamp: pl.Series | None, n_items: int, source: str
) -> np.ndarray | None:
    """A mask keeping the latest row of each (user, item) pair, or None when there are no duplicates.

    Sorting the pair keys (numpy's vectorized sort) finds repeated pairs in a fraction of a second; only
    the rows of repeated pairs are then ordered by time, the later row winning a tie."""
    key = _pair_keys(user_idx, item_idx, n_items)
    key.sort()
    repeated = key[1:] == key[:-1]
    if not repeated.any():
        return None
    repeated_keys = np.unique(key[1:][repeated])
    del repeated
    key = _pair_keys(user_idx, item_idx, n_items)  # in row order again
    rows = pl.Series(key).is_in(pl.Series(repeated_keys).implode()).arg_true().to_numpy()
    ts = rows if timestamp is None else timestamp.gather(rows).to_numpy()
    rows = rows[np.lexsort((rows, ts, key[rows]))]  # by pair, then time, then row: the last one wins
    superseded = key[rows[:-1]] == key[rows[1:]]  # a later row of the same pair follows
    keep = np.ones(len(key), dtype=bool)
    keep[rows[:-1][superseded]] = False
    dropped = len(rows) - len(repeated_keys)
    message = (f"{source}: {dropped} duplicated (user, item) rows; kept the latest of each pair"
               f" ({'by timestamp' if timestamp is not None else 'by row order'})")
    warn_caller(DuplicateInteractionsWarning(message, rows=dropped))
    return keep


def frame_to_interactions(
    df: pl.DataFrame | pl.LazyFrame,
    source: str,
    columns: Columns = Columns(),
    *,
    rating_range: tuple[float, float] | None = None,
    user_features: SideFeatures | None = None,
    item_features: SideFeatures | None = None,
) -> Interactions:
    """Validate a frame of interactions and turn it into index form. Extra columns are ignored."""
    found = df.collect_schema().names() if isinstance(df, pl.LazyFrame) else df.columns
    twice = sorted({name.rsplit("_duplicated_", 1)[0] for name in found
                    if "_duplicated_" in name and name.rsplit("_duplicated_", 1)[0] in found})
    if twice:  # polars renames a repeated header name instead of refusing it
        raise DataError(f"{source}: the header names column(s) {twice} more than once; give every column its "
                        "own name")
    missing = missing_columns(columns, found)
    if missing:
        raise missing_columns_error(source, missing, found)
    rating_col = columns.rating if columns.rating and columns.rating in found else None
    ts_col = columns.timestamp if columns.timestamp and columns.timestamp in found else None

    wanted = [c for c in (columns.user, columns.item, rating_col, ts_col) if c is not None]
    if isinstance(df, pl.LazyFrame):
        df = df.select(wanted).collect()
    else:
        df = df.select(wanted)
    if df.height == 0:
        raise DataError(f"{source}: no interactions (the source is empty); expected columns {wanted}")

    check_ids(df, source, columns.user)
    check_ids(df, source, columns.item)
    rating = _rating_column(df, source, rating_col, rating_range, columns.decimal) if rating_col else None
    timestamp = _timestamp_column(df, source, ts_col) if ts_col else None
    users, user_idx = factorized_ids(df[columns.user])
    items, item_idx = factorized_ids(df[columns.item])
    del df

    # Ratings and timestamps become numpy arrays last, and only for the rows kept: the peak memory is then
    # the frame plus the result, with no full-size temporary on top.
    keep = _latest_per_pair(user_idx, item_idx, timestamp, len(items), source)
    if keep is not None:
        user_idx, item_idx = user_idx[keep], item_idx[keep]
    rating = None if rating is None else _to_numpy(rating, np.float32, keep)
    timestamp = None if timestamp is None else _to_numpy(timestamp, np.int64, keep)
    log.debug("%s: %d interactions, %d users, %d items", source, len(user_idx), len(users), len(items))
    return Interactions(
        user_idx=user_idx,
        item_idx=item_idx,
        users=users,
        items=items,
        rating=rating,
        timestamp=timestamp,
        user_features=user_features,
        item_features=item_features,
    )


FRAME_TYPES = (pl.DataFrame, pl.LazyFrame)


def is_frame(obj) -> bool:
    """A polars DataFrame/LazyFrame or a pandas DataFrame (checked without importing pandas)."""
    return isinstance(obj, FRAME_TYPES) or type(obj).__module__.startswith("pandas") and hasattr(obj, "columns")


def frame_of(source) -> pl.DataFrame | pl.LazyFrame:
    """A polars frame of a polars or pandas frame; a pandas column of mixed types is named in the error."""
    if isinstance(source, FRAME_TYPES):
        return source
    try:
        return pl.from_pandas(source)
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid/ArrowTypeError are among these
        bad = next((c for c in source.columns if not _converts(source[c])), None)
        where = f"column {bad!r}" if bad is not None else "a column"
        raise DataError(f"pandas DataFrame: {where} cannot be converted ({err}); give it one type, e.g. "
                        f"df[{bad!r}].astype(str)") from err


def _converts(series) -> bool:
    try:
        pl.from_pandas(series)
    except (TypeError, ValueError):
        return False
    return True


def as_interactions(data, what: str, columns: Columns = Columns()) -> Interactions:
    """`data` as Interactions: an Interactions as is, a pandas/polars frame with the `columns` (by default
    user_id, item_id and optionally rating and timestamp) through the shared validation."""
    if isinstance(data, Interactions):
        return data
    if is_frame(data):
        return frame_to_interactions(frame_of(data), f"{what} frame", columns)
    raise DataError(f"{what}: expected an Interactions or a pandas/polars DataFrame with columns user_id, item_id "
                    f"[, rating, timestamp], got {type(data).__name__}; read files with recmaml.connectors.read_interactions")


RESULT_COLUMNS = ("score", "rank", "prediction")  # what recmaml adds beside the user and item columns


def kept_names(names: Columns) -> dict[str, str]:
    """The renaming that gives a result the input's user and item column names (keep_names=True, the
    CLI's --keep-column-names) instead of user_id and item_id; a name a result column already has is
    refused, as the output could not hold both."""
    clash = [name for name in (names.user, names.item) if name in RESULT_COLUMNS]
    if clash:
        raise DataError(f"cannot keep the column name {clash[0]!r}: the output has its own {clash[0]!r} column; "
                        f"leave out {spelled('keep_names=True', '--keep-column-names')} or rename that input column")
    return {"user_id": names.user, "item_id": names.item}


def renamed(frame, renaming: dict[str, str]):
    """A pandas or polars frame with columns renamed (those it lacks are skipped)."""
    renaming = {old: new for old, new in renaming.items() if old in frame.columns and old != new}
    if not renaming:
        return frame
    return frame.rename(renaming) if isinstance(frame, FRAME_TYPES) else frame.rename(columns=renaming)


def same_kind(ranked_or_frame, like):
    """Convert a polars result frame, or RankedLists, to the kind of frame `like` is (pandas in, pandas out).
    RankedLists become a pandas frame directly, without a polars frame in between (half the time)."""
    if isinstance(like, FRAME_TYPES):
        return ranked_or_frame if isinstance(ranked_or_frame, FRAME_TYPES) else ranked_or_frame.to_polars()
    return ranked_or_frame.to_pandas()
