"""Writing ranked lists: every format round trips exactly, writes are atomic, mistakes are clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmaml.connectors.writers import read_ranked_lists, write_ranked_lists
from recmaml.data import RankedLists
from recmaml.errors import DataError


def _ranked(user_ids, item_ids, scores) -> RankedLists:
    """Lists grouped by user with contiguous 1-based ranks, as the recommender produces them."""
    users = np.asarray(user_ids)
    rank = np.zeros(len(users), dtype=np.int32)
    for i in range(len(users)):
        rank[i] = 1 if i == 0 or users[i] != users[i - 1] else rank[i - 1] + 1
    return RankedLists(users, np.asarray(item_ids), np.asarray(scores, dtype=np.float32), rank)


INT_RANKED = _ranked([7, 7, 7, 42, 42, 1000000007], [3, 1, 2, 5, 3, 9], [0.9, 0.5, 0.125, 2.5, -1.0, 1 / 3])
STR_RANKED = _ranked(
    ["alice", "alice", "bob", "carol, jr", "carol, jr"],
    ["tt0111161", "007", 'say "hi"', "nan", "12"],  # quoting, leading zeros, float-looking and int-looking
    [0.75, 0.25, 1.0, 0.1, 0.05],
)
FILE_FORMATS = ["csv", "tsv", "parquet", "jsonl", "ndjson"]


def _assert_same(got: RankedLists, want: RankedLists) -> None:
    assert got.equals(want)
    assert got.user_id.dtype.kind == want.user_id.dtype.kind  # int ids stay ints, string ids strings
    assert got.item_id.dtype.kind == want.item_id.dtype.kind


@pytest.mark.parametrize("ranked", [INT_RANKED, STR_RANKED], ids=["int_ids", "str_ids"])
@pytest.mark.parametrize("ext", FILE_FORMATS)
def test_file_round_trip(tmp_path, ranked, ext):
    path = tmp_path / f"recs.{ext}"
    assert write_ranked_lists(ranked, path) is None
    _assert_same(read_ranked_lists(path), ranked)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("ranked", [INT_RANKED, STR_RANKED], ids=["int_ids", "str_ids"])
def test_format_flag_overrides_extension(tmp_path, ranked):
    path = tmp_path / "recs.out"
    write_ranked_lists(ranked, str(path), format="parquet")
    assert path.read_bytes()[:4] == b"PAR1"
    _assert_same(read_ranked_lists(path, format="parquet"), ranked)


@pytest.mark.parametrize("ranked", [INT_RANKED, STR_RANKED], ids=["int_ids", "str_ids"])
def test_sqlite_round_trip(tmp_path, ranked):
    uri = f"sqlite:///{tmp_path}/recs.db"
    write_ranked_lists(ranked, uri)
    _assert_same(read_ranked_lists(uri), ranked)
    write_ranked_lists(INT_RANKED, tmp_path / "recs.db", table="other")  # a plain .db path is SQLite too
    _assert_same(read_ranked_lists(tmp_path / "recs.db", table="other"), INT_RANKED)
    _assert_same(read_ranked_lists(uri), ranked)  # the first table is untouched


@pytest.mark.parametrize("ranked", [INT_RANKED, STR_RANKED], ids=["int_ids", "str_ids"])
def test_dataframe_round_trip(ranked):
    pdf = write_ranked_lists(ranked, "pandas")
    assert isinstance(pdf, pd.DataFrame) and list(pdf.columns) == list(RankedLists.COLUMNS)
    _assert_same(read_ranked_lists(pdf), ranked)
    plf = write_ranked_lists(ranked, format="polars")
    assert isinstance(plf, pl.DataFrame) and plf.columns == list(RankedLists.COLUMNS)
    _assert_same(read_ranked_lists(plf), ranked)


def test_csv_has_the_four_columns_in_order(tmp_path):
    path = tmp_path / "recs.csv"
    write_ranked_lists(INT_RANKED, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id,item_id,score,rank"
    assert lines[1] == "7,3,0.9,1"


def _fail_halfway(frame, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"user_id,item_id,sc")  # some bytes of a file that will never be finished
    raise OSError("disk full (planted)")


@pytest.mark.parametrize("ext, writer", [("csv", "write_csv"), ("parquet", "write_parquet"), ("jsonl", "write_ndjson")])
def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch, ext, writer):
    path = tmp_path / f"recs.{ext}"
    write_ranked_lists(INT_RANKED, path)
    before = path.read_bytes()
    monkeypatch.setattr(pl.DataFrame, writer, _fail_halfway)
    with pytest.raises(OSError, match="planted"):
        write_ranked_lists(STR_RANKED, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _fail_halfway)
    with pytest.raises(OSError, match="planted"):
        write_ranked_lists(INT_RANKED, tmp_path / "recs.parquet")
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_lists_formats_and_the_keyword(tmp_path):
    with pytest.raises(DataError, match=r"'\.xlsx' \(Excel.*\.csv.*\.parquet.*format=") as err:
        write_ranked_lists(INT_RANKED, tmp_path / "recs.xlsx")
    assert "--format" not in str(err.value)  # --format is the CLI's flag for inputs, and this is the API
    with pytest.raises(DataError, match="unknown output format 'xml'.*format="):
        write_ranked_lists(INT_RANKED, tmp_path / "recs.csv", format="xml")
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folder_is_named(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(DataError, match=f"folder '{missing}' does not exist"):
        write_ranked_lists(INT_RANKED, missing / "recs.csv")
    with pytest.raises(DataError, match=f"folder '{missing}' does not exist"):
        write_ranked_lists(INT_RANKED, f"sqlite:///{missing}/recs.db")


def test_reader_checks_columns(tmp_path):
    path = tmp_path / "bad.csv"
    pl.DataFrame({"user": [1], "item_id": [2], "score": [0.5], "rank": [1]}).write_csv(path)
    with pytest.raises(DataError, match=r"bad\.csv.*missing \['user_id'\]"):
        read_ranked_lists(path)
    pl.DataFrame({"user_id": [1], "item_id": [2], "score": [0.5], "rank": [None]}).write_csv(path)
    with pytest.raises(DataError, match="'rank' has 1 missing values"):
        read_ranked_lists(path)


def test_empty_ranked_lists_round_trip(tmp_path):
    empty = RankedLists.concat([])
    for ext in ("csv", "parquet"):
        write_ranked_lists(empty, tmp_path / f"empty.{ext}")
        assert len(read_ranked_lists(tmp_path / f"empty.{ext}")) == 0


# Ids: integers of any size, or text of any characters (commas, quotes, newlines, unicode); scores: any
# finite float32.
_int_ids = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_str_ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
_scores = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def _random_ranked(draw) -> RankedLists:
    ids = draw(st.sampled_from([_int_ids, _str_ids]))
    rows = draw(st.lists(st.tuples(ids, ids, _scores), min_size=1, max_size=30))
    rows.sort(key=lambda r: r[0])  # grouped by user, like real ranked lists
    users, items, scores = zip(*rows, strict=True)
    return _ranked(list(users), list(items), list(scores))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranked=_random_ranked(), ext=st.sampled_from(["csv", "parquet"]))
def test_round_trip_property(tmp_path, ranked, ext):
    path = tmp_path / f"recs.{ext}"
    write_ranked_lists(ranked, path)
    got = read_ranked_lists(path)
    if ext == "csv" and ranked.user_id.dtype.kind == "U":
        # CSV has no types: a column of text ids that all spell canonical integers comes back as ints.
        got = RankedLists(got.user_id.astype(str), got.item_id.astype(str), got.score, got.rank)
    _assert_same(got, ranked)


def test_reader_rejects_non_numeric_scores(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("user_id\titem_id\tscore\trank\n1\t2\t0.5\t1\n1\t3\thigh\t2\n")
    with pytest.raises(DataError, match=r"bad\.tsv: column 'score' must hold numbers; found 'high' at data row 2"):
        read_ranked_lists(path)
