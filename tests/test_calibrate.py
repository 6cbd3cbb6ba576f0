"""One model for every kind of history, and how far serving steps per support size: the kind a task or a
cold user shows reaches the scorer, fit chooses the serving scales on its own validation users and saves
them, and a scale of 0 serves a user exactly as zero inner steps would."""

import numpy as np
import pytest
import torch

from recmaml import DataError, Interactions, MetaRecommender
from recmaml.calibrate import _best
from recmaml.config import SCALE_GRID, SIZE_BUCKETS, TaskConfig
from recmaml.model import FeatureSpec, feature_tensors
from recmaml.tasks import KIND_FIRST, KIND_SAMPLE, TaskSampler


@pytest.fixture(scope="module")
def fitted(taste_log, tiny_config):
    return MetaRecommender(tiny_config).fit(taste_log)


@pytest.mark.parametrize("order,kinds", [("random", {KIND_SAMPLE}), ("temporal", {KIND_FIRST}),
                                         ("mixed", {KIND_FIRST, KIND_SAMPLE})])
def test_each_task_carries_the_kind_of_history_its_support_is(taste_log, order, kinds):
    feats = feature_tensors(None, FeatureSpec(), taste_log.n_users)
    sampler = TaskSampler(taste_log, np.arange(taste_log.n_users), TaskConfig(order=order, positive_threshold=None),
                          feats, seed=0)
    batch = sampler.tasks(np.arange(200), support_size=3)
    assert set(batch.user_feats["history_kind"].tolist()) == kinds
    if order == "mixed":  # a temporal task's support is its user's earliest rows
        first = np.flatnonzero(batch.user_feats["history_kind"].numpy() == KIND_FIRST)[0]
        rows = np.flatnonzero(taste_log.user_idx == first)
        earliest = set(taste_log.item_idx[rows[np.argsort(taste_log.timestamp[rows])[:3]]].tolist())
        assert set(batch.support_items[first].tolist()) == earliest


def test_fit_resolves_the_kind_and_chooses_a_scale_per_size_and_kind_from_the_grid(fitted, tmp_path):
    serve = fitted.config.serve
    assert serve.history_kind == "first"  # the planted log has timestamps: a real new user shows its first rows
    for scales in (serve.first_scales, serve.sample_scales):
        assert len(scales) == len(SIZE_BUCKETS) and set(scales) <= set(SCALE_GRID)
    fitted.save(tmp_path / "model")
    assert MetaRecommender.load(tmp_path / "model").config.serve == serve  # the choice ships with the model


def test_the_kinds_are_served_differently_and_a_wrong_kind_is_refused(fitted):
    history = Interactions.from_ids(np.array(["a"] * 3), np.array([0, 1, 2]))
    first = fitted.score(history, history_kind="first")
    sample = fitted.score(history, history_kind="sample")
    assert not np.allclose(first, sample)
    np.testing.assert_array_equal(fitted.score(history), first)  # the fitted default
    ranked = fitted.recommend(history, k=5, history_kind="sample")
    unseen = np.delete(sample[0], fitted.items.index(np.array([0, 1, 2])))
    np.testing.assert_array_equal(ranked.score, np.sort(unseen)[::-1][:5])
    with pytest.raises(DataError, match="history_kind"):
        fitted.recommend(history, history_kind="latest")


def test_a_zero_scale_serves_that_size_as_zero_steps_would(fitted):
    # one user of each size: bucket 0 (1 item) never steps, the others step at their scale
    history = Interactions.from_ids(np.array(["one", "six", "six", "six", "six", "six", "six"]),
                                    np.array([0, 1, 2, 3, 4, 5, 6]))
    no_step = fitted.with_scales((0.0,) * len(SIZE_BUCKETS)).score(history, users=["one", "six"])
    mixed = fitted.with_scales((0.0, 1.0, 1.0, 1.0, 1.0, 1.0)).score(history, users=["one", "six"])
    frozen = MetaRecommender.__new__(MetaRecommender)
    frozen.__dict__.update(fitted.__dict__)
    frozen.config = fitted.config.replace(serve={"inner_steps": 0})
    zero_steps = frozen.score(history, users=["one", "six"])
    np.testing.assert_array_equal(no_step, zero_steps)
    np.testing.assert_array_equal(mixed[0], zero_steps[0])
    assert not np.allclose(mixed[1], zero_steps[1])


def test_the_best_scale_is_no_step_unless_a_step_beats_it():
    values = {0.0: 0.30, 0.25: 0.30, 0.5: 0.29, 1.0: 0.28, 2.0: float("nan"), 4.0: 0.1}
    assert _best(values) == 0.0  # a tie with not adapting keeps not adapting; NaN never wins
    values[1.0] = 0.31
    assert _best(values) == 1.0


def test_a_rating_model_gets_its_serving_steps_chosen_too(taste_log, tiny_config):
    from recmaml.calibrate import RATING_STEPS

    rec = MetaRecommender(tiny_config.replace(model={"objective": "rating"}, meta={"epochs": 2})).fit(taste_log)
    assert rec.config.serve.inner_steps in RATING_STEPS and rec.priors is None  # no priors: it predicts ratings
    fixed = MetaRecommender(tiny_config.replace(model={"objective": "rating"}, meta={"epochs": 2},
                                                serve={"inner_steps": 7})).fit(taste_log)
    assert fixed.config.serve.inner_steps == 7  # a count the config gives is kept


def test_sample_histories_are_served_by_weights_trained_on_random_supports(fitted, taste_log, tiny_config, tmp_path):
    # model.sample_weights: a second set of weights, meta-trained on random supports alone, serves samples
    assert fitted.sample_model is not None and fitted.sample_history.epochs
    history = Interactions.from_ids(np.array(["a"] * 3), np.array([0, 1, 2]))
    main_only = fitted.with_history_kind("sample")
    main_only.sample_model = None  # the main weights, told the kind
    assert not np.allclose(fitted.score(history, history_kind="sample"), main_only.score(history))
    fitted.save(tmp_path / "model")
    loaded = MetaRecommender.load(tmp_path / "model")
    for kind in ("first", "sample"):
        np.testing.assert_array_equal(loaded.score(history, history_kind=kind), fitted.score(history, history_kind=kind))
    # without timestamps every task is a random one: one set of weights serves both kinds
    untimed = Interactions.from_ids(taste_log.users.ids[taste_log.user_idx], taste_log.items.ids[taste_log.item_idx],
                                    rating=taste_log.rating)
    plain = MetaRecommender(tiny_config).fit(untimed)
    assert plain.sample_model is None and plain.config.serve.history_kind == "sample"
