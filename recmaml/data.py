"""The nouns of recmaml: Vocabulary (external id <-> internal index), SideFeatures, Interactions and
RankedLists.

`*_id` is an external id (what the user's log says), `*_idx` an internal row (0..n-1). A Vocabulary is
the only translator between the two, and every translation is vectorized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from recmaml.errors import DataError

UNKNOWN = -1
"""Index returned for ids a Vocabulary does not contain."""

INDEX_DTYPE = np.int32

# Integer ids whose span (max id - min id) is at most this, or at most twice the number of values, are
# mapped through a dense lookup table (O(n)); sparser ids are sorted instead (O(n log n)).
_DENSE_LOOKUP_MIN_SPAN = 1 << 20


_PYTHON_PARSE_MAX = 256  # text ids parsed one by one in Python up to this many; polars beyond
# the characters polars' strip_chars() removes (Unicode White_Space; Python's str.strip() also removes \x1c-\x1f)
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
               "\u2028\u2029\u202f\u205f\u3000")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _integer_text(text: str) -> int | None:
    """`text` as polars' cast of the stripped text to Int64 reads it: an optional sign and ASCII digits,
    within int64; else None."""
    text = text.strip(_WHITESPACE)
    if not _INTEGER_TEXT.fullmatch(text):
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None


def _as_id_array(values) -> np.ndarray:
    """Ids as an int64 array when they are integers, else as a numpy unicode array."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise DataError("ids must be integers or strings, got booleans")
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr)):
            raise DataError("ids must not be null or NaN")
        if arr.size and not np.all(arr == np.round(arr)):
            raise DataError("ids must be integers or strings, got non-integral floats")
        return arr.astype(np.int64)
    if arr.dtype.kind == "O" and arr.size and all(isinstance(v, (int, np.integer)) for v in arr.flat):
        return arr.astype(np.int64)
    return arr.astype(str)


class Vocabulary:
    """A sorted set of unique external ids; an id's index is its position.

    Sorting makes the mapping stable: the same set of ids always gives the same indices, whatever the
    order of the rows they came from.
    """

    __slots__ = ("_ids",)

    def __init__(self, ids):
        ids = _as_id_array(ids)
        if ids.ndim != 1:
            raise DataError(f"a Vocabulary needs a 1-d array of ids, got shape {ids.shape}")
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            raise DataError("Vocabulary ids must be sorted and unique; use Vocabulary.fit(values)")
        self._ids = ids
        self._ids.setflags(write=False)

    @classmethod
    def fit(cls, values) -> Vocabulary:
        """The vocabulary of the unique values in `values`."""
        return cls.fit_transform(values)[0]

    @classmethod
    def fit_transform(cls, values) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary of `values` and the index of every value, in one pass."""
        values = _as_id_array(values)
        if values.dtype.kind == "i" and values.size:
            lo, hi = int(values.min()), int(values.max())
            max_span = max(_DENSE_LOOKUP_MIN_SPAN, 2 * values.size)
            if hi - lo <= max_span:
                # Dense ids (the common case: 1..n): a presence table is O(n) where sorting is O(n log n).
                # Small non-negative ids index the table directly, which saves a shifted copy of `values`.
                offset = 0 if 0 <= lo and hi <= max_span else lo
                shifted = values - offset if offset else values
                present = np.zeros(hi - offset + 1, dtype=bool)
                present[shifted] = True
                lookup = np.cumsum(present, dtype=INDEX_DTYPE)  # index + 1 of each present id
                lookup -= 1
                vocab = cls.__new__(cls)
                vocab._ids = np.flatnonzero(present).astype(np.int64) + offset
                vocab._ids.setflags(write=False)
                return vocab, lookup[shifted]
        ids, inverse = np.unique(values, return_inverse=True)
        return cls(ids), inverse.astype(INDEX_DTYPE)

    @property
    def ids(self) -> np.ndarray:
        """All ids, in index order (read-only)."""
        return self._ids

    @property
    def is_integer(self) -> bool:
        return self._ids.dtype.kind == "i"

    def __len__(self) -> int:
        return int(self._ids.size)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self._ids.dtype.kind == other._ids.dtype.kind
            and np.array_equal(self._ids, other._ids)
        )

    def __repr__(self) -> str:
        head = ", ".join(map(str, self._ids[:3]))
        return f"Vocabulary({len(self)} ids: {head}{', ...' if len(self) > 3 else ''})"

    def index(self, values) -> np.ndarray:
        """Indices of `values`; ids not in the vocabulary map to UNKNOWN (-1)."""
        values = np.asarray(values)
        if values.size == 0:
            return np.empty(0, dtype=INDEX_DTYPE)
        if self.is_integer:
            if values.dtype.kind not in "iu":
                values = _as_id_array(values)
                if values.dtype.kind != "i":  # text: each id that reads as an integer still matches
                    return self._index_integer_text(values)
        else:
            values = values.astype(str)
        if len(self) == 0:
            return np.full(values.shape, UNKNOWN, dtype=INDEX_DTYPE)
        pos = np.searchsorted(self._ids, values)
        pos_clipped = np.minimum(pos, len(self) - 1)
        found = self._ids[pos_clipped] == values
        return np.where(found, pos_clipped, UNKNOWN).astype(INDEX_DTYPE)

    def _index_integer_text(self, values: np.ndarray) -> np.ndarray:
        """Indices of text ids in this integer vocabulary: "42" matches 42, "abc" matches nothing. One text
        value among integer ids turns a whole column into text; the other rows must still match. A few ids
        (one request's history) are parsed in Python, as polars parses many: polars' fixed cost per call
        (about 2 ms for its three operations) was most of a single user's latency."""
        if values.size <= _PYTHON_PARSE_MAX:
            parsed = [_integer_text(str(v)) for v in values.ravel()]
            ok = np.array([p is not None for p in parsed], dtype=bool)
            numbers = np.array([p for p in parsed if p is not None], dtype=np.int64)
        else:
            import polars as pl

            series = pl.Series(values.ravel().astype(str)).str.strip_chars().cast(pl.Int64, strict=False)
            ok = series.is_not_null().to_numpy()
            numbers = series.filter(series.is_not_null()).to_numpy()
        out = np.full(values.size, UNKNOWN, dtype=INDEX_DTYPE)
        if ok.any():
            out[ok] = self.index(numbers)
        return out.reshape(values.shape)

    def lookup(self, indices) -> np.ndarray:
        """External ids of `indices` (which must all be valid)."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for a vocabulary of {len(self)} ids")
        return self._ids[indices]

    def to_json(self) -> dict:
        kind = "int" if self.is_integer else "str"
        return {"kind": kind, "ids": self._ids.tolist()}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        kind = obj.get("kind")
        if kind not in ("int", "str"):
            raise DataError(f"vocabulary kind must be 'int' or 'str', got {kind!r}")
        dtype = np.int64 if kind == "int" else str
        return cls(np.asarray(obj["ids"], dtype=dtype))


@dataclass(frozen=True)
class SideFeatures:
    """Side features of users or of items, one row per entity id.

    `categorical[name]` holds one integer code per row, 0 meaning missing and 1..len(levels) a level of
    `categorical_levels[name]`. `multi_hot[name]` holds a (rows x levels) 0/1 matrix (e.g. genres).
    `numeric[name]` holds one float32 per row (e.g. a standardized release year), NaN when missing.
    """

    ids: Vocabulary
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    categorical_levels: dict[str, list] = field(default_factory=dict)
    multi_hot: dict[str, np.ndarray] = field(default_factory=dict)
    multi_hot_levels: dict[str, list] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        for kind, table in (("categorical", self.categorical), ("multi_hot", self.multi_hot),
                            ("numeric", self.numeric)):
            for name, values in table.items():
                if len(values) != n:
                    raise DataError(f"side feature {kind} '{name}' has {len(values)} rows, expected {n}")
        for name in self.categorical:
            if name not in self.categorical_levels:
                raise DataError(f"categorical side feature '{name}' has no levels")
        for name, matrix in self.multi_hot.items():
            if matrix.ndim != 2 or matrix.shape[1] != len(self.multi_hot_levels.get(name, ())):
                raise DataError(f"multi-hot side feature '{name}' must have one column per level")

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.multi_hot, *self.numeric]

    def layout(self) -> dict:
        """What a model trained on these features must remember to read new ones the same way: the
        levels of each categorical and multi-hot feature and the mean and standard deviation of each
        numeric one (JSON-ready)."""
        def stats(values: np.ndarray) -> list[float]:
            known = values[np.isfinite(values)]
            return [float(known.mean()), float(known.std()) or 1.0] if len(known) else [0.0, 1.0]

        return {
            "categorical": {k: [str(v) for v in levels] for k, levels in self.categorical_levels.items()},
            "multi_hot": {k: [str(v) for v in levels] for k, levels in self.multi_hot_levels.items()},
            "numeric": {k: stats(v) for k, v in self.numeric.items()},
        }

    def conformed(self, layout: dict) -> SideFeatures:
        """These features in `layout`'s terms: categorical codes and multi-hot columns matched to its
        levels by name (a level it lacks becomes missing), numeric values standardized with its mean and
        standard deviation, and features it lacks dropped; features of the layout absent here are missing."""
        n = len(self.ids)
        categorical, multi_hot, numeric = {}, {}, {}
        for name, levels in layout["categorical"].items():
            code_of = {level: i + 1 for i, level in enumerate(levels)}
            if name in self.categorical:
                own = [0] + [code_of.get(str(level), 0) for level in self.categorical_levels[name]]
                categorical[name] = np.asarray(own, dtype=np.int64)[self.categorical[name]]
            else:
                categorical[name] = np.zeros(n, dtype=np.int64)
        for name, levels in layout["multi_hot"].items():
            matrix = np.zeros((n, len(levels)), dtype=np.float32)
            if name in self.multi_hot:
                column_of = {level: i for i, level in enumerate(levels)}
                for j, level in enumerate(self.multi_hot_levels[name]):
                    if str(level) in column_of:
                        matrix[:, column_of[str(level)]] = self.multi_hot[name][:, j]
            multi_hot[name] = matrix
        for name, (mean, std) in layout["numeric"].items():
            values = self.numeric.get(name, np.full(n, np.nan, dtype=np.float32))
            numeric[name] = ((np.asarray(values, dtype=np.float64) - mean) / std).astype(np.float32)
        return SideFeatures(ids=self.ids, categorical=categorical, categorical_levels=dict(layout["categorical"]),
                            multi_hot=multi_hot, multi_hot_levels=dict(layout["multi_hot"]), numeric=numeric)

    def aligned_to(self, vocab: Vocabulary) -> SideFeatures:
        """The same features with one row per id of `vocab`; ids without features get missing values."""
        rows = self.ids.index(vocab.ids)
        known = rows != UNKNOWN
        safe = np.where(known, rows, 0)

        def take(values: np.ndarray, missing) -> np.ndarray:
            out = values[safe] if len(values) else np.zeros((len(rows), *values.shape[1:]), values.dtype)
            out = out.copy()
            out[~known] = missing
            return out

        return SideFeatures(
            ids=vocab,
            categorical={k: take(v, 0) for k, v in self.categorical.items()},
            categorical_levels=dict(self.categorical_levels),
            multi_hot={k: take(v, 0) for k, v in self.multi_hot.items()},
            multi_hot_levels=dict(self.multi_hot_levels),
            numeric={k: take(v, np.nan) for k, v in self.numeric.items()},
        )


@dataclass(frozen=True, eq=False)
class Interactions:
    """An interaction log in index form: row r says user `user_idx[r]` met item `item_idx[r]`.

    `rating` (float32) is None for implicit feedback; `timestamp` (int64) is None when the log has none.
    Side features, when present, are aligned to `users` and `items` (row i describes index i).
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    users: Vocabulary
    items: Vocabulary
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    user_features: SideFeatures | None = None
    item_features: SideFeatures | None = None

    def __post_init__(self):
        n = len(self.user_idx)
        if len(self.item_idx) != n:
            raise DataError(f"user_idx has {n} rows but item_idx has {len(self.item_idx)}")
        for name in ("rating", "timestamp"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise DataError(f"{name} has {len(col)} rows, expected {n}")
        for name, vocab in (("user_features", self.users), ("item_features", self.items)):
            feats = getattr(self, name)
            if feats is not None and feats.ids != vocab:
                object.__setattr__(self, name, feats.aligned_to(vocab))

    @classmethod
    def from_ids(
        cls,
        user_ids,
        item_ids,
        rating=None,
        timestamp=None,
        *,
        users: Vocabulary | None = None,
        items: Vocabulary | None = None,
        user_features: SideFeatures | None = None,
        item_features: SideFeatures | None = None,
    ) -> Interactions:
        """Build from external id arrays. Given vocabularies are used as they are (rows whose ids they
        lack are dropped); otherwise vocabularies are fitted on the ids."""
        if users is None:
            users, user_idx = Vocabulary.fit_transform(user_ids)
        else:
            user_idx = users.index(user_ids)
        if items is None:
            items, item_idx = Vocabulary.fit_transform(item_ids)
        else:
            item_idx = items.index(item_ids)
        keep = (user_idx != UNKNOWN) & (item_idx != UNKNOWN)
        all_kept = bool(keep.all())

        def kept(a):
            return a if a is None or all_kept else np.asarray(a)[keep]

        return cls(
            user_idx=kept(user_idx),
            item_idx=kept(item_idx),
            users=users,
            items=items,
            rating=None if rating is None else kept(np.asarray(rating, dtype=np.float32)),
            timestamp=None if timestamp is None else kept(np.asarray(timestamp, dtype=np.int64)),
            user_features=user_features,
            item_features=item_features,
        )

    def __len__(self) -> int:
        return int(len(self.user_idx))

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def is_implicit(self) -> bool:
        return self.rating is None

    def user_ids(self) -> np.ndarray:
        return self.users.lookup(self.user_idx)

    def item_ids(self) -> np.ndarray:
        return self.items.lookup(self.item_idx)

    def take(self, rows) -> Interactions:
        """A subset of rows (index array or boolean mask); vocabularies and features are kept."""
        rows = np.asarray(rows)
        return Interactions(
            user_idx=self.user_idx[rows],
            item_idx=self.item_idx[rows],
            users=self.users,
            items=self.items,
            rating=None if self.rating is None else self.rating[rows],
            timestamp=None if self.timestamp is None else self.timestamp[rows],
            user_features=self.user_features,
            item_features=self.item_features,
        )

    def to_csr(self, values: str = "ones"):
        """A users x items scipy CSR matrix; `values` is 'ones' or 'rating'."""
        import scipy.sparse as sp

        if values == "rating" and self.rating is not None:
            data = self.rating
        else:
            data = np.ones(len(self), dtype=np.float32)
        return sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32
        )

    def __repr__(self) -> str:
        kind = "implicit" if self.is_implicit else "rated"
        return f"Interactions({len(self)} {kind} rows, {self.n_users} users, {self.n_items} items)"


@dataclass(frozen=True, eq=False)
class RankedLists:
    """Ranked recommendations as a long table: one row per (user, rank), ranks 1-based and contiguous
    per user, rows grouped by user in rank order. Short lists are never padded."""

    user_id: np.ndarray
    item_id: np.ndarray
    score: np.ndarray
    rank: np.ndarray

    COLUMNS = ("user_id", "item_id", "score", "rank")

    def __post_init__(self):
        n = len(self.user_id)
        for name in ("item_id", "score", "rank"):
            if len(getattr(self, name)) != n:
                raise DataError(f"RankedLists column {name} has {len(getattr(self, name))} rows, expected {n}")
        object.__setattr__(self, "score", np.asarray(self.score, dtype=np.float32))
        object.__setattr__(self, "rank", np.asarray(self.rank, dtype=np.int32))

    def __len__(self) -> int:
        return int(len(self.user_id))

    @classmethod
    def concat(cls, parts: list[RankedLists]) -> RankedLists:
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int32))
        return cls(*(np.concatenate([getattr(p, c) for p in parts]) for c in cls.COLUMNS))

    def to_polars(self):
        import polars as pl

        return pl.DataFrame({c: getattr(self, c) for c in self.COLUMNS})

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame({c: getattr(self, c) for c in self.COLUMNS})

    @classmethod
    def from_frame(cls, frame) -> RankedLists:
        """From a pandas or polars frame with the columns user_id, item_id, score, rank."""
        import polars as pl

        df = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
        missing = [c for c in cls.COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"ranked lists need columns {list(cls.COLUMNS)}; missing {missing}; found {df.columns}")
        return cls(*(df[c].to_numpy() for c in cls.COLUMNS))

    def to_dict(self) -> dict[str, list]:
        """The four columns as JSON-ready lists (Python ints, floats and strings): json.dumps takes it."""
        return {c: json_ready(getattr(self, c)) for c in self.COLUMNS}

    def to_lists(self) -> list[dict]:
        """One JSON-ready dict per user, in row order: {"user_id", "items" (best first), "scores", "ranks"},
        the shape of recmaml serve's answers."""
        starts = np.flatnonzero(self.rank == 1).tolist() + [len(self)]  # ranks restart at 1 for each user
        return [{"user_id": json_ready(self.user_id[a]), "items": json_ready(self.item_id[a:b]),
                 "scores": json_ready(self.score[a:b]), "ranks": json_ready(self.rank[a:b])}
                for a, b in zip(starts[:-1], starts[1:])]

    def equals(self, other: RankedLists, *, score_tol: float = 0.0) -> bool:
        return (
            len(self) == len(other)
            and np.array_equal(self.user_id, other.user_id)
            and np.array_equal(self.item_id, other.item_id)
            and np.array_equal(self.rank, other.rank)
            and np.allclose(self.score, other.score, rtol=0, atol=score_tol)
        )


# A column of counts (plays, clicks, purchases) is not a rating scale: its whole numbers have a heavy tail,
# the largest many times the typical one (a listening log: median 260 plays, largest 352,698). No rating
# scale in use has both many distinct values and a top at least COUNT_TAIL_RATIO times its median.
COUNT_TAIL_RATIO = 10.0
COUNT_MIN_DISTINCT = 20


def is_count_column(rating: np.ndarray | None) -> bool:
    """True when `rating` holds counts rather than ratings: non-negative whole numbers, more than
    COUNT_MIN_DISTINCT distinct values, the largest at least COUNT_TAIL_RATIO times the median (at least 1).
    1-5, 0.5-4, 1-10 and 0-100 scales are not counts; plays per (user, artist) are."""
    if rating is None or len(rating) == 0:
        return False
    values = np.asarray(rating, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi < COUNT_TAIL_RATIO * max(float(np.median(values)), 1.0):  # cheap tests first
        return False
    return bool(np.all(values == np.round(values))) and len(np.unique(values)) > COUNT_MIN_DISTINCT


def json_ready(value):
    """`value` with numpy arrays and scalars as Python lists and numbers, and non-finite floats (a -inf score,
    a NaN) as None, which strict JSON cannot hold otherwise; dicts, lists and tuples converted throughout."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return [json_ready(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def relevant_rating(rating: np.ndarray | None) -> float | None:
    """The rating that makes an interaction a clear positive on this log's own scale: the smallest rating
    of the log at or above 75% of its range (4 on a 1-5 scale, 3.5 on FilmTrust's 0.5-4, 8 on 1-10).
    None for a log without ratings, and for a column of counts (is_count_column: plays are how much a user
    liked an item, every row a positive): every interaction counts. The benchmark's relevance and the
    default tasks.positive_threshold ('auto') both follow it."""
    if rating is None or len(rating) == 0 or is_count_column(rating):
        return None
    lo, hi = float(np.min(rating)), float(np.max(rating))
    if lo == hi:  # one rating value (e.g. implicit feedback stored as 1.0): everything counts
        return None
    values = np.unique(rating)
    return float(values[values >= lo + 0.75 * (hi - lo) - 1e-9].min())
