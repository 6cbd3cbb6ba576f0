"""LibRec rating logs: FilmTrust (ratings.txt + trust.txt) and CiaoDVD (movie-ratings.txt), Guo et al.

    interactions = read_filmtrust("filmtrust")           # the folder, or filmtrust/ratings.txt
    interactions = read_ciaodvd("ciaodvd")               # the folder, or ciaodvd/movie-ratings.txt

Both files are header-less. FilmTrust is `user item rating`, whitespace-separated, without timestamps;
CiaoDVD is `userID,movieID,genreID,reviewID,movieRating,date` with dates as YYYY-MM-DD. The trust
networks are not read. Everything is parsed with polars; the rows then go through
`frame_to_interactions`, which checks them and keeps the latest row of a repeated (user, item) pair.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recmaml.data import Interactions, SideFeatures, Vocabulary
from recmaml.errors import DataError
from recmaml.frames import Columns, frame_to_interactions

_RATINGS_FILE = {"filmtrust": "ratings.txt", "ciaodvd": "movie-ratings.txt"}
_FILMTRUST_FIELDS = ["user_id", "item_id", "rating"]
_CIAODVD_FIELDS = ["user_id", "item_id", "genre", "review_id", "rating", "date"]
_FILMTRUST_COLUMNS = Columns("user_id", "item_id", "rating", None, require_rating=True)
_CIAODVD_COLUMNS = Columns("user_id", "item_id", "rating", "timestamp", require_rating=True, require_timestamp=True)


# ---------------------------------------------------------------------------------------------- public


def detect_librec(path) -> str | None:
    """The LibRec data set at `path`: "filmtrust" for a folder holding ratings.txt and trust.txt (or that
    ratings.txt), "ciaodvd" for a folder holding movie-ratings.txt (or that file), else None. Only these
    exact names count, so that an ordinary ratings.txt CSV is not taken for FilmTrust."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or (path.is_file() and path.name == "ratings.txt"):
        if (folder / "ratings.txt").is_file() and (folder / "trust.txt").is_file():
            return "filmtrust"
    if path.is_dir() or (path.is_file() and path.name == "movie-ratings.txt"):
        if (folder / "movie-ratings.txt").is_file():
            return "ciaodvd"
    return None


def read_filmtrust(path, *, rating_range=(0.5, 4.0)) -> Interactions:
    """FilmTrust ratings (a folder holding ratings.txt, or the file): no timestamps, so of a repeated
    (user, item) pair the last row in the file is kept. rating_range=None skips the range check."""
    file = _ratings_file(path, "filmtrust")
    frame = text_fields(file, None, _FILMTRUST_FIELDS)
    frame = frame.select(
        number_column(frame, file, "user_id", pl.Int64, "a user id"),
        number_column(frame, file, "item_id", pl.Int64, "an item id"),
        number_column(frame, file, "rating", pl.Float64, "a rating"),
    )
    return frame_to_interactions(frame, str(file), _FILMTRUST_COLUMNS, rating_range=rating_range)


def read_ciaodvd(path, *, rating_range=(1.0, 5.0)) -> Interactions:
    """CiaoDVD movie ratings (a folder holding movie-ratings.txt, or the file). The timestamp is the date
    at UTC midnight in Unix seconds, so of a pair rated twice the later date wins (the later row on the
    same day). Items get one categorical feature, `genre` (levels: the genre ids); every movie has one
    genre in the LibRec release, and should one have several, the most frequent (then the smallest id)
    is taken. rating_range=None skips the range check."""
    file = _ratings_file(path, "ciaodvd")
    frame = text_fields(file, ",", _CIAODVD_FIELDS)
    frame = frame.select(
        number_column(frame, file, "user_id", pl.Int64, "a user id"),
        number_column(frame, file, "item_id", pl.Int64, "a movie id"),
        number_column(frame, file, "genre", pl.Int64, "a genre id"),
        number_column(frame, file, "rating", pl.Float64, "a rating"),
        _as_date(frame, file).alias("timestamp"),  # frame_to_interactions turns a Date into Unix seconds
    )
    return frame_to_interactions(
        frame, str(file), _CIAODVD_COLUMNS, rating_range=rating_range, item_features=_genre_features(frame)
    )


# --------------------------------------------------------------------------------------------- parsing


def _ratings_file(path, kind: str) -> Path:
    """The ratings file of a folder, or `path` itself when it is a file."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder; check the path")
    file = path / _RATINGS_FILE[kind]
    if not file.is_file():
        found = sorted(p.name for p in path.iterdir())
        raise DataError(f"{path}: missing {file.name} (the ratings of {kind}); the folder holds {found}; "
                        f"pass the folder of the {kind} data set or its ratings file")
    return file


def text_fields(file: Path, separator: str | None, names: list[str]) -> pl.DataFrame:
    """The file's non-blank lines split into String columns `names` (on `separator`, or on any run of
    whitespace when None), plus `line`: the 1-based line number, for errors (connectors.hetrec reads with
    it too).

    Lines are split here rather than by pl.read_csv so that a row with the wrong number of fields is
    reported with its line number and text; CRLF endings and a missing final newline need no care."""
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as err:
        raise DataError(f"{file}: cannot read the file ({err.strerror or err}); check the path and its "
                        "permissions") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{file}: not UTF-8 text at byte {err.start}; is it the data set's original file?") from err
    lines = (
        pl.DataFrame({"text": pl.Series([text]).str.split("\n").explode()})
        .with_row_index("line", offset=1)
        .with_columns(pl.col("text").str.strip_chars())  # also drops the \r of CRLF endings
        .filter(pl.col("text") != "")
    )
    layout = (separator or " ").join(names)
    if lines.height == 0:
        raise DataError(f"{file}: no rating rows (the file is empty); expected lines of {layout!r}")
    text = lines["text"]
    if separator is None:  # the original is single-spaced; any whitespace run is accepted
        text, separator = text.str.replace_all(r"\s+", " "), " "
    parts = text.str.split(separator)
    counts = parts.list.len()
    wrong = counts != len(names)
    if wrong.any():
        row = int(wrong.arg_true()[0])
        raise DataError(
            f"{file}: line {lines['line'][row]} has {counts[row]} fields, expected {len(names)} ({layout!r}): "
            f"{lines['text'][row]!r}; fix or delete that line ({int(wrong.sum())} such lines in all)"
        )
    columns = {name: parts.list.get(i).str.strip_chars() for i, name in enumerate(names)}
    return pl.DataFrame({"line": lines["line"], **columns})


def number_column(frame: pl.DataFrame, file: Path, col: str, dtype, what: str) -> pl.Series:
    # A non-strict cast turns what does not parse ("x", "3.0" as an integer id) into null.
    return _first_bad(frame, file, col, frame[col].cast(dtype, strict=False), what)


def _as_date(frame: pl.DataFrame, file: Path) -> pl.Series:
    parsed = frame["date"].str.to_date("%Y-%m-%d", strict=False)
    return _first_bad(frame, file, "date", parsed, "a date (YYYY-MM-DD)")


def _first_bad(frame: pl.DataFrame, file: Path, col: str, parsed: pl.Series, what: str) -> pl.Series:
    """`parsed`, or a DataError naming the first line whose `col` did not parse."""
    bad = parsed.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise DataError(
            f"{file}: line {frame['line'][row]}: {col} {frame[col][row]!r} is not {what} "
            f"({int(bad.sum())} such lines); fix or delete those lines"
        )
    return parsed.alias(col)


def _genre_features(frame: pl.DataFrame) -> SideFeatures:
    """One categorical `genre` per movie: its most frequent genre id, the smallest on a tie."""
    counts = frame.group_by("item_id", "genre").len()
    per_item = counts.sort(["item_id", "len", "genre"], descending=[False, True, False]).unique(
        "item_id", keep="first", maintain_order=True
    )
    levels = sorted(per_item["genre"].unique().to_list())
    codes = per_item["genre"].replace_strict({g: i + 1 for i, g in enumerate(levels)}, return_dtype=pl.Int64)
    return SideFeatures(
        ids=Vocabulary(per_item["item_id"].to_numpy()),
        categorical={"genre": codes.to_numpy()},
        categorical_levels={"genre": levels},
    )
