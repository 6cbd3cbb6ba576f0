"""Baselines on planted data: taste groups a cold user's support reveals, known popularity, known means."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_taste_groups

from recmaml.baselines import EASE, ALSFoldIn, ItemKNN, ItemMean, MultVAE, Popularity, _random_subsets
from recmaml.data import Interactions

N_GROUPS, PER_GROUP = 3, 20


@pytest.fixture(scope="module")
def warm():
    return make_taste_groups(n_users=240, n_groups=N_GROUPS, items_per_group=PER_GROUP, per_user=10, seed=0)


def _cold_support(warm: Interactions, per_user: int = 3):
    """Three cold users, one per group, each showing `per_user` liked items of its group (warm item
    indices)."""
    items = warm.items.index(np.array([g * PER_GROUP + i for g in range(N_GROUPS) for i in range(per_user)]))
    users = np.repeat(np.arange(N_GROUPS), per_user)
    return users, items, N_GROUPS, np.full(len(items), 5.0, np.float32)


def _small_vae(**kwargs) -> MultVAE:
    """A Mult-VAE small enough for the planted log: 50 updates, well under the time budget."""
    params = dict(hidden=128, latent=16, dropout=0.2, epochs=10, batch_size=48, max_seconds=60.0, seed=0)
    return MultVAE(**{**params, **kwargs})


def _assert_groups_first(warm: Interactions, scores: np.ndarray, support) -> None:
    """Most of each cold user's top 5 unseen items come from its own group."""
    scores = scores.copy()
    scores[support[0], support[1]] = -np.inf  # rank only unseen items
    groups = _group_of_items(warm)[np.argsort(-scores, axis=1)[:, :5]]
    for user in range(N_GROUPS):
        assert (groups[user] == user).sum() >= 4, f"user {user} (group {user}) got groups {groups[user]}"


def _group_of_items(warm: Interactions) -> np.ndarray:
    return warm.items.ids // PER_GROUP


@pytest.mark.parametrize("model", [EASE(lam=10.0), ALSFoldIn(factors=8, regularization=0.1, iterations=10),
                                   ItemKNN(neighbors=20), _small_vae()],
                         ids=["ease", "als", "item_knn", "mult_vae"])
def test_cold_user_gets_its_group(warm, model):
    support = _cold_support(warm)
    scores = model.fit(warm).score(*support)
    assert scores.shape == (3, warm.n_items)
    assert scores.dtype == np.float32
    _assert_groups_first(warm, scores, support)


@pytest.mark.parametrize("model", [ItemKNN(neighbors=20, shrink=2.0), _small_vae()], ids=["item_knn", "mult_vae"])
def test_two_support_items_reveal_the_group(warm, model):
    support = _cold_support(warm, per_user=2)
    scores = model.fit(warm).score(*support)
    assert scores.shape == (3, warm.n_items)
    _assert_groups_first(warm, scores, support)


def test_new_baselines_are_registered():
    """The benchmark's registry (recmaml.benchmark.SYSTEMS) is where a baseline is run and reported."""
    from recmaml.benchmark import SYSTEMS

    for name in ("item_knn", "mult_vae", "ease", "als", "recent_popularity"):
        assert SYSTEMS[name].family == "baseline", name


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


def test_item_mean_without_user_offset_is_the_item_mean():
    log = Interactions.from_ids([0, 1, 0], [0, 0, 1], rating=[4.0, 2.0, 5.0])
    model = ItemMean(damping=1.0, user_offset=False).fit(log)
    scores = model.score([0, 0], [0, 1], 2, [5.0, 5.0])  # a generous user: no offset all the same
    np.testing.assert_allclose(scores, np.tile(model.item_mean, (2, 1)), rtol=1e-6)
    assert scores.dtype == np.float32
    with_offset = ItemMean(damping=1.0).fit(log).score([0, 0], [0, 1], 2, [5.0, 5.0])
    assert (with_offset[0] > scores[0]).all()


# ---------------------------------------------------------------------------------------------- ItemKNN


def test_item_knn_keeps_the_top_cosine_neighbours():
    gen = np.random.default_rng(1)
    X = (gen.random((40, 12)) < 0.3).astype(np.float64)
    users, items = np.nonzero(X)
    log = Interactions.from_ids(users, items)
    X = log.to_csr().toarray().astype(np.float64)  # in the log's index order
    shrink, k = 1.5, 3
    norms = np.sqrt(X.sum(axis=0))
    cosine = (X.T @ X) / (norms[:, None] * norms[None, :] + shrink)
    np.fill_diagonal(cosine, 0.0)
    W = ItemKNN(neighbors=k, shrink=shrink).fit(log).W.toarray()
    assert np.all(np.diag(W) == 0)
    assert ((W != 0).sum(axis=1) <= k).all()
    for i in range(X.shape[1]):
        kept = np.flatnonzero(W[i])
        np.testing.assert_allclose(W[i, kept], cosine[i, kept], rtol=1e-5)
        # every kept neighbour is at least as similar as every dropped one
        dropped = np.setdiff1d(np.flatnonzero(cosine[i] > 0), kept)
        if len(kept) and len(dropped):
            assert W[i, kept].min() >= cosine[i, dropped].max() - 1e-6
    # a cold user's score is the sum of its support items' similarity rows
    np.testing.assert_allclose(ItemKNN(neighbors=k, shrink=shrink).fit(log).score([0, 0], [2, 5], 1)[0],
                               W[2] + W[5], rtol=1e-5)


def test_item_knn_threshold_filters_warm_log_and_support():
    # items 0 and 1 are liked together; items 0 and 2 only co-occur in low ratings
    log = Interactions.from_ids([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 2], rating=[5, 5, 4, 5, 1, 1])
    model = ItemKNN(threshold=4.0).fit(log)
    scores = model.score([0], [0], 1, [5.0])
    assert scores[0, 1] > 0 and scores[0, 2] == 0
    assert not model.score([0], [0], 1, [1.0]).any()  # a disliked support item says nothing
    assert ItemKNN().fit(log).score([0], [0], 1)[0, 2] > 0  # without a threshold the dislike counts


@pytest.mark.parametrize("model", [lambda **p: ItemKNN(**p), lambda **p: EASE(lam=1.0, **p)],
                         ids=["item_knn", "ease"])
def test_the_history_rows_read_are_a_choice_apart_from_the_warm_logs(model):
    # every warm row counts (item 0 and item 2 co-occur); the history's row on item 0 is rated 1
    log = Interactions.from_ids([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 2], rating=[5, 5, 4, 5, 1, 1])
    history = ([0], [0], 1, [1.0])
    assert model().fit(log).score(*history)[0, 2] > 0  # the same rows as the warm log's: every row
    assert not model(support_threshold=4.0).fit(log).score(*history).any()  # liked history rows only
    liked_warm = model(threshold=4.0, support_threshold=None).fit(log)  # warm: liked rows; history: every row
    assert liked_warm.score(*history)[0, 1] > 0 and liked_warm.score(*history)[0, 2] == 0
    assert not model(threshold=4.0).fit(log).score(*history).any()  # by default the history reads as the warm log


def test_item_knn_rejects_bad_parameters():
    with pytest.raises(ValueError, match="neighbors"):
        ItemKNN(neighbors=0)
    with pytest.raises(ValueError, match="shrink"):
        ItemKNN(shrink=-1.0)


# ---------------------------------------------------------------------------------------------- MultVAE


def test_mult_vae_is_deterministic_under_a_seed(warm):
    support = _cold_support(warm)
    first = _small_vae(epochs=2).fit(warm).score(*support)
    second = _small_vae(epochs=2).fit(warm).score(*support)
    np.testing.assert_array_equal(first, second)
    other = _small_vae(epochs=2, seed=1).fit(warm).score(*support)
    assert not np.allclose(first, other)


def test_mult_vae_stops_at_its_time_budget(warm):
    model = _small_vae(epochs=100_000, batch_size=16, max_seconds=0.05).fit(warm)
    assert 1 <= model.epochs_run < 100_000
    assert model.steps_run >= 1
    assert model.train_seconds < 5.0
    assert model.score(*_cold_support(warm)).shape == (3, warm.n_items)
    full = _small_vae(epochs=2, batch_size=48).fit(warm)
    assert full.epochs_run == 2 and full.steps_run == 10  # 240 users in batches of 48


def test_mult_vae_stops_early_keeping_the_best_weights(warm):
    support = _cold_support(warm)
    peak = 4  # the validation value rises for 4 checks, then falls

    def validate(model):
        return -abs(len(model.curve) + 1 - peak)

    model = _small_vae(epochs=1000, batch_size=48, patience=3).fit(warm, validate=validate)  # 5 updates an epoch
    checks_every = -(-MultVAE.CHECK_STEPS // 5)  # epochs per check
    assert model.stopped_by == "patience" and len(model.curve) == peak + 3
    assert model.best_epochs == peak * checks_every and model.epochs_run == (peak + 3) * checks_every
    assert [e for e, _ in model.curve] == [checks_every * (i + 1) for i in range(peak + 3)]
    # the weights kept are the best check's: a fit of that many epochs under the same seed gives the same scores
    again = _small_vae(epochs=model.best_epochs, batch_size=48).fit(warm)
    np.testing.assert_array_equal(model.score(*support), again.score(*support))
    assert again.best_epochs == model.best_epochs and again.stopped_by == "epochs"


def test_mult_vae_inputs_are_small_subsets_of_each_user():
    gen = np.random.default_rng(0)
    log = make_taste_groups(n_users=30, per_user=10, seed=1)
    X = log.to_csr()
    X.data[:] = 1.0
    for _ in range(5):
        subsets = _random_subsets(X, 2, 4, gen)
        sizes = np.diff(subsets.indptr)
        assert ((sizes >= 2) & (sizes <= 4)).all()
        assert ((subsets - X) > 0).nnz == 0  # only the user's own items
    # a user with fewer items than the lower bound keeps them all; one item is fine
    one = Interactions.from_ids([0, 1, 1], [0, 0, 1]).to_csr()
    np.testing.assert_array_equal(np.diff(_random_subsets(one, 3, 5, gen).indptr), [1, 2])


def test_mult_vae_rejects_bad_parameters():
    for kwargs, name in [({"latent": 0}, "latent"), ({"hidden": 0}, "hidden"), ({"dropout": 1.0}, "dropout"),
                         ({"dropout": -0.1}, "dropout"), ({"beta": -1.0}, "beta"), ({"epochs": 0}, "epochs"),
                         ({"batch_size": 0}, "batch_size"), ({"max_seconds": 0.0}, "max_seconds"),
                         ({"anneal_steps": -1}, "anneal_steps"), ({"input_items": (0, 3)}, "input_items"),
                         ({"input_items": (5, 2)}, "input_items"), ({"input_items": 3}, "input_items")]:
        with pytest.raises(ValueError, match=name):
            MultVAE(**kwargs)


# ---------------------------------------------------------------------------------------------- EASE


def _with_rare_items(warm: Interactions) -> Interactions:
    """The planted log plus 10 rare items (ids 1000..1009), item 1000 + j seen by j + 1 users."""
    users, items = [warm.user_ids()], [warm.item_ids()]
    for j in range(10):
        users.append(np.arange(j + 1) * 7)
        items.append(np.full(j + 1, 1000 + j))
    n_extra = sum(len(u) for u in users[1:])
    rating = np.concatenate([warm.rating, np.full(n_extra, 5.0, np.float32)])
    return Interactions.from_ids(np.concatenate(users), np.concatenate(items), rating=rating)


def test_ease_on_the_most_frequent_items_ranks_dropped_items_last(warm):
    log = _with_rare_items(warm)
    n_group_items = N_GROUPS * PER_GROUP
    model = EASE(lam=10.0, max_items=n_group_items).fit(log)
    assert model.B.shape == (n_group_items, n_group_items)
    np.testing.assert_array_equal(np.sort(log.items.ids[model.items]), np.arange(n_group_items))
    support = _cold_support(log)
    # a support row on a dropped item is ignored, not an error
    support = (np.append(support[0], 0), np.append(support[1], log.items.index(np.array([1009]))), support[2],
               np.append(support[3], 5.0))
    scores = model.score(*support)
    assert scores.shape == (3, log.n_items)
    assert np.isfinite(scores).all()
    dropped = log.items.ids >= 1000
    assert (scores[:, dropped].max(axis=1) < scores[:, ~dropped].min(axis=1)).all()
    # among the dropped, the more popular first
    order = np.argsort(-scores[0, dropped])
    np.testing.assert_array_equal(log.items.ids[dropped][order], np.arange(1009, 999, -1))
    planted = (_group_of_items(log) < N_GROUPS) & ~dropped
    masked = np.where(planted[None, :], scores, -np.inf)
    masked[support[0], support[1]] = -np.inf
    groups = _group_of_items(log)[np.argsort(-masked, axis=1)[:, :5]]
    for user in range(N_GROUPS):
        assert (groups[user] == user).sum() >= 4, f"user {user} got groups {groups[user]}"
    # with room for every item the model is the full EASE
    full = EASE(lam=10.0, max_items=None).fit(log)
    assert full.items is None and full.B.shape == (log.n_items, log.n_items)


def test_ease_float32_inverse_agrees_with_float64(warm, monkeypatch):
    support = _cold_support(warm)
    exact = EASE(lam=10.0).fit(warm)
    monkeypatch.setattr(EASE, "FLOAT32_ABOVE", 10)
    fast = EASE(lam=10.0).fit(warm)
    np.testing.assert_allclose(fast.B, exact.B, atol=1e-4)
    a, b = exact.score(*support), fast.score(*support)
    np.testing.assert_array_equal(np.argsort(-a, axis=1)[:, :10], np.argsort(-b, axis=1)[:, :10])


def test_als_fits_and_folds_in_without_the_openblas_warning_whatever_the_environment():
    # implicit warns when OpenBLAS runs a thread pool, and OpenBLAS prints "Detect OpenMP Loop" on every
    # solve inside implicit's OpenMP threads (a fold-in of 200 users at 256 factors printed 3,200 lines);
    # the library limits BLAS itself around fit and recalculate_user, so a user who never heard of
    # OPENBLAS_NUM_THREADS sees neither (a fresh process: OpenBLAS reads the variable at load)
    import os
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
            "import numpy as np\nfrom recmaml.baselines import ALSFoldIn\n"
            "from recmaml.synthetic import clustered_interactions\n"
            "warm = clustered_interactions(seed=0)\n"
            "als = ALSFoldIn(factors=256, iterations=1).fit(warm)\n"
            "users = np.repeat(np.arange(200), 5)\n"
            "items = np.random.default_rng(0).integers(0, warm.n_items, len(users))\n"
            "print('ok', als.score(users, items, 200).shape)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok (200, 1561)", out.stderr
    assert "OpenBLAS Warning" not in out.stderr, out.stderr[:300]
