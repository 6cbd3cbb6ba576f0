"""The Python API for existing jobs: frames in and out, implicit-style arrays, candidate re-ranking."""

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from recmaml import DataError, Interactions, MetaRecommender, RankedLists
from recmaml.heldout import evaluate_recommender

GROUP = 20  # items per taste group in tests/planted.taste_groups


@pytest.fixture(scope="module")
def fitted(taste_log, tiny_config):
    return MetaRecommender(tiny_config).fit(taste_log)


def history_frame():
    # user 7 shows group-0 items, user 8 group-1 items, user 9 group-2 items
    return pd.DataFrame({"user_id": [7, 7, 7, 8, 8, 8, 9, 9, 9], "item_id": [0, 1, 2, 20, 21, 22, 40, 41, 42],
                         "rating": [5.0] * 9})


def test_fit_accepts_pandas_and_polars_frames_alike(taste_log, tiny_config):
    frame = pd.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(), "rating": taste_log.rating})
    from_pandas = MetaRecommender(tiny_config).fit(frame)
    from_polars = MetaRecommender(tiny_config).fit(pl.from_pandas(frame))
    a = from_pandas.recommend(history_frame(), k=5)
    b = from_polars.recommend(pl.from_pandas(history_frame()), k=5)
    assert isinstance(a, pd.DataFrame) and isinstance(b, pl.DataFrame)
    assert list(a.columns) == ["user_id", "item_id", "score", "rank"] == b.columns
    assert RankedLists.from_frame(a).equals(RankedLists.from_frame(b))


def test_recommend_returns_the_kind_it_was_given(fitted):
    pandas_out = fitted.recommend(history_frame(), k=5)
    polars_out = fitted.recommend(pl.from_pandas(history_frame()), k=5)
    lazy_out = fitted.recommend(pl.from_pandas(history_frame()).lazy(), k=5)
    interactions = Interactions.from_ids(*(history_frame()[c].to_numpy() for c in ("user_id", "item_id")),
                                         rating=history_frame().rating.to_numpy())
    ranked = fitted.recommend(interactions, k=5)
    assert isinstance(pandas_out, pd.DataFrame) and isinstance(polars_out, pl.DataFrame)
    assert isinstance(lazy_out, pl.DataFrame) and isinstance(ranked, RankedLists)
    for out in (pandas_out, polars_out, lazy_out):
        assert RankedLists.from_frame(out).equals(ranked)
    for user, group in ((7, 0), (8, 1), (9, 2)):
        assert (pandas_out[pandas_out.user_id == user].item_id // GROUP == group).sum() >= 4


def test_predict_takes_a_frame_of_pairs_and_returns_the_same_kind(fitted):
    pairs = pd.DataFrame({"user_id": [7, 7, 8, 8], "item_id": [3, 45, 23, 5]})
    out = fitted.predict(history_frame(), pairs)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["user_id", "item_id", "prediction"]
    assert out.prediction[0] > out.prediction[1] and out.prediction[2] > out.prediction[3]  # in-group items first
    np.testing.assert_allclose(out.prediction.to_numpy(),
                               fitted.predict(history_frame(), pairs.user_id.to_numpy(), pairs.item_id.to_numpy()))
    assert isinstance(fitted.predict(pl.from_pandas(history_frame()), pl.from_pandas(pairs)), pl.DataFrame)


def test_frames_with_other_column_names_are_refused_with_the_names_found(fitted):
    with pytest.raises(DataError, match="missing column.*user_id.*found"):
        fitted.recommend(pd.DataFrame({"uid": [1], "item_id": [0]}))
    with pytest.raises(DataError, match="expected an Interactions or a pandas/polars DataFrame"):
        fitted.recommend([(1, 0)])


def user_items_matrix(fitted, rows):
    """CSR over the model's item columns, one row per list of item ids."""
    indptr = np.cumsum([0, *map(len, rows)])
    cols = fitted.items.index(np.concatenate(rows))
    return sp.csr_matrix((np.full(len(cols), 5.0, np.float32), cols, indptr), shape=(len(rows), len(fitted.items)))


def test_recommend_arrays_agrees_with_recommend(fitted):
    rows = [[0, 1, 2], [20, 21, 22], [40, 41, 42]]
    ids, scores = fitted.recommend_arrays(user_items_matrix(fitted, rows), N=6)
    ranked = fitted.recommend(history_frame(), k=6)
    assert ids.shape == scores.shape == (3, 6)
    for row, user in enumerate((7, 8, 9)):
        mine = ranked[ranked.user_id == user]
        assert fitted.items.lookup(ids[row]).tolist() == mine.item_id.tolist()
        np.testing.assert_allclose(scores[row], mine.score.to_numpy(), rtol=1e-5, atol=1e-6)
        assert not set(ids[row]) & set(fitted.items.index(np.array(rows[row])))  # already liked: filtered


def test_recommend_arrays_items_and_filter_flags(fitted):
    matrix = user_items_matrix(fitted, [[0, 1, 2], []])  # an empty row: the meta-learned starting point
    pool = fitted.items.index(np.array([0, 5, 25, 45]))
    ids, scores = fitted.recommend_arrays(matrix, N=6, items=pool)
    assert set(ids[0][ids[0] >= 0]) == set(pool) - {fitted.items.index(np.array([0]))[0]}  # 0 is already liked
    assert ids[0, -1] == -1 and scores[0, -1] == -np.inf  # fewer than N left: padded at the end
    assert set(ids[1][:4]) == set(pool)
    kept, _ = fitted.recommend_arrays(matrix, N=3, filter_already_liked_items=False, items=pool)
    assert fitted.items.index(np.array([0]))[0] in kept[0]
    with pytest.raises(DataError, match="columns must follow rec.items"):
        fitted.recommend_arrays(sp.csr_matrix((1, 5)))
    with pytest.raises(DataError, match="CSR"):
        fitted.recommend_arrays(np.zeros((1, len(fitted.items))))


def test_recommend_arrays_leaves_the_callers_matrix_alone(fitted):
    matrix = sp.csr_matrix((np.ones(2, np.float32), np.array([3, 3]), np.array([0, 2])), shape=(1, len(fitted.items)))
    before = (matrix.data.copy(), matrix.indices.copy())
    fitted.recommend_arrays(matrix, N=2)
    assert np.array_equal(matrix.data, before[0]) and np.array_equal(matrix.indices, before[1])


def test_pandas_job_reranks_another_recommenders_candidates(fitted):
    # what a batch job does: the existing recommender proposes, recmaml re-ranks per user
    candidates = pd.DataFrame({"user_id": [7] * 4 + [8] * 4, "item_id": [45, 3, 25, 4, 5, 24, 44, 23]})
    ranked = fitted.recommend(history_frame(), k=2, candidates=candidates)
    for user, group in ((7, 0), (8, 1)):
        mine = ranked[ranked.user_id == user]
        assert set(mine.item_id) <= set(candidates[candidates.user_id == user].item_id)
        assert (mine.item_id // GROUP == group).all()
    assert ranked[ranked.user_id == 9].empty  # no candidates, no list


def test_evaluate_recommender_scores_planted_heldout_items(fitted):
    history = Interactions.from_ids(history_frame().user_id.to_numpy(), history_frame().item_id.to_numpy(),
                                    rating=history_frame().rating.to_numpy())
    good = Interactions.from_ids(np.array([7, 7, 8, 8, 10]), np.array([3, 4, 23, 24, 5]), rating=np.full(5, 5.0))
    bad = Interactions.from_ids(np.array([7, 7, 8, 8]), np.array([43, 44, 3, 4]), rating=np.full(4, 5.0))
    hit = evaluate_recommender(fitted, history, good, k=17)
    miss = evaluate_recommender(fitted, history, bad, k=17)
    assert hit["users"] == 2 and hit["skipped_users"] == 1  # user 10 has no history
    # a list of 17 holds every unseen item of the user's group (which of them come first is the planted
    # data's noise: EASE, which the serving priors weigh in, puts items 3 and 4 11th and 12th for user 7):
    # in-group held-out items are found, out-of-group ones hardly ever
    assert hit["recall@17"] >= 0.5 and miss["recall@17"] <= 0.25
    low = Interactions.from_ids(np.array([7, 7]), np.array([3, 4]), rating=np.array([1.0, 2.0]))
    assert evaluate_recommender(fitted, history, low, k=10)["users"] == 0  # nothing rated >= 4 is relevant


def test_score_gives_dense_or_chosen_columns_in_the_order_asked(fitted):
    dense = fitted.score(history_frame(), users=[9, 7])
    assert dense.shape == (2, len(fitted.items))
    chosen = fitted.score(history_frame(), users=[9, 7], items=[41, 0, 123456])
    assert chosen.shape == (2, 3) and np.isnan(chosen[:, 2]).all()  # an item the model does not know
    columns = fitted.items.index(np.array([41, 0]))
    np.testing.assert_allclose(chosen[:, :2], dense[:, columns])
    assert chosen[0, 0] > chosen[0, 1] and chosen[1, 1] > chosen[1, 0]  # each user's own group first


def test_write_ranked_lists_takes_what_recommend_returns_for_every_input_kind(fitted, tmp_path):
    from recmaml.connectors import RankedListsWriter, read_ranked_lists, write_ranked_lists

    pandas_out = fitted.recommend(history_frame(), k=5)
    reference = RankedLists.from_frame(pandas_out)
    for kind, ranked in (("pandas", pandas_out), ("polars", pl.from_pandas(pandas_out)), ("lists", reference)):
        write_ranked_lists(ranked, tmp_path / f"{kind}.parquet")
        assert read_ranked_lists(tmp_path / f"{kind}.parquet").equals(reference)
    with RankedListsWriter(tmp_path / "stream.csv") as out:
        out.write(pandas_out)
    assert read_ranked_lists(tmp_path / "stream.csv").equals(reference, score_tol=1e-5)
    with pytest.raises(DataError, match="missing"):
        write_ranked_lists(pandas_out.drop(columns="rank"), tmp_path / "bad.csv")


def test_the_api_and_serve_chunks_give_the_same_lists(fitted):
    from recmaml.serve import serve_chunks

    history = Interactions.from_ids(*(history_frame()[c].to_numpy() for c in ("user_id", "item_id")),
                                    rating=history_frame().rating.to_numpy())
    candidates = Interactions.from_ids(np.array([7, 7, 8, 99, 99]), np.array([41, 3, 25, 0, 59]))
    whole = fitted.recommend(history, k=2, candidates=candidates)
    parts = []
    one_user_each = [history.take(np.flatnonzero(history.user_ids() == u)) for u in (7, 8, 9)]
    assert serve_chunks(fitted, one_user_each, parts.append, k=2, candidates=candidates) == 4
    streamed = RankedLists.concat(parts)
    key = lambda r: sorted(zip(r.user_id.tolist(), r.item_id.tolist(), r.rank.tolist()))  # noqa: E731
    assert key(streamed) == key(whole)
    assert sorted(set(streamed.user_id.tolist())) == [7, 8, 99]  # 9 has no candidates; 99 has only candidates
    with pytest.raises(DataError, match="k must be a whole number"):
        fitted.recommend(history, k=2.5)


def test_the_column_keywords_an_error_names_are_accepted(fitted):
    renamed = history_frame().rename(columns={"user_id": "user", "item_id": "movieId"})
    with pytest.raises(DataError, match=r"pass user_col='user', item_col='movieId'") as err:
        fitted.recommend(renamed, k=5)
    assert "--" not in str(err.value)  # the API's spelling only
    cols = {"user_col": "user", "item_col": "movieId"}
    expected = fitted.recommend(history_frame(), k=5)
    got = fitted.recommend(renamed, k=5, **cols)
    assert RankedLists.from_frame(got).equals(RankedLists.from_frame(expected))
    pairs = pd.DataFrame({"user": [7, 8], "movieId": [3, 23]})
    assert list(fitted.predict(renamed, pairs, **cols).columns) == ["user", "movieId", "prediction"]
    assert fitted.score(renamed, items=[3, 23], **cols).shape == (3, 2)
    cands = pd.DataFrame({"user": [7, 7], "movieId": [3, 23]})
    assert sorted(fitted.recommend(renamed, k=5, candidates=cands, **cols).item_id) == [3, 23]


def test_a_history_of_another_id_kind_raises_unless_allowed(fitted):
    prefixed = history_frame().assign(item_id=lambda f: "m" + f.item_id.astype(str))
    for call in (lambda **kw: fitted.recommend(prefixed, k=5, **kw),
                 lambda **kw: fitted.predict(prefixed, [7], [3], **kw),
                 lambda **kw: fitted.score(prefixed, **kw)):
        with pytest.raises(DataError, match=r"none of its 9 rows .*'m0'.*prefix 'm'.*allow_unknown_items=True"):
            call()
        with pytest.warns(UserWarning, match="unknown to the model"):
            call(allow_unknown_items=True)


def test_k_beyond_the_catalog_warns_once(fitted):
    with pytest.warns(UserWarning, match=r"k 100000 is more than the model's") as caught:
        fitted.recommend(history_frame(), k=100_000)
    assert sum("more than the model's" in str(w.message) for w in caught) == 1
