"""Histories in user chunks, ranked lists written chunk by chunk, side-feature tables."""

import numpy as np
import polars as pl
import pytest

from recmaml.connectors import RankedListsWriter, iter_user_chunks, read_interactions, read_ranked_lists, read_side_features
from recmaml import DataError, RankedLists
from recmaml.synthetic import clustered_log


@pytest.fixture(scope="module")
def shuffled_log(tmp_path_factory):
    """2,000 users' rows in random order (not grouped by user), as CSV and Parquet."""
    cols = clustered_log(2000, 300, seed=3)
    order = np.random.default_rng(0).permutation(len(cols["user_id"]))
    frame = pl.DataFrame({k: v[order] for k, v in cols.items()}).with_columns(pl.format("u{}", "user_id").alias("user_id"))
    folder = tmp_path_factory.mktemp("stream")
    frame.write_csv(folder / "log.csv")
    frame.write_parquet(folder / "log.parquet")
    return folder, frame


def as_set(inter):
    return set(zip(inter.user_ids().tolist(), inter.item_ids().tolist(), inter.rating.tolist()))


@pytest.mark.parametrize("name", ["log.csv", "log.parquet"])
def test_chunks_hold_whole_users_and_lose_no_row(shuffled_log, name, tmp_path):
    folder, frame = shuffled_log
    whole = read_interactions(folder / name)
    chunks = list(iter_user_chunks(folder / name, chunk_rows=5000, workdir=tmp_path))
    assert len(chunks) >= 4
    users = [set(c.users.ids[np.unique(c.user_idx)].tolist()) for c in chunks]
    assert sum(map(len, users)) == whole.n_users == len(set().union(*users))  # each user in exactly one chunk
    assert all(len(c) <= 2 * 5000 for c in chunks)  # bounded by the chunk size (hash parts are uneven)
    assert set().union(*map(as_set, chunks)) == as_set(whole) and sum(map(len, chunks)) == len(whole)
    assert not list(tmp_path.iterdir())  # the temporary parts are gone


def test_a_small_history_is_one_chunk(shuffled_log):
    folder, _ = shuffled_log
    (only,) = iter_user_chunks(folder / "log.parquet", chunk_rows=10**9)
    assert len(only) == len(read_interactions(folder / "log.parquet"))


def test_a_missing_column_fails_before_the_long_pass(shuffled_log, tmp_path):
    folder, frame = shuffled_log
    frame.rename({"item_id": "movie"}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="missing column 'item_id'.*'movie'"):
        next(iter_user_chunks(tmp_path / "bad.parquet", chunk_rows=100))


def ranked_part(users, offset):
    n = len(users)
    return RankedLists(np.repeat(users, 2), np.tile([offset, offset + 1], n), np.tile([2.0, 1.0], n), np.tile([1, 2], n))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".tsv"])
def test_writer_appends_chunks_into_one_file(tmp_path, suffix):
    dest = tmp_path / f"ranked{suffix}"
    parts = [ranked_part(np.array([1, 2]), 10), ranked_part(np.array([], dtype=np.int64), 0), ranked_part(np.array([3]), 20)]
    with RankedListsWriter(dest) as out:
        for part in parts:
            out.write(part)
    assert out.rows == 6
    assert read_ranked_lists(dest).equals(RankedLists.concat(parts))
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]


def test_writer_leaves_the_old_file_on_an_error(tmp_path):
    dest = tmp_path / "ranked.parquet"
    with RankedListsWriter(dest) as out:
        out.write(ranked_part(np.array([1]), 0))
    before = dest.read_bytes()
    with pytest.raises(RuntimeError), RankedListsWriter(dest) as out:
        out.write(ranked_part(np.array([5, 6]), 0))
        raise RuntimeError("scoring failed halfway")
    assert dest.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ranked.parquet"]


def test_writer_writes_an_sql_table(tmp_path):
    pytest.importorskip("adbc_driver_sqlite")
    uri = f"sqlite:///{tmp_path / 'recs.db'}"
    with RankedListsWriter(uri, table="recs") as out:
        out.write(ranked_part(np.array([1, 2]), 0))
        out.write(ranked_part(np.array([3]), 5))
    assert len(read_ranked_lists(uri, table="recs")) == 6


def test_side_feature_tables_become_categorical_multi_hot_and_numeric(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,genres,year,studio\n2,Drama,2001,B\n1,Action|Comedy,1990,A\n3,,,A\n")
    feats = read_side_features(tmp_path / "items.csv", id_col="item_id")
    assert feats.ids.ids.tolist() == [1, 2, 3]
    assert feats.multi_hot_levels["genres"] == ["Action", "Comedy", "Drama"]
    assert feats.multi_hot["genres"].tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert feats.categorical["studio"].tolist() == [1, 2, 1]  # 1-based levels A, B
    np.testing.assert_allclose(feats.numeric["year"][:2], [1990.0, 2001.0])  # the model standardizes them
    assert np.isnan(feats.numeric["year"][2])


def test_side_feature_tables_name_their_problems(tmp_path):
    (tmp_path / "dup.csv").write_text("item_id,studio\n1,A\n1,B\n")
    with pytest.raises(DataError, match="appears more than once"):
        read_side_features(tmp_path / "dup.csv", id_col="item_id")
    with pytest.raises(DataError, match="no id column 'movie'"):
        read_side_features(tmp_path / "dup.csv", id_col="movie")


def test_a_column_type_that_changes_late_is_read_like_read_interactions(tmp_path):
    users = [str(i % 300) for i in range(15000)]
    users[-1] = "u_last"  # text after 14,999 integer ids: the first guess of the type is wrong
    pl.DataFrame({"user_id": users, "item_id": np.arange(15000) % 5000}).write_csv(tmp_path / "late.csv")
    chunks = list(iter_user_chunks(tmp_path / "late.csv", chunk_rows=5000))
    assert len(chunks) == 3 and sum(map(len, chunks)) == 15000
    assert "u_last" in set().union(*(set(c.users.ids.tolist()) for c in chunks))


def test_sql_writer_keeps_the_old_table_when_a_chunk_fails(tmp_path):
    pytest.importorskip("adbc_driver_sqlite")
    uri = f"sqlite:///{tmp_path / 'recs.db'}"
    with RankedListsWriter(uri, table="recs") as out:
        out.write(ranked_part(np.array([1]), 0))
    with pytest.raises(RuntimeError), RankedListsWriter(uri, table="recs") as out:
        out.write(ranked_part(np.array([5, 6, 7]), 0))
        raise RuntimeError("scoring failed after one chunk")
    assert read_ranked_lists(uri, table="recs").user_id.tolist() == [1, 1]


def test_an_empty_parquet_output_keeps_string_id_columns(tmp_path):
    empty = RankedLists(np.array([], dtype=str), np.array([], dtype=str), np.array([]), np.array([]))
    with RankedListsWriter(tmp_path / "r.parquet") as out:
        out.write(empty)
    frame = pl.read_parquet(tmp_path / "r.parquet")
    assert frame.height == 0 and frame.schema["user_id"] == pl.String and frame.schema["item_id"] == pl.String
