"""recmaml.heldout: a fitted model's metrics on held-out rows, every user accounted for, per user on request,
and the kind of history the rows show."""

import numpy as np
import pytest

from recmaml import Interactions, MetaRecommender
from recmaml.heldout import evaluate_recommender, evaluate_users, history_kind_shown


@pytest.fixture(scope="module")
def fitted(tiny_model_dir):
    return MetaRecommender.load(tiny_model_dir)


def rows(users, items, ratings=None, times=None) -> Interactions:
    return Interactions.from_ids(np.array(users), np.array(items),
                                 rating=None if ratings is None else np.array(ratings, np.float32),
                                 timestamp=None if times is None else np.array(times, np.int64))


# users 7, 8, 9 show three items of taste group 0, 1, 2 (tests/planted.taste_groups: 20 items a group)
HISTORY = rows([7, 7, 7, 8, 8, 8, 9, 9, 9], [0, 1, 2, 20, 21, 22, 40, 41, 42], [5.0] * 9)


def four_kinds_of_user() -> Interactions:
    """Held-out rows: 7 has relevant ones; 8 only ratings below 4; 9 none; 10 some but no history."""
    return rows([7, 7, 8, 8, 10], [3, 4, 23, 24, 5], [5.0, 4.0, 2.0, 1.0, 5.0])


def test_users_without_a_relevant_or_any_heldout_row_are_counted(fitted):
    heldout = four_kinds_of_user()
    summary = evaluate_recommender(fitted, HISTORY, heldout, k=10)
    assert (summary["users"], summary["users_without_relevant"], summary["users_without_heldout"],
            summary["skipped_users"]) == (1, 1, 1, 1)
    # the counts add up to the history's users: none is dropped uncounted
    assert summary["users"] + summary["users_without_relevant"] + summary["users_without_heldout"] == 3


def test_per_user_rows_cover_every_history_user_and_average_to_the_summary(fitted):
    heldout = four_kinds_of_user()
    result = evaluate_users(fitted, HISTORY, heldout, k=10)
    frame = result.per_user().sort("user_id")
    assert frame["user_id"].to_list() == [7, 8, 9]
    assert frame.columns[:3] == ["user_id", "heldout", "relevant"] and "ndcg@10" in frame.columns
    assert frame["heldout"].to_list() == [2, 2, 0] and frame["relevant"].to_list() == [2, 0, 0]
    assert frame["ndcg@10"].null_count() == 2  # 8 and 9 have nothing relevant to find: null, not 0
    summary = result.summary()
    for metric in ("ndcg@10", "recall@10", "hit@10", "mrr@10"):
        assert frame[metric].mean() == pytest.approx(summary[metric])


def test_rating_models_get_per_user_errors(fitted):
    rating = fitted.with_serving()  # a shallow copy whose config says it is a rating model
    rating.config = rating.config.replace(model={"objective": "rating"})
    heldout = rows([7, 7, 8], [3, 4, 23], [5.0, 3.0, 2.0])
    result = evaluate_users(rating, HISTORY, heldout, k=10)
    frame = result.per_user().sort("user_id")
    summary = result.summary()
    assert summary["rated_pairs"] == 3 and frame["mae"][2] is None  # user 9 has no held-out rating
    pred = rating.predict(HISTORY, heldout.user_ids(), heldout.item_ids())
    errors = np.abs(pred - heldout.rating)
    assert frame["mae"].to_list()[:2] == pytest.approx([errors[:2].mean(), errors[2]])
    assert summary["mae"] == pytest.approx(errors.mean())


@pytest.mark.parametrize("history_times, heldout_times, kind", [
    ([1, 2, 3, 1, 2, 3, 5, 6, 7], [4, 5, 3, 9], "first"),  # every history row no later than its user's held-out
    ([1, 2, 3, 1, 2, 9, 5, 6, 7], [4, 5, 3, 9], "sample"),  # user 8 shows a row after its held-out one
])
def test_the_history_kind_is_read_from_the_timestamps(history_times, heldout_times, kind):
    history = rows(HISTORY.user_ids(), HISTORY.item_ids(), times=history_times)
    heldout = rows([7, 7, 8, 10], [3, 4, 23, 5], times=heldout_times)  # user 10: no history, not compared
    assert history_kind_shown(history, heldout) == kind


def test_without_timestamps_or_shared_users_the_rows_cannot_tell():
    timed = rows([7, 7], [0, 1], times=[1, 2])
    assert history_kind_shown(HISTORY, rows([7], [3], times=[5])) is None
    assert history_kind_shown(timed, rows([7], [3])) is None
    assert history_kind_shown(timed, rows([8], [3], times=[0])) is None
