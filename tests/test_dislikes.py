"""A low rating in a cold user's history counts against its item (serve.dislike_threshold, dislike_weight):
the inner step pushes the item down, EASE subtracts its row, the set encoder leaves it out."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from recmaml import MetaRecommender
from recmaml.adapt import adapt, adapted_names, batched_scores
from recmaml.config import load_config
from recmaml.errors import ConfigError
from recmaml.fast_adapt import fast_user_vectors
from recmaml.model import FeatureSpec, Scorer, feature_tensors
from recmaml.priors import fit_priors
from recmaml.scoring import dislike_threshold, resolved_dislike_threshold, with_dislikes
from recmaml.tasks import TaskSampler, dislike_labels

GROUP = 20  # items per taste group of tests/planted.taste_groups


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return MetaRecommender.load(tiny_model_dir)


def _overlap(a, b) -> int:
    return len(set(a) & set(b))


def test_opposite_ratings_of_the_same_items_give_different_top_tens(tiny_model):
    # the planted log's group-0 fans rate items 0-19 4-5 stars; a user who gives five of them 1 star is not one
    shown = [0, 1, 2, 3, 4]
    fan = tiny_model.recommend_user(shown, ratings=[5.0] * 5, k=10).items
    hater = tiny_model.recommend_user(shown, ratings=[1.0] * 5, k=10).items
    assert sum(int(i) < GROUP for i in fan) >= 8  # the fan gets the rest of group 0
    assert _overlap(fan, hater) <= 5
    assert sum(int(i) < GROUP for i in hater) <= 5
    # a history without ratings is all likes: the fan's list
    assert list(tiny_model.recommend_user(shown, k=10).items) == list(fan)
    # and so is a model told that no rating is a dislike (the old serving): the hater gets the fan's list
    old = tiny_model.with_serving(dislike_threshold=None)
    assert _overlap(old.recommend_user(shown, ratings=[1.0] * 5, k=10).items, fan) >= 8


def test_a_dislike_is_left_out_by_default_and_pushes_its_item_down_with_a_weight(tiny_model):
    model = tiny_model.with_serving(priors=False)  # the scorer alone: its inner step

    def score(items, ratings, **serve):
        return model.with_serving(**serve).score(_history(items, ratings), users=["u"], items=[7])[0, 0]

    start = model.score(_history([], []), users=["u"], items=[7])[0, 0]
    liked, unrated = score([7], [5.0]), score([7], [np.nan])
    assert liked > start and unrated == pytest.approx(liked)  # no rating: a like
    assert score([7], [1.0]) == pytest.approx(start, abs=1e-5)  # weight 0: left out, as if never shown
    against = score([7], [1.0], dislike_weight=1.0)
    assert against < start
    assert score([7], [1.0], dislike_weight=0.25) == pytest.approx(start - (start - against) / 4, rel=0.2)
    assert score([7], [1.0], dislike_threshold=None) == pytest.approx(liked)  # the old serving: a like


def _history(items, ratings):
    from recmaml.data import Interactions

    return Interactions.from_ids(np.array(["u"] * len(items), dtype=object), np.array(items, dtype=np.int64),
                                 rating=np.array(ratings, np.float32))


def test_labels_are_one_for_a_like_minus_the_weight_for_a_dislike_and_nan_is_a_like():
    ratings = torch.tensor([[5.0, 1.0, float("nan"), 3.0], [2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    labels = dislike_labels(ratings, mask, 4.0, 0.5)
    torch.testing.assert_close(labels, torch.tensor([[1.0, -0.5, 1.0, -0.5], [-0.5, 0.0, 0.0, 0.0]]))
    assert dislike_labels(ratings, mask, None, 0.5) is mask


def test_fit_makes_the_lower_half_of_the_rating_scale_dislikes_and_never_for_a_rating_model(tiny_config):
    ratings = np.array([1.0, 2.0, 5.0, 4.0], np.float32)
    assert resolved_dislike_threshold(tiny_config, ratings) == 3.0  # 1 and 2 stars of 1-5
    assert resolved_dislike_threshold(tiny_config, np.array([0.5, 4.0], np.float32)) == 2.25  # FilmTrust
    assert resolved_dislike_threshold(tiny_config, None) is None  # a log without ratings
    assert resolved_dislike_threshold(tiny_config, np.ones(3, np.float32)) is None  # one value: all likes
    assert resolved_dislike_threshold(tiny_config.replace(serve={"dislike_threshold": None}), ratings) is None
    assert resolved_dislike_threshold(tiny_config.replace(serve={"dislike_threshold": 4.0}), ratings) == 4.0
    assert resolved_dislike_threshold(tiny_config.replace(model={"objective": "rating"}), ratings) is None
    plays = np.minimum(np.random.default_rng(0).zipf(1.6, 2000), 100_000).astype(np.float32)
    assert resolved_dislike_threshold(tiny_config, plays) is None  # counts say how much, not whether: all likes
    # serving reads the resolved value; 'auto' never resolved (a model saved before dislikes): no dislikes
    assert dislike_threshold(tiny_config.replace(serve={"dislike_threshold": 3.0})) == 3.0
    assert dislike_threshold(tiny_config) is None
    assert dislike_threshold(tiny_config.replace(serve={"dislike_threshold": 3.0}, model={"objective": "rating"})) is None


def test_fit_records_its_dislike_threshold(tiny_model):
    assert tiny_model.config.serve.dislike_threshold == 3.0  # the planted log's ratings are 1-5


@pytest.mark.parametrize("key,value,match", [("dislike_threshold", "low", "serve.dislike_threshold"),
                                             ("dislike_weight", -1.0, "serve.dislike_weight")])
def test_bad_dislike_settings_are_config_errors(tiny_config, key, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config.replace(serve={key: value})


def _model_and_support(log, config, encoder: int):
    cfg = config.replace(model={"user_hidden": [16, 8], "support_encoder": encoder, "time_prior": False})
    torch.manual_seed(0)
    model = Scorer(log.n_items, cfg.model, user_spec=FeatureSpec())
    if encoder:
        with torch.no_grad():
            model.support_embedding.weight.normal_(0, 0.5)
    with torch.no_grad():
        model.item_bias.normal_(0, 0.3)
    feats = feature_tensors(None, model.user_spec, log.n_users)
    batch = TaskSampler(log, np.arange(log.n_users), cfg.tasks, feats, seed=0).tasks(np.arange(12))
    support = replace(batch.support(), negatives=batch.negatives[:, :0])
    support.user_feats["history_kind"] = torch.zeros(len(support), dtype=torch.long)
    return model, cfg, support


@pytest.mark.parametrize("weight", [1.0, 0.25, 0.0])
@pytest.mark.parametrize("reduction,encoder", [("mean", 0), ("sum", 0), ("mean", 8)])
def test_serving_fast_path_equals_the_vmap_reference_with_dislikes(taste_log, tiny_config, weight, reduction,
                                                                   encoder):
    model, cfg, support = _model_and_support(taste_log, tiny_config, encoder)
    support = with_dislikes(cfg.replace(serve={"dislike_threshold": 3.0, "dislike_weight": weight}), support)
    assert support.labels is not None and bool((support.labels < 0).any() or weight == 0)
    names = adapted_names(model, "user+head")
    with torch.no_grad():
        fast = adapt(model, support, names=names, steps=2, inner_lr=0.5, first_order=True, reduction=reduction)
        reference = batched_scores(model, fast, support.user_feats)
    users, _ = fast_user_vectors(model, support, names=names, steps=2, inner_lr=0.5, reduction=reduction, kind=0)
    scores = users @ model.item_vectors().detach().T + model.item_biases(kind=0).detach()
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)


def test_the_set_encoder_reads_the_liked_rows_only(taste_log, tiny_config):
    model, cfg, support = _model_and_support(taste_log, tiny_config, encoder=8)
    signed = with_dislikes(cfg.replace(serve={"dislike_threshold": 3.0}), support)
    liked_only = replace(support, mask=signed.labels.clamp(min=0.0))
    liked_only.user_feats = {**support.user_feats, "support_mask": liked_only.mask}
    torch.testing.assert_close(model.user_inputs(signed.user_feats), model.user_inputs(liked_only.user_feats))


@pytest.mark.parametrize("loss,negatives", [("softmax", 0), ("softmax", 16), ("bpr", 16)])
def test_a_dislike_mirrors_a_like_in_every_inner_loss(taste_log, tiny_config, loss, negatives):
    # one step on a disliked item moves the user exactly opposite to one step on the same item liked
    cfg = tiny_config.replace(model={"loss": loss, "support_encoder": 0}, tasks={"negatives": negatives})
    torch.manual_seed(0)
    model = Scorer(taste_log.n_items, cfg.model, user_spec=FeatureSpec())
    feats = feature_tensors(None, model.user_spec, taste_log.n_users)
    batch = TaskSampler(taste_log, np.arange(taste_log.n_users), cfg.tasks, feats, seed=0).tasks(np.arange(4),
                                                                                                   support_size=1)
    support = batch.support()
    names = ["user_init"]
    start = model.user_init.detach()
    up = adapt(model, replace(support, labels=support.mask), names=names, steps=1, inner_lr=0.5)["user_init"]
    down = adapt(model, replace(support, labels=-support.mask), names=names, steps=1, inner_lr=0.5)["user_init"]
    # the first-order moves of the full softmax are exact mirrors; a sampled loss's are opposite in direction
    cosine = torch.nn.functional.cosine_similarity(up - start, down - start, dim=1)
    assert bool((cosine < -0.99).all()) if negatives == 0 else bool((cosine < 0).all())


def test_ease_subtracts_a_disliked_row(taste_log):
    priors = fit_priors(taste_log, None, 100.0)
    items = torch.tensor([[0, 1, 2]])
    ratings = torch.tensor([[5.0, 5.0, 5.0]])
    liked = priors.ease(items, torch.ones(1, 3), ratings)
    disliked = priors.ease(items, -torch.ones(1, 3), ratings)
    torch.testing.assert_close(disliked, -liked)
    # a dislike is subtracted even where ease_threshold leaves low-rated likes out
    filtered = fit_priors(taste_log, 4.0, 100.0)
    low = torch.tensor([[1.0, 1.0, 1.0]])
    torch.testing.assert_close(filtered.ease(items, -torch.ones(1, 3), low),
                               -filtered.ease(items, torch.ones(1, 3), ratings))
