"""Cold-start protocols: user-disjoint splits of the right sizes, and metrics on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_taste_groups

from recmaml.baselines import EASE
from recmaml.data import Interactions
from recmaml.errors import DataError
from recmaml.protocol import (
    cold_split, evaluate_ranking, evaluate_ratings, melu_split, query_ndcg, support_arrays, top_k_items,
    tune_baseline,
)


@pytest.fixture(scope="module")
def log():
    return make_taste_groups(n_users=100, per_user=10, seed=1)  # 12 rows per user


def _pairs(inter: Interactions) -> set[tuple]:
    return set(zip(inter.user_ids().tolist(), inter.item_ids().tolist()))


@pytest.mark.parametrize("order", ["random", "temporal"])
def test_cold_split_is_user_disjoint_and_reveals_n_support(log, order):
    split = cold_split(log, cold_fraction=0.2, n_support=5, order=order, seed=3)
    warm_users, cold_users = set(split.warm.users.ids), set(split.cold_support.users.ids)
    assert not warm_users & cold_users
    assert len(cold_users) == 20 and len(warm_users) == 80
    assert split.cold_query.users == split.cold_support.users
    assert split.warm.items == log.items and split.cold_support.items == log.items
    np.testing.assert_array_equal(np.bincount(split.cold_support.user_idx, minlength=20), 5)
    np.testing.assert_array_equal(np.bincount(split.cold_query.user_idx, minlength=20), 7)
    # nothing lost or duplicated
    assert len(split.warm) + len(split.cold_support) + len(split.cold_query) == len(log)
    assert _pairs(split.warm) | _pairs(split.cold_support) | _pairs(split.cold_query) == _pairs(log)


def test_temporal_support_is_each_users_earliest(log):
    split = cold_split(log, n_support=5, order="temporal", seed=0)
    s, q = split.cold_support, split.cold_query
    last_support = np.full(s.n_users, -np.inf)
    np.maximum.at(last_support, s.user_idx, s.timestamp)
    first_query = np.full(q.n_users, np.inf)
    np.minimum.at(first_query, q.user_idx, q.timestamp)
    assert np.all(last_support < first_query)


def test_cold_users_need_more_than_n_support_rows():
    log = Interactions.from_ids([0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 1, 0, 1, 2, 3])
    split = cold_split(log, cold_fraction=0.5, n_support=2, seed=0)
    assert set(split.cold_support.users.ids) <= {0, 2}  # user 1 has only 2 rows
    with pytest.raises(DataError):
        cold_split(log, cold_fraction=0.2, n_support=2, order="temporal")  # no timestamps


def test_validation_split_from_warm_users(log):
    split = cold_split(log, seed=0)
    val = cold_split(split.warm, seed=1)
    assert set(val.warm.users.ids) | set(val.cold_support.users.ids) == set(split.warm.users.ids)
    assert not set(val.cold_support.users.ids) & set(split.cold_support.users.ids)


def test_melu_split_sizes():
    gen = np.random.default_rng(0)
    sizes = np.array([5, 12, 13, 40, 100, 101] * 10)  # only 13, 40, 100 are in range
    users = np.repeat(np.arange(len(sizes)), sizes)
    items = np.concatenate([gen.choice(200, n, replace=False) for n in sizes])
    log = Interactions.from_ids(users, items, rating=gen.integers(1, 6, len(users)))
    split = melu_split(log, cold_fraction=0.2, seed=0)
    kept = {u for u in range(len(sizes)) if 13 <= sizes[u] <= 100}
    assert set(split.warm.users.ids) | set(split.cold_support.users.ids) == kept
    assert split.n_cold == 6
    np.testing.assert_array_equal(np.bincount(split.cold_query.user_idx, minlength=6), 10)
    np.testing.assert_array_equal(np.bincount(split.cold_support.user_idx, minlength=6),
                                  sizes[split.cold_support.users.ids] - 10)


def test_evaluate_ranking_excludes_support_and_known_ndcg():
    items_vocab = Interactions.from_ids(np.zeros(5, int), np.arange(5)).items
    support = Interactions.from_ids([0], [0], rating=[5.0], items=items_vocab)
    # relevant: items 2 (rated 5) and 4 (rated 4); item 3 rated 2 is not relevant
    query = Interactions.from_ids([0, 0, 0], [2, 3, 4], rating=[5.0, 2.0, 4.0], items=items_vocab)
    scores = np.array([[10.0, 5.0, 4.0, 3.0, 1.0]])  # support item 0 would be first; it is excluded
    out = evaluate_ranking(scores, support, query, k=3)
    # ranking without item 0: 1, 2, 3 -> one hit at rank 2; ideal: two hits at ranks 1, 2
    expected = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert out["ndcg@3"] == pytest.approx(expected)
    assert out["recall@3"] == pytest.approx(0.5)
    assert out["users"] == 1
    assert 0 not in top_k_items(np.where(np.arange(5) == 0, -np.inf, scores), 3)[0]


def test_query_ndcg_and_rating_errors():
    items = Interactions.from_ids(np.zeros(3, int), np.arange(3)).items
    query = Interactions.from_ids([0, 0, 0], [0, 1, 2], rating=[1.0, 5.0, 3.0], items=items)
    perfect = query_ndcg(np.array([1.0, 5.0, 3.0]), query, k=3)
    assert perfect == pytest.approx(1.0)
    worst = query_ndcg(np.array([5.0, 1.0, 3.0]), query, k=3)
    gains = np.array([2**1 - 1, 2**3 - 1, 2**5 - 1]) / np.log2([2, 3, 4])
    ideal = np.array([2**5 - 1, 2**3 - 1, 2**1 - 1]) / np.log2([2, 3, 4])
    assert worst == pytest.approx(gains.sum() / ideal.sum())
    assert evaluate_ratings([1.0, 3.0], [2.0, 5.0]) == pytest.approx({"mae": 1.5, "rmse": np.sqrt(2.5)})


def test_tune_baseline_picks_from_grid(log):
    val = cold_split(log, seed=0)
    best, value, results = tune_baseline(EASE, {"lam": [1.0, 10.0]}, val)
    # the grid's two points, then steps past whichever end holds the optimum (at most 3 there)
    assert [r[0] for r in results[:2]] == [{"lam": 1.0}, {"lam": 10.0}] and 2 <= len(results) <= 5
    assert best in [r[0] for r in results]
    assert value == max(r[1] for r in results)
    scores = EASE(**best).fit(val.warm).score(*support_arrays(val.cold_support))
    assert scores.shape == (val.n_cold, log.n_items)
