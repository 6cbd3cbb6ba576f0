"""The serving priors (recmaml.priors): fit builds EASE and time-aware popularity tables and chooses their
weights on its validation users; they ship with the model; a weight of 0 serves the scorer alone; EASE
reads only the liked items of a history; the popularity prior follows when a user arrives (`at`)."""

import numpy as np
import pytest
import torch

from recmaml import DataError, Interactions, MetaRecommender
from recmaml.cold import ArrivalWarning
from recmaml.config import PRIOR_BUCKETS, PRIOR_GRID, PRIOR_WEIGHT_FIELDS
from recmaml.calibrate import SMOOTH_PAIRS, smooth_weights
from recmaml.priors import EASE_LAMBDAS, WINDOWS_DAYS, fit_priors

DAY = 86400


@pytest.fixture(scope="module")
def fitted(taste_log, tiny_config):
    return MetaRecommender(tiny_config).fit(taste_log)


def _with_weights(rec, ease: float, recent: float) -> MetaRecommender:
    """`rec` serving every size and kind with these prior weights (a shallow copy)."""
    other = MetaRecommender.__new__(MetaRecommender)
    other.__dict__.update(rec.__dict__)
    n = len(PRIOR_BUCKETS)
    other.config = rec.config.replace(serve={"first_ease_weights": (ease,) * n, "sample_ease_weights": (ease,) * n,
                                             "first_recent_weights": (recent,) * n,
                                             "sample_recent_weights": (recent,) * n})
    return other


def test_fit_chooses_the_priors_and_they_ship_with_the_model(fitted, tmp_path):
    serve = fitted.config.serve
    for name in PRIOR_WEIGHT_FIELDS:
        weights = getattr(serve, name)
        # no history: one weight of the grid; 1 to 20 items: a smooth function of the size, two choices
        assert len(weights) == len(PRIOR_BUCKETS) and weights[0] in PRIOR_GRID, (name, weights)
        assert tuple(weights[1:]) in {smooth_weights(*pair) for pair in SMOOTH_PAIRS}, (name, weights)
    assert serve.first_ease_weights[0] == serve.sample_ease_weights[0] == 0.0  # no history: EASE has no say
    priors = fitted.priors
    assert float(priors.ease_lambda) in EASE_LAMBDAS and priors.has_time
    assert torch.isnan(priors.ease_threshold) or float(priors.ease_threshold) == fitted.config.tasks.positive_threshold
    assert float(priors.window_seconds) / DAY in WINDOWS_DAYS
    fitted.save(tmp_path / "model")
    loaded = MetaRecommender.load(tmp_path / "model")
    assert loaded.config.serve == serve
    for name, tensor in priors.state_dict().items():
        torch.testing.assert_close(loaded.priors.state_dict()[name], tensor, rtol=0, atol=0, equal_nan=True)
    history = Interactions.from_ids(np.array(["a"] * 3), np.array([0, 1, 2]), rating=np.full(3, 5.0),
                                    timestamp=np.arange(3))
    boosted = _with_weights(fitted, 2.0, 1.0)
    loaded_boosted = _with_weights(loaded, 2.0, 1.0)
    np.testing.assert_array_equal(loaded_boosted.score(history), boosted.score(history))


def test_zero_weights_serve_the_scorer_alone_and_a_weight_changes_the_scores(fitted):
    history = Interactions.from_ids(np.array(["a"] * 3 + ["b"] * 2), np.array([0, 1, 2, 20, 21]),
                                    rating=np.full(5, 5.0), timestamp=np.arange(5))
    off = MetaRecommender.__new__(MetaRecommender)
    off.__dict__.update(fitted.__dict__)
    off.config = fitted.config.replace(serve={"priors": False})
    alone = off.score(history, users=["a", "b", "new"])
    np.testing.assert_array_equal(_with_weights(fitted, 0.0, 0.0).score(history, users=["a", "b", "new"]), alone)
    assert not np.allclose(_with_weights(fitted, 1.0, 0.0).score(history, users=["a", "b", "new"])[:2], alone[:2])
    assert not np.allclose(_with_weights(fitted, 0.0, 1.0).score(history, users=["a", "b", "new"]), alone)


def test_the_ease_prior_reads_the_liked_items_of_a_history_only_when_fit_chose_so(fitted, taste_log):
    # EASE's weight dominant: a user who liked three items of group 0 gets group 0
    ease_only = _with_weights(fitted, 16.0, 0.0)
    items = np.array([0, 1, 2])
    liked = Interactions.from_ids(np.array(["u"] * 3), items, rating=np.full(3, 5.0), timestamp=np.arange(3))
    disliked = Interactions.from_ids(np.array(["u"] * 3), items, rating=np.full(3, 1.0), timestamp=np.arange(3))
    top = ease_only.recommend(liked, k=5).to_pandas().item_id.to_numpy()
    assert (np.asarray(top) // 20 == 0).sum() >= 4, top
    # EASE on liked rows (threshold 4): the same three items rated 1 are no taste at all
    ease_only.priors = fit_priors(taste_log, 4.0, 500.0)
    support_items, support_mask = torch.as_tensor(fitted.items.index(items))[None], torch.ones(1, 3)
    nothing = ease_only.priors.ease(support_items, support_mask, torch.ones(1, 3))
    assert torch.count_nonzero(nothing) == 0
    assert not np.array_equal(ease_only.score(liked), ease_only.score(disliked))
    # a history without a rating column: every row counts as liked
    unrated = Interactions.from_ids(np.array(["u"] * 3), items, timestamp=np.arange(3))
    np.testing.assert_array_equal(ease_only.score(unrated), ease_only.score(liked))
    # EASE on every row (threshold None): a rating changes nothing
    ease_only.priors = fit_priors(taste_log, None, 500.0)
    every = ease_only.priors.ease(support_items, support_mask, torch.ones(1, 3))
    torch.testing.assert_close(every, ease_only.priors.ease(support_items, support_mask, torch.full((1, 3), 5.0)))
    assert torch.count_nonzero(every) > 0


def test_smooth_weights_run_from_one_item_to_twenty_on_the_log_of_the_size():
    assert smooth_weights(0.5, 0.5) == (0.5,) * 6
    rising = smooth_weights(0.0, 2.0)  # sizes 1, 2, 3, 5, 10, 20
    assert rising[0] == 0.0 and rising[-1] == 2.0 and list(rising) == sorted(rising)
    assert rising[3] == round(2.0 * np.log(5) / np.log(20), 4)
    assert (0.0, 0.0) == SMOOTH_PAIRS[0]  # ties go to no prior at all


def _shifting_log() -> Interactions:
    """Item 0 is what everyone takes in the first 100 days, item 1 in the last 100; items 2-9 are taken
    throughout, so a window of the log before a time tells the two halves apart."""
    gen = np.random.default_rng(0)
    users, items, times = [], [], []
    for u in range(300):
        early = u < 150
        t0 = (0 if early else 300) * DAY + gen.integers(0, 100 * DAY)
        picks = [0 if early else 1, *gen.choice(np.arange(2, 10), 4, replace=False)]
        users += [u] * len(picks)
        items += picks
        times += [t0 + i * DAY for i in range(len(picks))]
    return Interactions.from_ids(np.array(users), np.array(items), timestamp=np.array(times, np.int64))


def test_the_popularity_prior_follows_when_a_user_arrives(tiny_config):
    log = _shifting_log()
    priors = fit_priors(log, None, 500.0).with_window(91.0)
    scores = priors.recent(torch.tensor([60.0 * DAY, 390.0 * DAY], dtype=torch.float64))
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    rec = MetaRecommender(tiny_config.replace(meta={"epochs": 2})).fit(log)
    rec = _with_weights(rec, 0.0, 16.0)
    rec.priors.with_window(91.0)
    no_rows = Interactions.from_ids(np.array(["x"]), np.array([5]), timestamp=np.array([0]))  # a history to hold ids
    early = rec.score(no_rows, users=["early", "late"], at={"early": 60 * DAY, "late": 390 * DAY})
    index = rec.items.index(np.array([0, 1]))
    assert early[0, index[0]] > early[0, index[1]] and early[1, index[1]] > early[1, index[0]]
    with pytest.warns(ArrivalWarning, match="ignored for 1 user"):  # no_rows' own user is served at its time
        dated = rec.score(no_rows, users=["late"], at="1971-01-26")  # day 390 as an ISO date
    np.testing.assert_array_equal(dated[0], early[1])
    # without `at`, a user without rows arrives at the end of the warm log: the late half's item leads
    default = rec.score(no_rows, users=["someone"])
    assert default[0, index[1]] > default[0, index[0]]


def test_a_log_without_timestamps_gets_the_popularity_of_its_whole_log(tiny_config, tmp_path):
    """Without times the popularity prior is the whole log's (one bin, an endless window), the same for every
    user and any `at`; fit chooses its weight as with times, and it ships with the model."""
    timed = _shifting_log()
    log = Interactions.from_ids(timed.users.lookup(timed.user_idx), timed.items.lookup(timed.item_idx))
    priors = fit_priors(log, None, 500.0)
    assert priors.has_popularity and not priors.has_time and len(priors.time_edges) == 1
    counts = np.bincount(log.item_idx, minlength=log.n_items)
    popular = priors.popularity({}, 2)
    assert popular.shape == (2, log.n_items) and torch.equal(popular[0], popular[1])
    assert np.array_equal(np.argsort(-popular[0].numpy(), kind="stable"), np.argsort(-counts, kind="stable"))
    from recmaml.calibrate import describe
    assert "whole log" in describe(priors)
    rec = MetaRecommender(tiny_config.replace(meta={"epochs": 2})).fit(log)
    assert rec.priors.has_popularity and not rec.priors.has_time
    assert all(len(getattr(rec.config.serve, name)) == len(PRIOR_BUCKETS) for name in PRIOR_WEIGHT_FIELDS)
    boosted = _with_weights(rec, 0.0, 16.0)
    no_rows = Interactions.from_ids(np.array(["x"]), np.array([5]))  # a history to hold ids
    with pytest.warns(ArrivalWarning, match="no effect"):
        scores = boosted.score(no_rows, users=["new", "later"], at={"later": 10**9})
    np.testing.assert_array_equal(scores[0], scores[1])  # no time to tell them apart
    assert int(np.argmax(scores[0])) == int(rec.items.index(log.items.lookup(np.array([np.argmax(counts)])))[0])
    assert not np.array_equal(scores, _with_weights(rec, 0.0, 0.0).score(no_rows, users=["new", "later"]))
    rec.save(tmp_path / "model")
    loaded = _with_weights(MetaRecommender.load(tmp_path / "model"), 0.0, 16.0)
    np.testing.assert_array_equal(loaded.score(no_rows, users=["new", "later"]), scores)


def test_a_model_without_a_popularity_table_serves_without_its_weights(fitted):
    """A model of a log without timestamps saved before such logs had a popularity prior has no table: its
    popularity weights are read as 0, and it serves EASE beside the scorer as it did."""
    from recmaml.priors import ServingPriors
    old = _with_weights(fitted, 1.0, 4.0)
    n_items, neighbors = fitted.priors.ease_index.shape
    old.priors = ServingPriors(n_items, neighbors, 0)
    old.priors.set_ease(fitted.priors.ease_index.numpy(), fitted.priors.ease_weight.numpy(), 500.0, None)
    assert not old.priors.has_popularity and not old.priors.has_time
    history = Interactions.from_ids(np.array(["a"] * 3), np.array([0, 1, 2]))
    without = _with_weights(old, 1.0, 0.0)
    np.testing.assert_array_equal(old.score(history, users=["a", "new"]), without.score(history, users=["a", "new"]))


def test_a_time_that_is_no_time_is_an_error_naming_at(fitted):
    history = Interactions.from_ids(np.array(["a"]), np.array([0]))
    with pytest.raises(DataError, match="at="):
        fitted.recommend(history, at="yesterday")


def test_a_model_saved_with_a_dense_table_of_counts_serves_the_same_popularity():
    """Priors saved before the time bins kept a dense (edges + 1, n_items) table of cumulative counts: they
    load as bins and serve the same popularity rows."""
    priors = fit_priors(_shifting_log(), None, 500.0).with_window(91.0)
    n_items = priors.ease_index.shape[0]
    dense = torch.zeros(len(priors.time_edges) + 1, n_items)
    bins = torch.repeat_interleave(torch.arange(dense.shape[0]), priors.time_starts.diff())
    dense.index_put_((bins, priors.time_items.long()), priors.time_counts, accumulate=True)
    state = {k: v for k, v in priors.state_dict().items() if k not in ("time_starts", "time_items")}
    state["time_counts"] = dense.cumsum(dim=0)
    loaded = type(priors).from_state(state)
    times = torch.tensor([0.0, 60.0 * DAY, 200.0 * DAY, 390.0 * DAY, 10**9], dtype=torch.float64)
    torch.testing.assert_close(loaded.recent(times), priors.recent(times), rtol=0, atol=0)
    assert loaded.recent(times)[1:4].abs().sum() > 0


def test_the_ease_sums_add_each_users_rows_in_support_order_in_float32():
    """The prior's sums against a plain float32 loop (IEEE adds, the same on any machine): padding and a
    like rated below the threshold add nothing, a dislike subtracts its row."""
    from recmaml.priors import ServingPriors

    rng = np.random.default_rng(4)
    n_items, neighbors = 40, 6
    priors = ServingPriors(n_items, neighbors, 0)
    index = np.stack([rng.choice(n_items, neighbors, replace=False) for _ in range(n_items)]).astype(np.int32)
    weight = rng.normal(size=(n_items, neighbors)).astype(np.float32)
    priors.set_ease(index, weight, 100.0, 4.0)
    items = torch.from_numpy(rng.integers(0, n_items, size=(9, 7)))
    labels = torch.from_numpy(rng.choice([1.0, 1.0, -0.5, 0.0], size=(9, 7)).astype(np.float32))
    labels[3] = 0.0  # a user with no row that counts
    ratings = torch.from_numpy(rng.choice([2.0, 4.0, 5.0, np.nan], size=(9, 7)).astype(np.float32))
    got = priors._ease_sums(items, priors._ease_labels(labels, ratings)).numpy()
    want = np.zeros((9, n_items), dtype=np.float32)
    for b in range(9):
        for s in range(7):
            label, rating = labels[b, s].item(), ratings[b, s].item()
            if label == 0 or (label > 0 and rating < 4.0):
                continue
            row = items[b, s].item()
            for j, w in zip(index[row], weight[row]):
                want[b, j] = np.float32(want[b, j] + np.float32(w * np.float32(label)))
    assert np.array_equal(got, want) and not want[3].any()
