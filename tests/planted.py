"""Planted data for tests: small logs whose answer a test can check."""

import numpy as np

from recmaml.data import Interactions


def taste_groups(n_users: int = 240, n_groups: int = 3, items_per_group: int = 20, per_user: int = 10,
                 seed: int = 0, with_ratings: bool = True) -> Interactions:
    """Users in taste groups: user u likes only items of group u % n_groups (rating 4-5) and gives a few
    items of the next group a low rating (1-2). Small and sharply planted: what a test can check."""
    gen = np.random.default_rng(seed)
    users, items, ratings = [], [], []
    for u in range(n_users):
        g = u % n_groups
        liked = gen.choice(np.arange(g * items_per_group, (g + 1) * items_per_group), size=per_user, replace=False)
        other = (g + 1) % n_groups
        disliked = gen.choice(np.arange(other * items_per_group, (other + 1) * items_per_group), size=2, replace=False)
        users += [u] * (per_user + 2)
        items += [*liked, *disliked]
        ratings += [*gen.integers(4, 6, per_user), *gen.integers(1, 3, 2)]
    n = len(users)
    return Interactions.from_ids(np.array(users), np.array(items),
                                 rating=np.array(ratings, dtype=np.float32) if with_ratings else None,
                                 timestamp=gen.permutation(n).astype(np.int64))


def twin_pairs(n_users: int = 400, n_pairs: int = 30, pairs_per_user: int = 4, seed: int = 0) -> Interactions:
    """Items come in twins (2p, 2p + 1) that every user shows together: user u picks `pairs_per_user` pairs
    at random and shows both items of each, nothing else. An item's only neighbour is its twin, so a cold
    user who shows one item of a pair must be recommended the other *because of* that item."""
    gen = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        pairs = gen.choice(n_pairs, size=pairs_per_user, replace=False)
        users += [u] * (2 * pairs_per_user)
        items += [i for p in pairs for i in (2 * p, 2 * p + 1)]
    n = len(users)
    return Interactions.from_ids(np.array(users), np.array(items), timestamp=gen.permutation(n).astype(np.int64))
