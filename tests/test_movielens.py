"""MovieLens readers: the real ml-100k / ml-latest-small / ml-1m files from ../shared (counts from their
README) and a tiny synthetic ml-1m folder in the original format for the ratings parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recmaml.connectors.movielens import (
    AGE_GROUPS,
    detect_movielens,
    read_movielens,
    read_movielens_features,
    read_movielens_items,
)
from recmaml.errors import DataError


@pytest.fixture(scope="module")
def ml100k(ml100k_dir):
    return read_movielens(ml100k_dir)


@pytest.fixture(scope="module")
def ml_latest_small(ml_latest_small_dir):
    return read_movielens(ml_latest_small_dir)


def _genres_of(features, item_id) -> set[str]:
    row = features.ids.index([item_id])[0]
    levels = features.multi_hot_levels["genres"]
    return {levels[j] for j in np.flatnonzero(features.multi_hot["genres"][row])}


def _category(features, name, entity_id):
    code = features.categorical[name][features.ids.index([entity_id])[0]]
    return None if code == 0 else features.categorical_levels[name][code - 1]


# ---------------------------------------------------------------------------------------------- ml-100k


def test_ml100k_ratings(ml100k):
    assert (len(ml100k), ml100k.n_users, ml100k.n_items) == (100_000, 943, 1_682)
    assert set(np.unique(ml100k.rating).tolist()) == {1, 2, 3, 4, 5}
    assert np.bincount(ml100k.rating.astype(int))[1:].tolist() == [6_110, 11_370, 27_145, 34_174, 21_201]
    assert (ml100k.timestamp.min(), ml100k.timestamp.max()) == (874_724_710, 893_286_638)


def test_ml100k_user_features(ml100k):
    users = ml100k.user_features
    assert users.names == ["age", "gender", "occupation"]
    for name in users.categorical:
        assert np.all(users.categorical[name] > 0), f"{name} missing for some users"
    assert users.categorical_levels["age"] == list(AGE_GROUPS)
    assert len(users.categorical_levels["occupation"]) == 21
    # u.user line 1: 1|24|M|technician|85711 (age 24 is in the 18-24 group)
    assert [_category(users, n, 1) for n in ("age", "gender", "occupation")] == [18, "M", "technician"]


def test_ml100k_item_features(ml100k, ml100k_dir):
    items = ml100k.item_features
    genre_names = [line.split("|")[0] for line in (ml100k_dir / "u.genre").read_text().splitlines() if line]
    assert items.multi_hot_levels["genres"] == genre_names and len(genre_names) == 19
    assert _genres_of(items, 1) == {"Animation", "Children's", "Comedy"}
    year = items.numeric["release_year"]
    assert np.isnan(year).sum() == 1 and np.isnan(year[items.ids.index([267])[0]])  # item 267 "unknown"
    assert abs(np.nanmean(year)) < 1e-4 and abs(np.nanstd(year) - 1) < 1e-2
    assert _category(items, "decade", 1) == 1990 and _category(items, "decade", 267) is None


def test_ml100k_titles_are_latin1(ml100k_dir):
    items = read_movielens_items(ml100k_dir)
    title = dict(zip(items["item_id"], items["title"]))
    assert title[543] == "Misérables, Les (1995)"
    assert title[1104] == "C'est arrivé près de chez vous (1992)"


def test_ml100k_split_file_gets_folder_features(ml100k_dir):
    split = read_movielens(ml100k_dir / "u1.base")
    assert len(split) == 80_000
    assert split.user_features is not None and split.item_features is not None
    assert len(split.item_features.ids) == split.n_items


def test_without_features(ml100k_dir):
    data = read_movielens(ml100k_dir / "u1.test", with_features=False)
    assert len(data) == 20_000 and data.user_features is None and data.item_features is None


# -------------------------------------------------------------------------------------- ml-latest-small


def test_ml_latest_small(ml_latest_small):
    data = ml_latest_small
    assert (len(data), data.n_users, data.n_items) == (100_836, 610, 9_724)
    assert np.unique(data.rating).tolist() == [x / 2 for x in range(1, 11)]  # half stars, CRLF stripped
    assert data.user_features is None
    items = data.item_features
    assert "(no genres listed)" not in items.multi_hot_levels["genres"]
    assert _genres_of(items, 1) == {"Adventure", "Animation", "Children", "Comedy", "Fantasy"}
    assert _category(items, "decade", 1) == 1990


def test_ml_latest_years_and_missing_genres(ml_latest_small_dir):
    items = read_movielens_items(ml_latest_small_dir)
    assert len(items) == 9_742
    by_id = {row["item_id"]: row for row in items.iter_rows(named=True)}
    assert by_id[40697]["year"] is None  # "Babylon 5" has no year
    assert by_id[171749]["year"] == 2006  # "Death Note: Desu nôto (2006–2007)"
    assert by_id[143410]["genres"] == []  # "(no genres listed)"


# ------------------------------------------------------------------------------------------------ ml-1m


def test_ml1m_shared_features_parse(ml1m_dir):
    users, items = read_movielens_features(ml1m_dir)
    assert (len(users.ids), len(items.ids)) == (6_040, 3_883)
    assert np.bincount(users.categorical["gender"]).tolist() == [0, 1_709, 4_331]  # missing, F, M
    assert all(np.all(codes > 0) for codes in users.categorical.values())
    assert _category(users, "occupation", 1) == "K-12 student"  # 1::F::1::10::48067
    assert len(items.multi_hot_levels["genres"]) == 18
    assert _genres_of(items, 1) == {"Animation", "Children's", "Comedy"}
    title = dict(read_movielens_items(ml1m_dir).select("item_id", "title").iter_rows())
    assert title[582] == "Metisse (Café au Lait) (1993)"


def test_ml1m_without_ratings_says_how_to_fetch(ml1m_dir):
    with pytest.raises(DataError, match=r"ratings\.dat.*download_movielens\('ml-1m'\)"):
        read_movielens(ml1m_dir)


def _write_ml1m(folder: Path) -> Path:
    folder.mkdir()
    ratings = ["1::10::5::978300760", "1::20::3::978302109", "2::10::4::978301968", "3::30::1::978300275"]
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    users = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117-1234"]
    (folder / "users.dat").write_text("\n".join(users) + "\n", encoding="latin-1")
    movies = ["10::Café au Lait (1993)::Comedy", "20::Trailing colon: (1999)::Drama|Thriller",
              "30::Ends with colon:::Drama"]  # fmt: skip
    (folder / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return folder


def test_ml1m_synthetic_round_trip(tmp_path):
    folder = _write_ml1m(tmp_path / "ml-1m")
    assert detect_movielens(folder) == "ml-1m" and detect_movielens(folder / "ratings.dat") == "ml-1m"
    data = read_movielens(folder)
    assert (len(data), data.n_users, data.n_items) == (4, 3, 3)
    assert data.user_ids().tolist() == [1, 1, 2, 3] and data.item_ids().tolist() == [10, 20, 10, 30]
    assert data.rating.tolist() == [5, 3, 4, 1] and data.timestamp[0] == 978300760
    users, items = data.user_features, data.item_features
    assert [_category(users, n, 2) for n in ("age", "gender", "occupation")] == [56, "M", "self-employed"]
    assert _genres_of(items, 20) == {"Drama", "Thriller"}
    assert _category(items, "decade", 10) == 1990 and _category(items, "decade", 30) is None
    table = read_movielens_items(folder)
    assert table["title"].to_list() == ["Café au Lait (1993)", "Trailing colon: (1999)", "Ends with colon:"]
    assert table["genres"].to_list()[2] == ["Drama"]


def test_ratings_outside_range_are_rejected(tmp_path):
    folder = _write_ml1m(tmp_path / "ml-1m")
    with pytest.raises(DataError, match=r"outside the declared range \[2, 5\]"):
        read_movielens(folder, rating_range=(2, 5))


def test_malformed_ratings_file_names_the_file(tmp_path):
    folder = _write_ml1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_text("1::10::five::978300760\n")
    with pytest.raises(DataError, match="ratings.dat"):
        read_movielens(folder)


# ------------------------------------------------------------------------------------------- detection


def test_detect(ml100k_dir, ml_latest_small_dir, ml1m_dir, tmp_path):
    assert detect_movielens(ml100k_dir) == "ml-100k"
    assert detect_movielens(ml100k_dir / "u.data") == "ml-100k"
    assert detect_movielens(ml100k_dir / "ua.test") == "ml-100k"
    assert detect_movielens(ml_latest_small_dir) == "ml-latest"
    assert detect_movielens(ml_latest_small_dir / "ratings.csv") == "ml-latest"
    assert detect_movielens(ml1m_dir) == "ml-1m"
    assert detect_movielens(ml100k_dir / "u.item") is None
    assert detect_movielens(tmp_path) is None
    assert detect_movielens(tmp_path / "missing") is None


def test_not_movielens_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a MovieLens folder"):
        read_movielens(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_movielens(tmp_path / "missing")
    with pytest.raises(DataError, match="unknown MovieLens variant"):
        read_movielens(tmp_path, variant="ml-20m")
