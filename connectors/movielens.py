"""MovieLens readers: ml-100k, ml-1m and ml-latest(-small) folders in their original GroupLens formats,
with user and item side features.

    interactions = read_movielens("ml-100k")            # u.data + u.user + u.item
    interactions = read_movielens("ml-100k/u1.base")    # one split's ratings, features from the folder

Side features: users get `age` (the ml-1m age groups 1, 18, 25, 35, 45, 50, 56; ml-100k ages are
bucketed into them), `gender` and `occupation` (categorical); items get `genres` (multi-hot),
`release_year` (numeric, standardized) and `decade` (categorical). ml-latest has no user features.
Everything is parsed with polars; latin-1 files are decoded in Python first so accents come out right.
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import numpy as np
import polars as pl

from recmaml.frames import Columns, frame_to_interactions
from recmaml.data import Interactions, SideFeatures, Vocabulary
from recmaml.errors import DataError

log = logging.getLogger(__name__)

VARIANTS = ("ml-100k", "ml-1m", "ml-latest")
DEFAULT_RATING_RANGE = {"ml-100k": (1.0, 5.0), "ml-1m": (1.0, 5.0), "ml-latest": (0.5, 5.0)}
AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
"""The ml-1m age groups: 1 means "under 18", 18 means 18-24, ..., 56 means "56+"."""

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flags of u.item, in column order (as listed in u.genre)."""

ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
"""Occupation codes 0..20 of ml-1m users.dat (from the ml-1m README)."""

NO_GENRES = "(no genres listed)"
_RATINGS_FILE = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-latest": "ratings.csv"}
_ML100K_RATINGS_NAME = re.compile(r"u(\d|[a-z])?\.(data|base|test)")
_TITLE_YEAR = r"\((\d{4})(?:[-\u2013]\d{4})?\)\s*$"  # "(1995)" or "(2006–2007)" at the end of a title
_DAT_LINE = r"^(\d+)::(.*)::([^:]*)$"  # MovieID::Title::Genres; a title may itself end with ':'
_RATING_NAMES = ["user_id", "item_id", "rating", "timestamp"]
_RATING_TYPES = [pl.Int64, pl.Int64, pl.Float64, pl.Int64]
_ML_COLUMNS = Columns("user_id", "item_id", "rating", "timestamp", require_rating=True, require_timestamp=True)
_LATEST_COLUMNS = Columns("userId", "movieId", "rating", "timestamp", require_rating=True, require_timestamp=True)


# ---------------------------------------------------------------------------------------------- public


def detect_movielens(path) -> str | None:
    """The variant of a MovieLens folder or ratings file ("ml-100k", "ml-1m" or "ml-latest"), else None."""
    path = Path(path)
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names & {"u.data", "u.item"}:
            return "ml-100k"
        if names & {"ratings.dat", "ratings.dat.gz", "movies.dat"}:
            return "ml-1m"
        if "movies.csv" in names:
            return "ml-latest"
        return None
    if path.is_file():
        if path.name in ("ratings.dat", "ratings.dat.gz"):
            return "ml-1m"
        if path.name == "ratings.csv" and (path.parent / "movies.csv").is_file():
            return "ml-latest"
        if _ML100K_RATINGS_NAME.fullmatch(path.name):
            return "ml-100k"
    return None


def read_movielens(
    path, variant: str | None = None, *, rating_range=None, with_features: bool = True
) -> Interactions:
    """Ratings of a MovieLens folder (or of one ratings file in it, e.g. ml-100k/u1.base), with side
    features from the folder. `variant` ("ml-100k", "ml-1m", "ml-latest") is detected when None;
    `rating_range` defaults to (1, 5), or (0.5, 5) for ml-latest."""
    path, variant = Path(path), _resolve_variant(path, variant)
    folder, ratings_file = _locate(path, variant)
    frame = _read_ratings(ratings_file, variant)
    user_features = item_features = None
    if with_features:
        user_features, item_features = read_movielens_features(folder, variant)
    return frame_to_interactions(
        frame,
        str(ratings_file),
        _LATEST_COLUMNS if variant == "ml-latest" else _ML_COLUMNS,
        rating_range=rating_range if rating_range is not None else DEFAULT_RATING_RANGE[variant],
        user_features=user_features,
        item_features=item_features,
    )


def read_movielens_features(path, variant: str | None = None) -> tuple[SideFeatures | None, SideFeatures | None]:
    """(user features, item features) of a MovieLens folder; None for a side whose file is absent
    (ml-latest has no user file)."""
    path, variant = Path(path), _resolve_variant(path, variant)
    folder = path if path.is_dir() else path.parent
    users = _read_users(folder, variant)
    items = _read_items(folder, variant)
    return (
        None if users is None else _user_features(users, variant),
        None if items is None else _item_features(items, variant),
    )


def read_movielens_items(path, variant: str | None = None) -> pl.DataFrame:
    """The movie table of a MovieLens folder: item_id, title, year (null when unknown), genres (a list)."""
    path, variant = Path(path), _resolve_variant(path, variant)
    folder = path if path.is_dir() else path.parent
    items = _read_items(folder, variant)
    if items is None:
        raise DataError(f"{folder}: no movie file ({_items_file(variant)}) for MovieLens {variant}")
    return items


# ------------------------------------------------------------------------------------ locating files


def _resolve_variant(path, variant: str | None) -> str:
    if variant is None:
        if not Path(path).exists():
            raise DataError(f"{path}: no such file or folder")
        variant = detect_movielens(path)
        if variant is None:
            raise DataError(
                f"{path}: not a MovieLens folder or ratings file; expected u.data (ml-100k), ratings.dat "
                "(ml-1m) or ratings.csv + movies.csv (ml-latest); pass variant= to force one"
            )
        return variant
    name = variant.lower().replace("movielens-", "ml-")
    name = "ml-latest" if name.startswith("ml-latest") else name
    if name not in VARIANTS:
        raise DataError(f"unknown MovieLens variant {variant!r}; expected one of {list(VARIANTS)}")
    return name


def _locate(path: Path, variant: str) -> tuple[Path, Path]:
    """(folder, ratings file) for a folder or a ratings file path."""
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    ratings = path / _RATINGS_FILE[variant]
    if variant == "ml-1m" and not ratings.exists() and (path / "ratings.dat.gz").exists():
        ratings = path / "ratings.dat.gz"
    if not ratings.is_file():
        found = sorted(p.name for p in path.iterdir())
        name = path.name if path.name in ("ml-100k", "ml-1m", "ml-latest-small") else variant
        raise DataError(
            f"{path}: missing {ratings.name} (the ratings of MovieLens {variant}); the folder holds {found}; "
            f"fetch the full data set with recmaml.connectors.download_movielens({name!r})"
        )
    return path, ratings


# --------------------------------------------------------------------------------------- raw parsing


def _read_bytes(file: Path, encoding: str = "utf-8") -> bytes:
    """The file's bytes as UTF-8 (gunzipped when it ends in .gz)."""
    try:
        data = file.read_bytes()
    except OSError as err:
        raise DataError(f"{file}: cannot read ({err.strerror or err})") from err
    if file.suffix == ".gz":
        data = gzip.decompress(data)
    return data if encoding == "utf-8" else data.decode(encoding).encode("utf-8")


def _read_table(file: Path, separator: str, names: list[str], dtypes: list, encoding: str = "utf-8") -> pl.DataFrame:
    """A header-less delimited file; a "::" separator is mapped to a single byte first."""
    data = _read_bytes(file, encoding)
    if separator == "::":
        data, separator = data.replace(b"::", b"\x1f"), "\x1f"
    try:
        return pl.read_csv(
            data, separator=separator, has_header=False, schema=dict(zip(names, dtypes)), quote_char=None
        )
    except pl.exceptions.PolarsError as err:
        fields = separator.replace("\x1f", "::").join(names)
        raise DataError(f"{file}: not in the expected format {fields!r} ({_first_line(err)})") from err


def _first_line(err: Exception) -> str:
    """The first line of a polars error (the rest is advice on read_csv options)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_csv(file: Path, schema: dict) -> pl.DataFrame:
    """A CSV file with a header holding (at least) the columns of `schema`."""
    try:
        frame = pl.read_csv(file, schema_overrides=schema)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{file}: cannot parse as CSV with columns {list(schema)} ({_first_line(err)})") from err
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: missing columns {missing}; found {frame.columns}")
    return frame


def _read_ratings(file: Path, variant: str) -> pl.DataFrame:
    if variant == "ml-latest":
        return _read_csv(file, {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64})
    separator = "::" if variant == "ml-1m" else "\t"
    return _read_table(file, separator, _RATING_NAMES, _RATING_TYPES)


def _items_file(variant: str) -> str:
    return {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-latest": "movies.csv"}[variant]


def _read_users(folder: Path, variant: str) -> pl.DataFrame | None:
    """user_id, age (an AGE_GROUPS value), gender, occupation (a name); None when there is no user file."""
    if variant == "ml-latest":
        return None
    file = folder / ("u.user" if variant == "ml-100k" else "users.dat")
    if not file.is_file():
        log.warning("%s: not found; loading MovieLens %s without user features", file, variant)
        return None
    return _users_100k(file) if variant == "ml-100k" else _users_1m(file)


def _users_100k(file: Path) -> pl.DataFrame:
    """u.user: user|age|gender|occupation|zip; ages are bucketed into AGE_GROUPS."""
    names = ["user_id", "age", "gender", "occupation", "zip"]
    users = _read_table(file, "|", names, [pl.Int64, pl.Int64, pl.String, pl.String, pl.String])
    groups = np.asarray(AGE_GROUPS)
    bucket = np.searchsorted(groups, users["age"].fill_null(0).to_numpy(), side="right")  # 0: missing
    age = pl.Series("age", groups[np.maximum(bucket - 1, 0)]).set(pl.Series(bucket == 0), None)
    return users.with_columns(age).select("user_id", "age", "gender", "occupation")


def _users_1m(file: Path) -> pl.DataFrame:
    """users.dat: UserID::Gender::Age::Occupation::Zip-code; occupation codes become names."""
    names = ["user_id", "gender", "age", "occupation", "zip"]
    users = _read_table(file, "::", names, [pl.Int64, pl.String, pl.Int64, pl.Int64, pl.String])
    occupation = pl.col("occupation").replace_strict(dict(enumerate(ML1M_OCCUPATIONS)), default=None)
    return users.with_columns(occupation).select("user_id", "age", "gender", "occupation")


def _read_items(folder: Path, variant: str) -> pl.DataFrame | None:
    """item_id, title, year, genres (List[String]); None when there is no movie file."""
    file = folder / _items_file(variant)
    if not file.is_file():
        log.warning("%s: not found; loading MovieLens %s without item features", file, variant)
        return None
    title_year = pl.col("title").str.extract(_TITLE_YEAR, 1).cast(pl.Int32)
    if variant == "ml-100k":
        names = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
        dtypes = [pl.Int64, pl.String, pl.String, pl.String, pl.String] + [pl.Int8] * len(ML100K_GENRES)
        items = _read_table(file, "|", names, dtypes, encoding="latin-1")
        date_year = pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int32)
        flags = [pl.when(pl.col(g) == 1).then(pl.lit(g)) for g in ML100K_GENRES]
        genres = pl.concat_list(flags).list.drop_nulls()
        year = pl.coalesce(date_year, title_year)
        return items.select("item_id", "title", year.alias("year"), genres.alias("genres"))
    if variant == "ml-1m":
        items = _read_dat_movies(file)
    else:
        items = _read_csv(file, {"movieId": pl.Int64, "title": pl.String, "genres": pl.String})
        items = items.rename({"movieId": "item_id"})
    named = (pl.element() != "") & (pl.element() != NO_GENRES)
    genres = pl.col("genres").fill_null("").str.split("|").list.eval(pl.element().filter(named))
    return items.select("item_id", "title", title_year.alias("year"), genres.alias("genres"))


def _read_dat_movies(file: Path) -> pl.DataFrame:
    """movies.dat (MovieID::Title::Genres, latin-1); split with a regex, since a title may end in ':'."""
    lines = pl.Series("line", _read_bytes(file, "latin-1").decode("utf-8").splitlines())
    lines = lines.filter(lines.str.strip_chars() != "")
    parts = lines.str.extract_groups(_DAT_LINE).struct.unnest()
    parts.columns = ["item_id", "title", "genres"]
    bad = parts["item_id"].is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise DataError(f"{file}: line {row + 1} is not MovieID::Title::Genres: {lines[row]!r}")
    return parts.with_columns(pl.col("item_id").cast(pl.Int64))


# ---------------------------------------------------------------------------------- side features


def _entity_ids(frame: pl.DataFrame, col: str, file_hint: str) -> Vocabulary:
    dup = frame[col].is_duplicated()
    if dup.any():
        raise DataError(f"{file_hint}: id {frame[col].filter(dup)[0]} is listed more than once")
    return Vocabulary(frame[col].to_numpy())


def level_codes(values: pl.Series, levels: list) -> np.ndarray:
    """1-based position of each value in `levels`; 0 for missing or unknown values."""
    mapping = {level: i + 1 for i, level in enumerate(levels)}
    return values.replace_strict(mapping, default=0, return_dtype=pl.Int32).fill_null(0).to_numpy()


def multi_hot(lists: pl.Series, levels: list[str]) -> np.ndarray:
    """(rows x levels) float32 0/1 matrix from a List[String] column."""
    long = pl.DataFrame({"v": lists}).with_row_index("row").explode("v")
    col = level_codes(long["v"], levels) - 1
    row = long["row"].to_numpy()
    matrix = np.zeros((len(lists), len(levels)), dtype=np.float32)
    matrix[row[col >= 0], col[col >= 0]] = 1.0
    return matrix


def _user_features(users: pl.DataFrame, variant: str) -> SideFeatures:
    users = users.sort("user_id")
    if variant == "ml-1m":
        occupations = list(ML1M_OCCUPATIONS)
    else:
        occupations = sorted(users["occupation"].drop_nulls().unique())
    levels = {"age": list(AGE_GROUPS), "gender": ["F", "M"], "occupation": occupations}
    return SideFeatures(
        ids=_entity_ids(users, "user_id", f"MovieLens {variant} users"),
        categorical={name: level_codes(users[name], lv) for name, lv in levels.items()},
        categorical_levels=levels,
    )


def _item_features(items: pl.DataFrame, variant: str) -> SideFeatures:
    items = items.sort("item_id")
    if variant == "ml-100k":
        genres = list(ML100K_GENRES)
    else:
        genres = sorted(items["genres"].explode().drop_nulls().unique())
    year = items["year"].cast(pl.Float64)
    known = year.drop_nulls()
    std = known.std() if len(known) > 1 else None
    scaled = (year - (known.mean() or 0.0)) / (std if std else 1.0)
    decade = (items["year"] // 10 * 10).cast(pl.Int64)
    decades = sorted(decade.drop_nulls().unique().to_list())
    return SideFeatures(
        ids=_entity_ids(items, "item_id", f"MovieLens {variant} movies"),
        categorical={"decade": level_codes(decade, decades)},
        categorical_levels={"decade": decades},
        multi_hot={"genres": multi_hot(items["genres"], genres)},
        multi_hot_levels={"genres": genres},
        numeric={"release_year": scaled.fill_null(np.nan).cast(pl.Float32).to_numpy()},
    )
