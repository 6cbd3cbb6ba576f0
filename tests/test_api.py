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


# ---- the Python API as kind as the CLI -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def named(taste_log, tiny_config):
    """A model fitted on a frame with MovieLens' column names and its ratings in 'stars'."""
    frame = pd.DataFrame({"userId": taste_log.user_ids(), "movieId": taste_log.item_ids(), "stars": taste_log.rating})
    return MetaRecommender(tiny_config.replace(meta={"epochs": 2})).fit(
        frame, progress=False, user_col="userId", item_col="movieId", rating_col="stars")


def named_history():
    return history_frame().rename(columns={"user_id": "userId", "item_id": "movieId", "rating": "stars"})


def test_the_names_a_model_was_fitted_with_are_the_defaults_of_recommend_predict_and_score(named, tmp_path):
    cols = {"user_col": "userId", "item_col": "movieId", "rating_col": "stars"}
    expected = named.recommend(named_history(), k=5, **cols)
    assert RankedLists.from_frame(named.recommend(named_history(), k=5)).equals(RankedLists.from_frame(expected))
    pairs = pd.DataFrame({"userId": [7, 8], "movieId": [3, 23]})
    np.testing.assert_array_equal(named.predict(named_history(), pairs).prediction,
                                  named.predict(named_history(), pairs, **cols).prediction)
    np.testing.assert_array_equal(named.score(named_history()), named.score(named_history(), **cols))
    cands = pd.DataFrame({"userId": [7, 7], "movieId": [3, 23]})
    assert sorted(named.recommend(named_history(), k=5, candidates=cands).item_id) == [3, 23]
    # a remembered rating column is read where present, not required: these cold users show no stars
    assert len(named.recommend(named_history().drop(columns="stars"), k=5)) == 15
    named.save(tmp_path / "m")
    loaded = MetaRecommender.load(tmp_path / "m")
    assert RankedLists.from_frame(loaded.recommend(named_history(), k=5)).equals(RankedLists.from_frame(expected))
    # a keyword still wins, and a frame with other names gets the keyword to pass
    with pytest.raises(DataError, match=r"missing columns 'userId' for the user.*pass user_col='user_id', item_col='item_id'"):
        named.recommend(history_frame(), k=5)
    assert len(named.recommend(history_frame(), k=5, user_col="user_id", item_col="item_id")) == 15


def test_keep_names_gives_the_output_the_inputs_column_names(named, fitted):
    out = named.recommend(named_history(), k=3, keep_names=True)
    assert list(out.columns) == ["userId", "movieId", "score", "rank"]
    assert list(named.recommend(named_history(), k=3).columns) == ["user_id", "item_id", "score", "rank"]
    polars_out = named.recommend(pl.from_pandas(named_history()), k=3, keep_names=True)
    assert polars_out.columns == ["userId", "movieId", "score", "rank"]
    assert polars_out["movieId"].to_list() == out.movieId.tolist()
    renamed = history_frame().rename(columns={"user_id": "user"})
    assert list(fitted.recommend(renamed, k=3, user_col="user", keep_names=True).columns)[:2] == ["user", "item_id"]
    clash = history_frame().rename(columns={"user_id": "score"})
    with pytest.raises(DataError, match=r"cannot keep the column name 'score'.*leave out keep_names=True"):
        fitted.recommend(clash, k=3, user_col="score", keep_names=True)


def test_fit_shows_a_bar_by_default_on_a_terminal_and_nothing_in_a_log(taste_log, tiny_config, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    config = tiny_config.replace(meta={"epochs": 2})
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        MetaRecommender(config).fit(taste_log)
        assert ("meta-training" in stream.getvalue()) is shown, stream.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    MetaRecommender(config).fit(taste_log, progress=False)
    assert quiet.getvalue() == ""


def test_progress_auto_shows_a_bar_in_a_notebook_kernel(monkeypatch):
    import io
    import types

    from recmaml.progress import watched

    monkeypatch.setattr("sys.stderr", io.StringIO())  # a kernel's stderr is no terminal
    assert watched(None) is False
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(__import__("sys").modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert watched(None) is True
    console = types.SimpleNamespace(config={"TerminalIPythonApp": {}})
    monkeypatch.setitem(__import__("sys").modules, "IPython", types.SimpleNamespace(get_ipython=lambda: console))
    assert watched(None) is False
    assert watched(False) is False and watched(True) is True


def test_predict_on_a_ranking_model_says_relevance_scores_and_is_not_clipped(fitted):
    import copy

    import torch

    from recmaml import RelevanceScoresWarning

    rec = copy.deepcopy(fitted)
    assert rec.config.model.objective != "rating" and rec.rating_range == (1.0, 5.0)
    with torch.no_grad():
        rec.model.item_bias[rec.items.index(np.array([3, 23]))] += 100.0  # far above the warm log's 1-5 ratings
    with pytest.warns(RelevanceScoresWarning, match="relevance scores that order items, not ratings"):
        pred = rec.predict(history_frame(), [7, 8], [3, 23])
    assert pred.min() > 5.0  # a ranking model's scores are not ratings: nothing clips them


def _caught(call):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return caught


def test_every_warning_points_at_the_callers_line(fitted):
    unknown = history_frame().assign(item_id=[0, 1, 999, 20, 21, 22, 40, 41, 42])
    mostly_unknown = history_frame().assign(item_id=[0, 998, 999, 997, 996, 995, 994, 993, 992])
    duplicated = pd.concat([history_frame(), history_frame().head(2)])
    cands = pd.DataFrame({"user_id": [7], "item_id": [3]})
    calls = {
        "UnknownItemsWarning": lambda: fitted.recommend(unknown, k=5),
        "UnknownItemsWarning, via history_kind": lambda: fitted.recommend(unknown, k=5, history_kind="sample"),
        "UnknownItemsWarning, score": lambda: fitted.score(unknown),
        "ItemMismatchWarning": lambda: fitted.recommend(mostly_unknown, k=5),
        "DuplicateInteractionsWarning": lambda: fitted.recommend(duplicated, k=5),
        "k beyond the catalog": lambda: fitted.recommend(history_frame(), k=1000),
        "users without candidates": lambda: fitted.recommend(history_frame(), k=5, candidates=cands),
        "RelevanceScoresWarning": lambda: fitted.predict(history_frame(), [7], [3]),
        "recommend_user": lambda: fitted.recommend_user([0, 999], k=3, history_kind="first"),
    }
    for what, call in calls.items():
        caught = _caught(call)
        if what == "recommend_user":  # unknown ids are counted in its answer, never warned about
            assert not caught
            continue
        assert caught, what
        assert {(w.filename, w.lineno) for w in caught} == {(__file__, caught[0].lineno)}, (
            what, [(w.filename, w.lineno, str(w.message)[:60]) for w in caught])


def test_reading_a_file_with_duplicates_warns_at_the_readers_caller(tmp_path):
    from recmaml.connectors import read_interactions

    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id\n1,2\n1,2\n")
    caught = _caught(lambda: read_interactions(path))
    assert [w.filename for w in caught] == [__file__]


def test_results_serialise_to_json(fitted):
    import json

    ranking = fitted.recommend_user([0, 1, 2], k=3)
    as_dict = json.loads(json.dumps(ranking.to_dict()))
    assert as_dict == {"items": ranking.items.tolist(), "scores": ranking.scores.tolist(), "ranks": [1, 2, 3],
                       "unknown_items": 0}
    interactions = Interactions.from_ids(*(history_frame()[c].to_numpy() for c in ("user_id", "item_id")),
                                         rating=history_frame().rating.to_numpy())
    ranked = fitted.recommend(interactions, k=3)
    columns = json.loads(json.dumps(ranked.to_dict()))
    assert RankedLists(*(np.asarray(columns[c]) for c in RankedLists.COLUMNS)).equals(ranked)
    lists = json.loads(json.dumps(ranked.to_lists()))
    assert [u["user_id"] for u in lists] == [7, 8, 9] and all(u["ranks"] == [1, 2, 3] for u in lists)
    assert lists[0]["items"] == ranked.item_id[:3].tolist()
    history = json.loads(json.dumps(fitted.history.to_dict(), allow_nan=False))
    assert len(history["epochs"]) == len(fitted.history.epochs) and history["metric"] == "nDCG@20"
    assert history["summary"] == fitted.history.summary()


def test_repr_says_what_the_model_is_also_after_loading_and_for_old_models(fitted, tiny_config, tmp_path):
    import json
    import shutil

    assert repr(MetaRecommender(tiny_config)) == "MetaRecommender(not fitted, objective 'implicit')"
    text = repr(fitted)
    assert text.startswith("MetaRecommender(60 items, objective 'implicit', history kind 'first', fitted 20")
    assert text.endswith(f"on {fitted.training_users} users)") and 100 < fitted.training_users < 240  # less validation
    fitted.save(tmp_path / "m")
    assert repr(MetaRecommender.load(tmp_path / "m")) == text
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "m", old)
    meta = json.loads((old / "model.json").read_text())
    del meta["fitted_at"], meta["training_users"]
    (old / "model.json").write_text(json.dumps(meta))
    assert repr(MetaRecommender.load(old)).endswith("fitted (when not recorded))")
