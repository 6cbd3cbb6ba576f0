"""Baselines on planted data: taste groups a cold user's support reveals, known popularity, known means."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_taste_groups

from recmaml.baselines import EASE, ALSFoldIn, ItemMean, Popularity
from recmaml.data import Interactions

N_GROUPS, PER_GROUP = 3, 20


@pytest.fixture(scope="module")
def warm():
    return make_taste_groups(n_users=240, n_groups=N_GROUPS, items_per_group=PER_GROUP, per_user=10, seed=0)


def _cold_support(warm: Interactions):
    """Three cold users, one per group, each showing 3 liked items of its group (warm item indices)."""
    items = warm.items.index(np.array([0, 1, 2, 20, 21, 22, 40, 41, 42]))
    users = np.repeat(np.arange(3), 3)
    return users, items, 3, np.full(9, 5.0, np.float32)


def _group_of_items(warm: Interactions) -> np.ndarray:
    return warm.items.ids // PER_GROUP


@pytest.mark.parametrize("model", [EASE(lam=10.0), ALSFoldIn(factors=8, regularization=0.1, iterations=10)],
                         ids=["ease", "als"])
def test_cold_user_gets_its_group(warm, model):
    support = _cold_support(warm)
    scores = model.fit(warm).score(*support)
    assert scores.shape == (3, warm.n_items)
    scores[support[0], support[1]] = -np.inf  # rank only unseen items
    top5 = np.argsort(-scores, axis=1)[:, :5]
    groups = _group_of_items(warm)[top5]
    for user in range(3):
        assert (groups[user] == user).sum() >= 4, f"user {user} (group {user}) got groups {groups[user]}"


def test_als_batched_fold_in_equals_one_by_one(warm):
    model = ALSFoldIn(factors=8, iterations=5).fit(warm)
    users, items, n, ratings = _cold_support(warm)
    batched = model.score(users, items, n, ratings)
    for u in range(n):
        rows = users == u
        single = model.score(np.zeros(rows.sum(), int), items[rows], 1, ratings[rows])
        np.testing.assert_allclose(single[0], batched[u], rtol=1e-4, atol=1e-4)


def test_ease_has_zero_diagonal_and_matches_closed_form():
    log = Interactions.from_ids([0, 0, 1, 1, 2], [0, 1, 1, 2, 2])
    model = EASE(lam=1.0).fit(log)
    X = log.to_csr().toarray().astype(np.float64)
    P = np.linalg.inv(X.T @ X + np.eye(3))
    expected = np.eye(3) - P / np.diag(P)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.B, expected, atol=1e-5)
    np.testing.assert_allclose(model.score([0], [0], 1), expected[[0]], atol=1e-5)


def test_popularity_counts_and_threshold():
    # item 2 is seen most, but item 1 is liked (>= 4) most
    log = Interactions.from_ids([0, 1, 2, 0, 1, 3], [2, 2, 2, 1, 1, 0], rating=[1, 2, 1, 5, 4, 5])
    all_counts = Popularity().fit(log).score([], [], 2)
    assert all_counts.shape == (2, 3)
    np.testing.assert_array_equal(all_counts[0], [1, 2, 3])
    liked = Popularity(threshold=4.0).fit(log).score([], [], 1)
    np.testing.assert_array_equal(liked[0], [1, 2, 0])
    assert np.argmax(liked[0]) == 1


def test_item_mean_with_damping_and_user_offset():
    # item 0: ratings 4, 2 (mean 3); item 1: rating 5; global mean (4 + 2 + 5) / 3 = 11/3
    log = Interactions.from_ids([0, 1, 0], [0, 0, 1], rating=[4.0, 2.0, 5.0])
    plain = ItemMean(damping=0.0).fit(log)
    np.testing.assert_allclose(plain.item_mean, [3.0, 5.0])
    damped = ItemMean(damping=1.0).fit(log)
    np.testing.assert_allclose(damped.item_mean, [(6 + 11 / 3) / 3, (5 + 11 / 3) / 2])
    # cold user 0 rated item 0 a 4 (offset +1), cold user 1 shows nothing (offset 0)
    scores = plain.score([0], [0], 2, [4.0])
    np.testing.assert_allclose(scores, [[4.0, 6.0], [3.0, 5.0]])
    shrunk = ItemMean(damping=0.0, user_damping=1.0).fit(log).score([0], [0], 1, [4.0])
    np.testing.assert_allclose(shrunk, [[3.5, 5.5]])
    # without ratings the scores are the item means: the item-mean ranking
    np.testing.assert_allclose(plain.score([0], [0], 1), [[3.0, 5.0]])
