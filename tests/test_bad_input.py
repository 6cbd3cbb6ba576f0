"""Bad input raises DataError naming the source, the column or row, and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest

from recmaml.connectors import read_interactions
from recmaml.frames import DuplicateInteractionsWarning
from recmaml.errors import DataError


def _csv(tmp_path, text: str, name: str = "log.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _raises(source, *fragments, **kwargs) -> DataError:
    """Assert read_interactions fails with a DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        read_interactions(source, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
    return info.value


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    _raises(path, path, "check the path")


def test_empty_file(tmp_path):
    path = _csv(tmp_path, "")
    _raises(path, path, "empty")


def test_header_only_file(tmp_path):
    path = _csv(tmp_path, "user_id,item_id,rating\n")
    _raises(path, path, "no interactions")


def test_misnamed_columns_suggest_the_flag(tmp_path):
    path = _csv(tmp_path, "userId,movieId,rating\n1,2,3\n")
    # every missing column at once, in the API's spelling (the CLI's flags are for the CLI)
    err = _raises(path, path, "'user_id' for the user, 'item_id' for the item", "user_col='userId', item_col='movieId'")
    assert "--" not in str(err)
    _raises(path, path, "'item_id'", "movieId", "item_col='movieId'", user_col="userId")


def test_non_numeric_rating_names_column_and_row(tmp_path):
    path = _csv(tmp_path, "user_id,item_id,rating\n1,2,3\n1,3,four\n")
    _raises(path, path, "'rating'", "'four'", "row 2")


def test_non_numeric_rating_late_in_a_big_csv(tmp_path):
    n = 20_000  # past the rows polars guesses types from, so the first parse fails and the retry reports it
    lines = [f"{i % 100},{i},4" for i in range(n)] + ["7,7,bad"]
    path = _csv(tmp_path, "user_id,item_id,rating\n" + "\n".join(lines) + "\n")
    _raises(path, path, "'rating'", "'bad'", f"row {n + 1}")


@pytest.mark.parametrize("text, col, row", [
    ("user_id,item_id\n1,2\n,3\n", "user_id", 2),
    ("user_id,item_id\n1,2\n1,3\n2,\n", "item_id", 3),
])
def test_null_ids_name_column_and_row(tmp_path, text, col, row):
    path = _csv(tmp_path, text)
    _raises(path, path, repr(col), f"row {row}")


def test_ratings_outside_the_declared_range(tmp_path):
    path = _csv(tmp_path, "user_id,item_id,rating\n1,2,3\n1,3,11\n2,3,-1\n")
    _raises(path, path, "'rating'", "[1, 5]", "row 2", rating_range=(1, 5))


def test_duplicated_pairs_keep_the_latest_and_warn_once(tmp_path):
    path = _csv(tmp_path, "user_id,item_id,rating,timestamp\n"
                          "1,2,1,300\n1,2,5,100\n1,2,3,200\n2,2,4,1\n2,2,2,9\n3,3,1,1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_interactions(path)
    dup = [w for w in caught if issubclass(w.category, DuplicateInteractionsWarning)]
    assert len(dup) == 1 and "3 duplicated" in str(dup[0].message) and str(path) in str(dup[0].message)
    kept = dict(zip(zip(got.user_ids().tolist(), got.item_ids().tolist()), zip(got.rating, got.timestamp)))
    assert kept == {(1, 2): (1.0, 300), (2, 2): (2.0, 9), (3, 3): (1.0, 1)}


def test_undecodable_text_suggests_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("user_id,item_id\nzoé,1\n".encode("latin-1"))
    err = _raises(path, path, "utf8", "encoding='latin-1'")
    assert isinstance(err.__cause__, pl.exceptions.PolarsError)


def test_text_that_is_not_the_declared_encoding(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user_id,item_id\n\xff\xfe,1\n")
    _raises(path, path, "ascii", "encoding=", encoding="ascii")
    _raises(path, path, "unknown encoding", encoding="klingon")


def test_truncated_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"user_id": np.arange(100), "item_id": np.arange(100)}).write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _raises(path, path, "not a valid Parquet file", "truncated?")
    assert err.__cause__ is not None


def test_malformed_json_lines(tmp_path):
    path = _csv(tmp_path, '{"user_id": 1, "item_id": 2}\n{"user_id": 1, "item_id": \n', name="log.jsonl")
    _raises(path, path, "JSON Lines")


def test_ragged_csv_row(tmp_path):
    path = _csv(tmp_path, "user_id,item_id\n1,2\n1,2,3,4\n")
    _raises(path, path, "delimiter=")


def test_unknown_extension_names_the_format_flag(tmp_path):
    path = _csv(tmp_path, "user_id,item_id\n1,2\n", name="log.xlsx")
    _raises(path, path, "format=", "parquet")


def test_pandas_column_with_mixed_types():
    df = pd.DataFrame({"user_id": pd.Series([1, "b"], dtype=object), "item_id": [1, 2]})
    _raises(df, "pandas DataFrame", "'user_id'", "astype(str)")


def test_null_ids_in_a_pandas_frame():
    df = pd.DataFrame({"user_id": ["a", None, "c"], "item_id": ["x", "y", "z"]})
    _raises(df, "pandas DataFrame", "'user_id'", "row 2")


def test_read_frame_names_a_broken_file(tmp_path):
    from recmaml.connectors import read_frame

    path = tmp_path / "cands.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="truncated") as info:
        read_frame(path)
    assert str(path) in str(info.value)
