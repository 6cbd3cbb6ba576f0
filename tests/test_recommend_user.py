"""The fast path for one user (MetaRecommender.recommend_user, serve.rank_histories) gives the lists and
scores of the batch path (recommend on a frame), whatever the batch it is served in: to the promise of
tests/rankings.py (scores within 1e-6 of the largest, near ties free to swap), which holds on any CPU."""

import numpy as np
import pandas as pd
import pytest

from recmaml import DataError, MetaRecommender
from recmaml.cold import UserHistory
from recmaml.serve import rank_histories, score_histories
from rankings import assert_close_scores, assert_same_ranking


@pytest.fixture(scope="module")
def fitted(tiny_model_dir):
    return MetaRecommender.load(tiny_model_dir)


@pytest.fixture(scope="module")
def cold_frame(taste_log):
    """Five rows each of twelve users, as a job's frame: string user ids, the log's item ids."""
    frame = pd.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.items.lookup(taste_log.item_idx),
                          "rating": taste_log.rating, "timestamp": taste_log.timestamp})
    rows = frame.groupby("user_id").head(5)
    rows = rows[rows.user_id.isin(frame.user_id.unique()[:12])]
    return rows.assign(user_id="u" + rows.user_id.astype(str)).reset_index(drop=True)


def _history(rows: pd.DataFrame, candidates=None) -> UserHistory:
    return UserHistory(rows.item_id.to_numpy(), rows.rating.to_numpy(), rows.timestamp.to_numpy(), candidates)


def test_one_user_gets_the_batch_paths_list_and_scores(fitted, cold_frame):
    batch = fitted.recommend(cold_frame, k=10)
    assert fitted.serving_scorer is not None and fitted.priors is not None  # the priors' terms are served too
    for user, rows in cold_frame.groupby("user_id"):
        one = fitted.recommend_user(rows.item_id.to_numpy(), rows.rating.to_numpy(), rows.timestamp.to_numpy(), k=10)
        expected = batch[batch.user_id == user].sort_values("rank")
        assert_same_ranking(one.items, one.scores, expected.item_id, expected.score)
        assert one.unknown_items == 0


def test_many_users_in_one_call_get_what_each_gets_alone(fitted, cold_frame):
    groups = [rows for _, rows in cold_frame.groupby("user_id")]
    together = rank_histories(fitted, [_history(rows) for rows in groups], k=7)
    for rows, ranking in zip(groups, together):
        alone = rank_histories(fitted, [_history(rows)], k=7)[0]
        assert_same_ranking(ranking.items, ranking.scores, alone.items, alone.scores)


def test_candidates_and_seen_items_as_the_batch_path(fitted, cold_frame):
    user, rows = next(iter(cold_frame.groupby("user_id")))
    candidates = np.r_[rows.item_id.to_numpy()[:2], np.arange(20, 30)]  # two seen items among them
    cand_frame = pd.DataFrame({"user_id": user, "item_id": candidates})
    for exclude_seen in (True, False):
        batch = fitted.recommend(rows, k=5, candidates=cand_frame, exclude_seen=exclude_seen)
        one = fitted.recommend_user(rows.item_id.to_numpy(), rows.rating.to_numpy(), rows.timestamp.to_numpy(), k=5,
                                    candidates=candidates, exclude_seen=exclude_seen)
        batch = batch.sort_values("rank")
        assert_same_ranking(one.items, one.scores, batch.item_id, batch.score)
    assert set(one.items) <= set(candidates)


def test_unknown_items_are_ignored_and_counted(fitted, cold_frame):
    _, rows = next(iter(cold_frame.groupby("user_id")))
    known = fitted.recommend_user(rows.item_id.to_numpy(), rows.rating.to_numpy(), rows.timestamp.to_numpy())
    more = fitted.recommend_user(np.r_[rows.item_id.to_numpy(), 10**9, 10**9 + 1], np.r_[rows.rating.to_numpy(), 5, 5],
                                 np.r_[rows.timestamp.to_numpy(), 0, 0])
    assert more.unknown_items == 2 and known.unknown_items == 0
    assert more.items.tolist() == known.items.tolist()
    nothing = fitted.recommend_user([], k=3)  # no history: the meta-learned start
    assert len(nothing.items) == 3 and nothing.unknown_items == 0


def test_pair_scores_are_predicts(fitted, cold_frame):
    user, rows = next(iter(cold_frame.groupby("user_id")))
    items = np.array([0, 5, 33, 10**9])
    expected = fitted.predict(rows, np.full(len(items), user), items)
    (scores,) = score_histories(fitted, [_history(rows, candidates=items)])
    assert_close_scores(scores, expected)
    assert np.isnan(scores[-1])


def test_mismatched_lengths_name_the_field(fitted):
    with pytest.raises(DataError, match=r"users\[0\]\.ratings: 1 ratings for 2 items"):
        fitted.recommend_user([1, 2], [5.0])
    with pytest.raises(DataError, match=r"users\[0\]\.timestamps"):
        fitted.recommend_user([1, 2], timestamps=[1])
    with pytest.raises(DataError, match="does not fit in 64 bits"):
        fitted.recommend_user([2**64, 5])


def test_an_item_named_twice_counts_once_as_in_a_log(fitted, cold_frame):
    user, rows = next(iter(cold_frame.groupby("user_id")))
    again = rows.iloc[[0]].assign(rating=1.0, timestamp=rows.timestamp.max() + 1)  # the later row: a dislike
    twice = pd.concat([rows, again])
    with pytest.warns(UserWarning, match="duplicated"):
        batch = fitted.recommend(twice, k=10).sort_values("rank")
    one = fitted.recommend_user(twice.item_id.to_numpy(), twice.rating.to_numpy(), twice.timestamp.to_numpy(), k=10)
    assert_same_ranking(one.items, one.scores, batch.item_id, batch.score)


def test_indices_in_and_out_as_implicit(fitted, cold_frame):
    _, rows = next(iter(cold_frame.groupby("user_id")))
    by_id = fitted.recommend_user(rows.item_id.to_numpy(), rows.rating.to_numpy(), rows.timestamp.to_numpy(), k=6,
                                  candidates=np.arange(20, 40))
    positions = fitted.items.index(rows.item_id.to_numpy())
    by_index = fitted.recommend_user(positions, rows.rating.to_numpy(), rows.timestamp.to_numpy(), k=6,
                                     candidates=fitted.items.index(np.arange(20, 40)), by_index=True)
    assert fitted.items.ids[by_index.items].tolist() == by_id.items.tolist()
    np.testing.assert_array_equal(by_index.scores, by_id.scores)
    with pytest.raises(DataError, match=r"items: with by_index=True"):
        fitted.recommend_user([len(fitted.items)], by_index=True)


def test_an_arrival_time_that_is_not_finite_is_refused(tiny_model_dir):
    rec = MetaRecommender.load(tiny_model_dir)
    for at in ("nan", "inf", float("nan"), float("-inf")):
        with pytest.raises(DataError, match=r"at= .* is not a time; give finite Unix seconds"):
            rec.recommend_user([1, 2], k=3, at=at)
