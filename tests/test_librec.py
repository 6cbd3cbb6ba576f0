"""LibRec readers (FilmTrust, CiaoDVD): tiny files in the original formats for the parser, detection and
errors, and the real files from ../shared/data (counts from their README.md)."""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from recmaml.connectors import detect_librec, read_ciaodvd, read_filmtrust, read_frame, read_interactions
from recmaml.errors import DataError
from recmaml.frames import DuplicateInteractionsWarning

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _epoch(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())


def _rating_of(interactions, user, item) -> float:
    rows = (interactions.user_ids() == user) & (interactions.item_ids() == item)
    assert rows.sum() == 1
    return float(interactions.rating[rows][0])


@pytest.fixture
def filmtrust_dir(tmp_path) -> Path:
    folder = tmp_path / "filmtrust"
    folder.mkdir()
    # user 1 rates item 2 twice: without timestamps the later row (1.5) is kept
    (folder / "ratings.txt").write_text("1 1 2\n1 2 4\n2 1 3.5\n1 2 1.5\n3 7 0.5\n")
    (folder / "trust.txt").write_text("1 2 1\n")
    return folder


@pytest.fixture
def ciaodvd_dir(tmp_path) -> Path:
    folder = tmp_path / "ciaodvd"
    folder.mkdir()
    # CRLF endings, no final newline; user 1 rates movie 10 twice, the later date first in the file
    rows = ["1,10,3,100,5,2003-02-01", "1,10,3,101,2,2001-01-01", "1,11,3,102,4,2000-05-31",
            "2,10,3,103,1,2013-11-28", "2,12,7,104,3,2000-07-12"]
    (folder / "movie-ratings.txt").write_bytes("\r\n".join(rows).encode())
    (folder / "trusts.txt").write_text("1,2,1\n")
    return folder


def _shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{name} not found at {folder} (CI provides ../shared/data next to the repository)")
    return folder


# --------------------------------------------------------------------------------------------- FilmTrust


def test_filmtrust_tiny(filmtrust_dir):
    with pytest.warns(DuplicateInteractionsWarning, match="1 duplicated"):
        got = read_filmtrust(filmtrust_dir)
    assert (len(got), got.n_users, got.n_items) == (4, 3, 3)
    assert got.timestamp is None and got.rating.dtype == np.float32
    assert _rating_of(got, 1, 2) == 1.5  # the later of the two rows
    assert _rating_of(got, 3, 7) == 0.5


def test_filmtrust_file_and_whitespace(tmp_path):
    file = tmp_path / "ratings.txt"
    file.write_text("1\t1  2\r\n 2 3 4 \n\n")  # a tab, a double space, CRLF, padding, a blank line
    got = read_filmtrust(file)
    assert got.user_ids().tolist() == [1, 2] and got.rating.tolist() == [2.0, 4.0]


# ----------------------------------------------------------------------------------------------- CiaoDVD


def test_ciaodvd_tiny(ciaodvd_dir):
    with pytest.warns(DuplicateInteractionsWarning, match="1 duplicated.*by timestamp"):
        got = read_ciaodvd(ciaodvd_dir / "movie-ratings.txt")
    assert (len(got), got.n_users, got.n_items) == (4, 2, 3)
    assert got.timestamp.dtype == np.int64
    assert _rating_of(got, 1, 10) == 5.0  # dated 2003-02-01, later than the 2001 row below it
    kept = dict(zip(zip(got.user_ids().tolist(), got.item_ids().tolist()), got.timestamp.tolist()))
    assert kept[(1, 10)] == _epoch("2003-02-01")
    assert kept[(1, 11)] == 959_731_200 == _epoch("2000-05-31")  # UTC midnight
    assert kept[(2, 10)] == 1_385_596_800 == _epoch("2013-11-28")


def test_ciaodvd_genre_feature(ciaodvd_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateInteractionsWarning)
        got = read_ciaodvd(ciaodvd_dir)
    genres = got.item_features
    assert genres.categorical_levels == {"genre": [3, 7]}
    codes = genres.categorical["genre"][genres.ids.index([10, 11, 12])]
    assert codes.tolist() == [1, 1, 2]  # 1-based codes of levels 3, 3, 7


def test_ciaodvd_several_genres_take_the_most_frequent(tmp_path):
    file = tmp_path / "movie-ratings.txt"
    # movie 1: genre 5 twice, 2 once -> 5; movie 2: genres 4 and 2 once each -> the smaller, 2
    file.write_text("1,1,5,1,4,2001-01-01\n2,1,5,2,4,2001-01-01\n3,1,2,3,4,2001-01-01\n"
                    "1,2,4,4,3,2001-01-01\n2,2,2,5,3,2001-01-01\n")
    genres = read_ciaodvd(file).item_features
    levels = genres.categorical_levels["genre"]
    assert [levels[c - 1] for c in genres.categorical["genre"][genres.ids.index([1, 2])]] == [5, 2]


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("content, match", [
    ("1 1 2\n1 2\n", r"line 2 has 2 fields, expected 3"),
    ("1 1 2\n1 2 3 4\n", r"line 2 has 4 fields"),
    ("1 1 2\n\n1 2 good\n", r"line 3: rating 'good' is not a rating"),
    ("1 x 2\n", r"line 1: item_id 'x' is not an item id"),
    ("1 1 4.5\n", r"outside the declared range \[0.5, 4.0\]"),
    ("\n\n", r"no rating rows"),
])
def test_filmtrust_bad_rows(tmp_path, content, match):
    file = tmp_path / "ratings.txt"
    file.write_text(content)
    with pytest.raises(DataError, match=match) as err:
        read_filmtrust(file)
    assert str(file) in str(err.value)


@pytest.mark.parametrize("row, match", [
    ("1,2,3,4,5", r"line 2 has 5 fields, expected 6"),
    ("1,2,3,4,five,2001-01-01", r"line 2: rating 'five' is not a rating"),
    ("1,2,3,4,5,01/02/2001", r"line 2: date '01/02/2001' is not a date \(YYYY-MM-DD\)"),
])
def test_ciaodvd_bad_rows(tmp_path, row, match):
    file = tmp_path / "movie-ratings.txt"
    file.write_bytes(b"1,1,1,1,5,2000-07-12\r\n" + row.encode())
    with pytest.raises(DataError, match=match) as err:
        read_ciaodvd(file)
    assert str(file) in str(err.value) and "fix or delete" in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="missing ratings.txt"):
        read_filmtrust(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        read_ciaodvd(tmp_path / "nowhere" / "movie-ratings.txt")


# --------------------------------------------------------------------------------------------- detection


def test_detect_librec(filmtrust_dir, ciaodvd_dir, tmp_path):
    assert detect_librec(filmtrust_dir) == detect_librec(filmtrust_dir / "ratings.txt") == "filmtrust"
    assert detect_librec(ciaodvd_dir) == detect_librec(ciaodvd_dir / "movie-ratings.txt") == "ciaodvd"
    assert detect_librec(filmtrust_dir / "trust.txt") is None
    (tmp_path / "ratings.txt").write_text("user_id,item_id\n1,2\n")  # no trust.txt beside it
    assert detect_librec(tmp_path / "ratings.txt") is None and detect_librec(tmp_path) is None
    assert detect_librec(tmp_path / "missing") is None


def test_read_interactions_detects_folders_and_files(filmtrust_dir, ciaodvd_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateInteractionsWarning)
        for source in (filmtrust_dir, filmtrust_dir / "ratings.txt"):
            got = read_interactions(source)
            assert (len(got), got.timestamp) == (4, None)
        for source in (ciaodvd_dir, ciaodvd_dir / "movie-ratings.txt", str(ciaodvd_dir)):
            got = read_interactions(source)
            assert len(got) == 4 and got.timestamp is not None and got.item_features is not None


def test_format_names(tmp_path):
    # Without trust.txt the folder is not detected, but format= forces the reader.
    (tmp_path / "ratings.txt").write_text("1 1 2\n2 1 3\n")
    assert len(read_interactions(tmp_path, format="filmtrust")) == 2
    with pytest.raises(DataError, match="outside the declared range"):
        read_interactions(tmp_path / "ratings.txt", format="FilmTrust", rating_range=(0.5, 2.5))
    other = tmp_path / "dvd.txt"
    other.write_text("1,1,1,1,5,2000-07-12\n")
    assert read_interactions(other, format="ciaodvd").timestamp.tolist() == [_epoch("2000-07-12")]
    with pytest.raises(DataError, match="filmtrust, ciaodvd"):
        read_interactions(other, format="librec")


def test_ordinary_txt_is_still_csv(tmp_path):
    file = tmp_path / "ratings.txt"  # no trust.txt beside it
    file.write_text("user_id,item_id,rating\n1,2,3\n")
    got = read_interactions(file)
    assert (got.user_ids().tolist(), got.rating.tolist()) == ([1], [3.0])


def test_read_frame_refuses_librec(filmtrust_dir):
    with pytest.raises(DataError, match="FilmTrust data is read with read_interactions"):
        read_frame(filmtrust_dir)
    assert read_frame(filmtrust_dir / "ratings.txt", format="csv") is not None  # still readable as a table


# ------------------------------------------------------------------------------- the real files (../shared)


def test_shared_filmtrust():
    folder = _shared("filmtrust")
    with pytest.warns(DuplicateInteractionsWarning, match="3 duplicated"):
        got = read_interactions(folder)
    # 35,497 rows, of which 3 repeat a (user, item) pair
    assert (len(got), got.n_users, got.n_items) == (35_494, 1_508, 2_071)
    assert got.timestamp is None
    assert sorted(np.unique(got.rating).tolist()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]


def test_shared_ciaodvd():
    folder = _shared("ciaodvd")
    with pytest.warns(DuplicateInteractionsWarning, match="320 duplicated"):
        got = read_interactions(folder / "movie-ratings.txt")
    # 72,665 rows, 72,345 distinct (user, movie) pairs
    assert (len(got), got.n_users, got.n_items) == (72_345, 17_615, 16_121)
    assert np.unique(got.rating).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert got.timestamp.dtype == np.int64
    assert (got.timestamp.min(), got.timestamp.max()) == (_epoch("2000-05-31"), _epoch("2013-11-28"))
    assert len(got.item_features.categorical_levels["genre"]) == 17
    assert np.all(got.item_features.categorical["genre"] > 0)  # every movie has a genre
