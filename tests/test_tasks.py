import numpy as np
import torch

from recmaml.config import TaskConfig
from recmaml.model import FeatureSpec, feature_tensors
from recmaml.tasks import TaskSampler, split_users


def sampler(log, **cfg):
    cfg.setdefault("positive_threshold", None)  # every query row, unless a test asks for positives only
    feats = feature_tensors(None, FeatureSpec(), log.n_users)
    return TaskSampler(log, np.arange(log.n_users), TaskConfig(**cfg), feats, seed=0)


def rows(batch, prefix):
    items, mask = getattr(batch, f"{prefix}_items"), getattr(batch, f"{prefix}_mask")
    return [set(items[u][mask[u] > 0].tolist()) for u in range(len(batch))]


def test_support_sizes_lie_in_the_range_and_query_is_the_disjoint_rest(taste_log):
    s = sampler(taste_log, support_min=2, support_max=5, query_max=100)
    users = np.arange(40)
    batch = s.tasks(users)
    sizes = batch.support_mask.sum(1)
    assert sizes.min() >= 2 and sizes.max() <= 5
    per_user = np.bincount(taste_log.user_idx)
    for u, sup, qry in zip(users, rows(batch, "support"), rows(batch, "query")):
        assert not sup & qry
        truth = set(taste_log.item_idx[taste_log.user_idx == u].tolist())
        assert sup | qry == truth and len(sup) + len(qry) == per_user[u]


def test_query_max_and_positive_threshold(taste_log):
    batch = sampler(taste_log, support_min=3, support_max=3, query_max=4, positive_threshold=4.0).tasks(np.arange(30))
    assert batch.query_mask.sum(1).max() <= 4
    assert (batch.query_ratings[batch.query_mask > 0] >= 4).all()


def test_temporal_order_puts_the_earliest_interactions_in_the_support(taste_log):
    batch = sampler(taste_log, support_min=3, support_max=3, order="temporal").tasks(np.arange(20))
    for u, sup in enumerate(rows(batch, "support")):
        mine = taste_log.user_idx == u
        earliest = taste_log.item_idx[mine][np.argsort(taste_log.timestamp[mine])[:3]]
        assert sup == set(earliest.tolist())


def _earliest(log, u, k):
    mine = log.user_idx == u
    return set(log.item_idx[mine][np.argsort(log.timestamp[mine], kind="stable")[:k]].tolist())


def test_mixed_order_gives_some_tasks_the_earliest_interactions_and_others_random_ones(taste_log):
    users = np.arange(200)
    supports = rows(sampler(taste_log, support_min=3, support_max=3, order="mixed").tasks(users), "support")
    earliest = [sup == _earliest(taste_log, u, 3) for u, sup in zip(users, supports)]
    # half temporal (always the earliest 3) and half random (the earliest 3 of 10 by chance: 1 in 120)
    assert 0.35 < np.mean(earliest) < 0.65
    for fraction, lo, hi in ((0.0, 0.0, 0.05), (1.0, 1.0, 1.0)):
        s = sampler(taste_log, support_min=3, support_max=3, order="mixed", temporal_fraction=fraction)
        share = np.mean([sup == _earliest(taste_log, u, 3) for u, sup in zip(users, rows(s.tasks(users), "support"))])
        assert lo <= share <= hi, fraction


def test_auto_positive_threshold_follows_the_logs_scale(taste_log):
    s = sampler(taste_log, support_min=3, support_max=3, positive_threshold="auto")
    assert s.positive_threshold == 4.0  # taste_groups rates 1-5
    batch = s.tasks(np.arange(30))
    assert (batch.query_ratings[batch.query_mask > 0] >= 4).all()


def test_zero_shot_tasks_have_an_empty_support_and_a_query(taste_log):
    batch = sampler(taste_log, support_min=0, support_max=2).tasks(np.arange(120))
    sizes = batch.support_mask.sum(1)
    assert set(sizes.tolist()) == {0.0, 1.0, 2.0}
    assert (batch.query_mask.sum(1) > 0).all()


def test_negatives_are_never_positives_of_their_user(taste_log):
    for sampling in ("uniform", "popularity"):
        batch = sampler(taste_log, negatives=50, negative_sampling=sampling).tasks(np.arange(60))
        for u in range(60):
            positives = set(taste_log.item_idx[taste_log.user_idx == u].tolist())
            kept = batch.negatives[u][batch.negative_mask[u] > 0].tolist()
            dropped = batch.negatives[u][batch.negative_mask[u] == 0].tolist()
            assert not positives & set(kept)
            assert set(dropped) <= positives
        assert torch.isfinite(batch.negative_logq).all()


def test_tasks_are_deterministic_given_a_seed(taste_log):
    a = [b.support_items for b in sampler(taste_log).epoch(16)]
    b = [b.support_items for b in sampler(taste_log).epoch(16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_split_users_is_disjoint_and_seeded(taste_log):
    train, val = split_users(taste_log, 0.25, seed=3)
    assert not set(train) & set(val) and len(val) == 60 and len(train) + len(val) == taste_log.n_users
    assert np.array_equal(split_users(taste_log, 0.25, seed=3)[1], val)


def test_a_repeated_pair_never_sits_in_both_support_and_query():
    from recmaml.data import Interactions

    # user 0 rated item 1 three times: it must count once
    log = Interactions.from_ids(np.array([0] * 6), np.array([1, 1, 1, 2, 3, 4]), rating=np.full(6, 5.0))
    for seed in range(20):
        s = TaskSampler(log, np.array([0]), TaskConfig(support_min=1, support_max=3), feature_tensors(None, FeatureSpec(), 1), seed)
        batch = s.tasks(np.array([0]))
        sup, qry = rows(batch, "support")[0], rows(batch, "query")[0]
        assert not sup & qry and len(sup) + len(qry) == 4
