"""read_interactions / read_frame: every format reads the same planted log into the same Interactions."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmaml.connectors import read_frame, read_interactions
from recmaml.data import Interactions
from recmaml.errors import DataError

LOG = {
    "user_id": [1, 1, 2, 3, 3, 3],
    "item_id": [10, 20, 10, 30, 20, 40],
    "rating": [5.0, 3.5, 4.0, 1.0, 2.0, 4.5],
    "timestamp": [100, 101, 102, 103, 104, 105],
}


def _log(ids: str) -> pl.DataFrame:
    df = pl.DataFrame(LOG)
    if ids == "str":
        df = df.with_columns(pl.format("u{}", "user_id").alias("user_id"), pl.format("i{}", "item_id").alias("item_id"))
    return df


def _write(df: pl.DataFrame, kind: str, tmp_path):
    """The log as the source `kind` (a path or a frame)."""
    writers = {
        "csv": ("log.csv", lambda p: df.write_csv(p)),
        "tsv": ("log.tsv", lambda p: df.write_csv(p, separator="\t")),
        "semicolon": ("log.csv", lambda p: df.write_csv(p, separator=";")),
        "pipe-txt": ("log.txt", lambda p: df.write_csv(p, separator="|")),
        "csv.gz": ("log.csv.gz", lambda p: _write_gz(df, p)),
        "parquet": ("log.parquet", lambda p: df.write_parquet(p)),
        "jsonl": ("log.jsonl", lambda p: df.write_ndjson(p)),
        "ndjson": ("log.ndjson", lambda p: df.write_ndjson(p)),
    }
    if kind == "pandas":
        return df.to_pandas()
    if kind == "polars":
        return df
    if kind == "lazy":
        return df.lazy()
    name, write = writers[kind]
    path = tmp_path / name
    write(path)
    return path


def _write_gz(df: pl.DataFrame, path) -> None:
    import gzip

    with gzip.open(path, "wb") as f:
        f.write(df.write_csv().encode())


def _expected(df: pl.DataFrame) -> Interactions:
    return Interactions.from_ids(df["user_id"].to_numpy(), df["item_id"].to_numpy(),
                                 df["rating"].to_numpy(), df["timestamp"].to_numpy())


def _assert_same(got: Interactions, want: Interactions) -> None:
    assert got.users == want.users and got.items == want.items
    assert np.array_equal(got.user_idx, want.user_idx)
    assert np.array_equal(got.item_idx, want.item_idx)
    for name in ("rating", "timestamp"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b)


SOURCES = ["csv", "tsv", "semicolon", "pipe-txt", "csv.gz", "parquet", "jsonl", "ndjson", "pandas", "polars", "lazy"]


@pytest.mark.parametrize("ids", ["int", "str"])
@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_reads_the_same_interactions(kind, ids, tmp_path):
    df = _log(ids)
    got = read_interactions(_write(df, kind, tmp_path))
    _assert_same(got, _expected(df))
    assert got.users.is_integer == (ids == "int")


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl", "pandas"])
def test_missing_rating_column_means_implicit(kind, tmp_path):
    df = _log("int").drop("rating")
    got = read_interactions(_write(df, kind, tmp_path))
    assert got.is_implicit and len(got) == len(df)
    assert np.array_equal(got.timestamp, df["timestamp"].to_numpy())


def test_rating_col_none_reads_implicit_and_timestamp_col_none_drops_time(tmp_path):
    path = _write(_log("int"), "csv", tmp_path)
    assert read_interactions(path, rating_col=None).is_implicit
    assert read_interactions(path, rating_col="").is_implicit
    assert read_interactions(path, timestamp_col=None).timestamp is None
    assert read_interactions(path, timestamp_col="").timestamp is None


def test_column_mapping(tmp_path):
    df = _log("str").rename({"user_id": "userId", "item_id": "movieId", "rating": "stars", "timestamp": "ts"})
    path = _write(df, "csv", tmp_path)
    got = read_interactions(path, user_col="userId", item_col="movieId", rating_col="stars", timestamp_col="ts")
    _assert_same(got, _expected(_log("str")))


def test_explicitly_named_rating_and_timestamp_columns_must_exist(tmp_path):
    path = _write(_log("int").drop("rating", "timestamp"), "csv", tmp_path)
    with pytest.raises(DataError, match="'stars'"):
        read_interactions(path, rating_col="stars")
    with pytest.raises(DataError, match="'ts'"):
        read_interactions(path, timestamp_col="ts")


def test_explicit_delimiter_and_format_override_detection(tmp_path):
    path = tmp_path / "log.dat"
    _log("int").write_csv(path, separator="|")
    with pytest.raises(DataError, match="format="):
        read_interactions(path)
    got = read_interactions(path, format="csv", delimiter="|")
    _assert_same(got, _expected(_log("int")))


def test_unknown_format_lists_the_accepted_ones(tmp_path):
    path = _write(_log("int"), "csv", tmp_path)
    with pytest.raises(DataError, match="parquet.*jsonl") as err:
        read_interactions(path, format="xlsx")
    assert "xlsx" in str(err.value) and "format=" in str(err.value) and "--format" not in str(err.value)


def test_ids_that_turn_to_strings_late_in_a_csv(tmp_path):
    n = 30_000  # past the rows polars guesses column types from
    df = pl.DataFrame({"user_id": np.arange(n) % 50, "item_id": (np.arange(n) % 997).astype(str),
                       "rating": np.ones(n)})
    df = df.with_columns(pl.when(pl.int_range(n) == n - 1).then(pl.lit("late-item")).otherwise("item_id")
                         .alias("item_id"))
    got = read_interactions(_write(df, "csv", tmp_path))
    assert got.users.is_integer and not got.items.is_integer
    assert "late-item" in set(got.items.ids) and len(got) == n


def test_numeric_ids_stay_integers(tmp_path):
    got = read_interactions(_write(_log("int"), "csv", tmp_path))
    assert got.users.ids.dtype == np.int64 and got.items.ids.dtype == np.int64


def test_iso_timestamps_in_csv(tmp_path):
    df = _log("int").with_columns(pl.from_epoch("timestamp", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    got = read_interactions(_write(df, "csv", tmp_path))
    _assert_same(got, _expected(_log("int")))


def test_latin1_csv_reads_with_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("user_id,item_id,rating\nzoé,café,4\nbob,café,2\n".encode("latin-1"))
    got = read_interactions(path, encoding="latin-1")
    assert list(got.users.ids) == ["bob", "zoé"] and list(got.items.ids) == ["café"]


def test_rating_range_accepts_ratings_inside(tmp_path):
    got = read_interactions(_write(_log("int"), "parquet", tmp_path), rating_range=(0.5, 5.0))
    assert got.rating.max() == 5.0


def test_pandas3_string_dtype_columns():
    df = pd.DataFrame({
        "user_id": pd.array(["u1", "u1", "u2"], dtype="string"),
        "item_id": pd.Series(["a", "b", "a"], dtype="str"),  # pandas 3's default string dtype
        "rating": [1.0, 2.0, 3.0],
    })
    got = read_interactions(df)
    assert list(got.users.ids) == ["u1", "u2"] and list(got.items.ids) == ["a", "b"]
    assert np.array_equal(got.rating, np.array([1, 2, 3], np.float32))


def test_side_features_are_passed_through(tmp_path):
    from recmaml.data import SideFeatures, Vocabulary

    feats = SideFeatures(Vocabulary(np.array([10, 20, 30, 40])), numeric={"year": np.arange(4, dtype=np.float32)})
    got = read_interactions(_write(_log("int"), "parquet", tmp_path), item_features=feats)
    assert got.item_features is not None and got.item_features.names == ["year"]


def test_read_frame_is_lazy_for_files_and_reads_every_format(tmp_path):
    df = _log("str")
    for kind in ("csv", "tsv", "parquet", "jsonl"):
        frame = read_frame(_write(df, kind, tmp_path))
        assert isinstance(frame, pl.LazyFrame)
        assert frame.collect().equals(df)
    assert read_frame(df.to_pandas()).equals(df)
    assert read_frame(df) is df


def test_read_frame_refuses_movielens(tmp_path):
    with pytest.raises(DataError, match="read_interactions"):
        read_frame(tmp_path, format="movielens-100k")


# --- dispatch to the SQL and MovieLens readers (tested for real in their own files) -----------------------


@pytest.fixture
def fake_sql(monkeypatch):
    calls = []

    def read_sql_frame(uri, *, table=None, query=None):
        calls.append((uri, table, query))
        return _log("int")

    monkeypatch.setitem(sys.modules, "recmaml.connectors.sql", types.SimpleNamespace(read_sql_frame=read_sql_frame))
    return calls


@pytest.mark.parametrize("source", ["sqlite:///x.db", "postgresql://u@h/db", "postgres://h/db", "data.db",
                                    "data.sqlite", "data.sqlite3"])
def test_sql_sources_go_to_read_sql_frame(source, fake_sql):
    got = read_interactions(source, table="ratings")
    _assert_same(got, _expected(_log("int")))
    assert fake_sql == [(source, "ratings", None)]


def test_format_sql_and_query_reach_read_sql_frame(fake_sql):
    read_frame("warehouse", format="sql", query="select * from r")
    assert fake_sql == [("warehouse", None, "select * from r")]


@pytest.fixture
def fake_movielens(monkeypatch):
    calls = []
    want = _expected(_log("int"))

    def read_movielens(path, variant=None, *, rating_range=None):
        calls.append((str(path), variant, rating_range))
        return want

    def detect_movielens(path):
        return "ml-1m" if str(path).endswith(("ml-1m", "ratings.dat")) else None

    fake = types.SimpleNamespace(read_movielens=read_movielens, detect_movielens=detect_movielens)
    monkeypatch.setitem(sys.modules, "recmaml.connectors.movielens", fake)
    return calls


@pytest.mark.parametrize("fmt, variant", [("movielens-100k", "ml-100k"), ("ml-1m", "ml-1m"),
                                          ("movielens-latest", "ml-latest"), ("MovieLens_1M", "ml-1m")])
def test_movielens_format_names(fmt, variant, fake_movielens, tmp_path):
    read_interactions(tmp_path, format=fmt, rating_range=(1, 5))
    assert fake_movielens == [(str(tmp_path), variant, (1, 5))]


def test_movielens_detected_from_folder_and_file(fake_movielens, tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::2::3::4\n")
    read_interactions(folder)
    read_interactions(folder / "ratings.dat")
    assert [c[1] for c in fake_movielens] == ["ml-1m", "ml-1m"]
    with pytest.raises(DataError, match="format="):
        read_interactions(tmp_path)  # a folder that is not MovieLens


# --- property: CSV and Parquet read back the same rows ----------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([0.5, 1.0, 3.5, 5.0])),
                     min_size=1, max_size=30, unique_by=lambda r: (r[0], r[1])),
       string_ids=st.booleans())
def test_csv_and_parquet_read_back_the_written_rows(rows, string_ids, tmp_path):
    users, items, ratings = map(list, zip(*rows))
    if string_ids:
        users, items = [f"u{u}" for u in users], [f"i{i}" for i in items]
    df = pl.DataFrame({"user_id": users, "item_id": items, "rating": ratings})
    want = set(zip(users, items, ratings))
    for kind in ("csv", "parquet"):
        got = read_interactions(_write(df, kind, tmp_path))
        assert set(zip(got.user_ids().tolist(), got.item_ids().tolist(), got.rating.tolist())) == want


def test_utf8_lossy_replaces_bad_bytes(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user_id,item_id\nz\xe9,1\n")
    got = read_interactions(path, encoding="utf8-lossy")
    assert list(got.users.ids) == ["z\ufffd"]


def test_csv_ids_that_are_not_canonical_integers_stay_text(tmp_path):
    # '007' and '7' are two items, '0.' is not the number 0: inference alone would merge them
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,rating\nu,007,5\nu,7,4\nv,0.,3\nv,8,2\n")
    log = read_interactions(path)
    assert sorted(str(i) for i in log.items.ids) == ["0.", "007", "7", "8"]
    canonical = tmp_path / "plain.csv"
    canonical.write_text("user_id,item_id\n1,7\n1,8\n")
    assert read_interactions(canonical).items.ids.dtype.kind == "i"  # canonical integers stay integers
