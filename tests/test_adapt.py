"""Gradient invariants of the inner loop (in the spirit of learn2learn's MAML tests)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from recmaml.adapt import adapt, adapted_names, batched_loss
from recmaml.errors import ConfigError
from recmaml.meta import enable_meta_sgd, meta_loss
from recmaml.model import FeatureSpec, Scorer, feature_tensors
from recmaml.tasks import TaskSampler


def build(log, config, **overrides):
    cfg = config.replace(**overrides) if overrides else config
    torch.manual_seed(0)
    model = Scorer(log.n_items, cfg.model, user_spec=FeatureSpec())
    feats = feature_tensors(None, model.user_spec, log.n_users)
    sampler = TaskSampler(log, np.arange(log.n_users), cfg.tasks, feats, seed=0)
    return model, cfg, sampler.tasks(np.arange(12))


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_adaptation_leaves_the_model_unchanged(taste_log, tiny_config):
    model, cfg, batch = build(taste_log, tiny_config)
    before = state(model)
    fast = adapt(model, batch.support(), names=adapted_names(model, "all"), steps=3, inner_lr=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed = [n for n, f in fast.items() if not torch.allclose(f[0], dict(model.named_parameters())[n])]
    assert "user_init" in changed and "item_embedding.weight" in changed


def test_zero_inner_steps_returns_the_base_weights(taste_log, tiny_config):
    model, cfg, batch = build(taste_log, tiny_config)
    names = adapted_names(model, "user+head")
    fast = adapt(model, batch.support(), names=names, steps=0, inner_lr=0.5)
    params = dict(model.named_parameters())
    for n in names:
        assert fast[n].shape == (len(batch), *params[n].shape)
        assert torch.equal(fast[n][3], params[n])


@pytest.mark.parametrize("objective", ["implicit", "rating"])
def test_batched_adaptation_equals_adapting_each_user_alone(taste_log, tiny_config, objective):
    model, cfg, batch = build(taste_log, tiny_config, model={"objective": objective})
    names = adapted_names(model, "user+head")
    support = batch.support()
    together = adapt(model, support, names=names, steps=2, inner_lr=0.5)
    for u in range(len(batch)):
        one = support.rows(slice(u, u + 1))
        alone = adapt(model, one, names=names, steps=2, inner_lr=0.5)
        for n in names:
            torch.testing.assert_close(together[n][u], alone[n][0], rtol=1e-5, atol=1e-6)


def meta_grads(model, batch, cfg, names):
    model.zero_grad()
    meta_loss(model, batch, cfg, names).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_second_order_meta_gradient_differs_from_first_order_and_reaches_embeddings(taste_log, tiny_config):
    model, cfg, batch = build(taste_log, tiny_config)
    names = adapted_names(model, "user+head")
    second = meta_grads(model, batch, cfg.replace(meta={"method": "maml"}), names)
    first = meta_grads(model, batch, cfg.replace(meta={"method": "fomaml"}), names)
    emb = "item_embedding.weight"
    assert second[emb].abs().sum() > 0
    # the difference is the term that flows through the inner step; it must be there, and not tiny
    diff = (second[emb] - first[emb]).norm() / second[emb].norm()
    assert diff > 1e-3
    assert not torch.allclose(second["user_init"], first["user_init"])


def test_second_order_matches_finite_differences(taste_log, tiny_config):
    """The meta-gradient of one scalar direction equals the finite-difference slope of the meta-loss."""
    model, cfg, batch = build(taste_log, tiny_config, model={"embedding_dim": 4, "user_hidden": []})
    model.double()
    batch.support_ratings, batch.query_ratings = batch.support_ratings.double(), batch.query_ratings.double()
    batch.support_mask, batch.query_mask = batch.support_mask.double(), batch.query_mask.double()
    names = adapted_names(model, "user")
    grads = meta_grads(model, batch, cfg, names)
    direction = torch.randn_like(model.item_embedding.weight)
    eps = 1e-5
    with torch.no_grad():
        model.item_embedding.weight += eps * direction
        up = meta_loss(model, batch, cfg, names).item()
        model.item_embedding.weight -= 2 * eps * direction
        down = meta_loss(model, batch, cfg, names).item()
        model.item_embedding.weight += eps * direction
    numeric = (up - down) / (2 * eps)
    analytic = (grads["item_embedding.weight"] * direction).sum().item()
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_meta_sgd_learns_per_parameter_inner_rates(taste_log, tiny_config):
    model, cfg, batch = build(taste_log, tiny_config)
    names = adapted_names(model, "user")
    enable_meta_sgd(model, names, 0.5)
    assert adapted_names(model, "all") and not any(n.startswith("meta_lrs") for n in adapted_names(model, "all"))
    grads = meta_grads(model, batch, cfg.replace(meta={"method": "metasgd"}), names)
    assert grads["meta_lrs.user_init"].abs().sum() > 0


def test_head_only_adapts_only_the_user_tower(taste_log, tiny_config):
    model, cfg, batch = build(taste_log, tiny_config)
    names = adapted_names(model, "head")
    assert names and all(n.startswith("user_tower.") for n in names)
    fast = adapt(model, batch.support(), names=names, steps=1, inner_lr=0.5)
    losses_before = batched_loss(model, adapt(model, batch.support(), names=names, steps=0, inner_lr=0.5), batch.support())
    losses_after = batched_loss(model, fast, batch.support())
    assert losses_after.mean() < losses_before.mean()


def test_unknown_adapt_name_is_an_error(taste_log, tiny_config):
    model, _, _ = build(taste_log, tiny_config)
    with pytest.raises(ConfigError, match="parameter names"):
        adapted_names(model, "no_such_param")


@pytest.mark.parametrize("objective", ["implicit", "rating"])
@pytest.mark.parametrize("adapt_set,steps", [("user+head", 1), ("user+head", 2), ("head", 1), ("user", 3)])
@pytest.mark.parametrize("reduction,encoder", [("mean", 0), ("sum", 0), ("mean", 8)])
def test_serving_fast_path_equals_the_vmap_reference(taste_log, tiny_config, objective, adapt_set, steps, reduction,
                                                     encoder):
    # no user features and no set encoder: every user starts from one vector (the fast path shares its
    # softmax), and from the second step on each has its own; a set encoder gives each its own start
    from recmaml.adapt import batched_scores
    from recmaml.fast_adapt import fast_path_applies, fast_user_vectors

    model, cfg, batch = build(taste_log, tiny_config, model={"objective": objective, "user_hidden": [16, 8],
                                                             "support_encoder": encoder, "time_prior": False})
    if encoder:
        with torch.no_grad():
            model.support_embedding.weight.normal_(0, 0.5)  # a start that differs from user to user
    with torch.no_grad():  # give the biases something to do
        model.item_bias.normal_(0, 0.3)
        model.global_bias.fill_(3.0)
        model.kind_bias.normal_(0, 0.3)
    names = adapted_names(model, adapt_set)
    assert fast_path_applies(model, names)
    support = replace(batch.support(), negatives=batch.negatives[:, :0])  # serving scores the whole catalog
    support.user_feats["history_kind"] = torch.zeros(len(support), dtype=torch.long)  # one kind a call: 'first'
    with torch.no_grad():
        fast = adapt(model, support, names=names, steps=steps, inner_lr=0.5, first_order=True, reduction=reduction)
        reference = batched_scores(model, fast, support.user_feats)
    users, user_bias = fast_user_vectors(model, support, names=names, steps=steps, inner_lr=0.5, reduction=reduction,
                                         kind=0)
    scores = users @ model.item_vectors().detach().T + model.item_biases(kind=0).detach()
    if objective == "rating":
        scores = scores + user_bias[:, None] + model.global_bias.detach()
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("same_start", [True, False])
def test_catalog_logsumexp_has_the_value_and_gradient_of_logsumexp(same_start):
    from recmaml.fast_adapt import catalog_logsumexp

    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(1 if same_start else 6, 8, generator=gen, dtype=torch.float64)
    users = rows.expand(6, 8).clone().requires_grad_(True)
    vectors = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    bias = torch.randn(50, generator=gen, dtype=torch.float64)
    weights = torch.arange(1.0, 7.0, dtype=torch.float64)  # a different upstream gradient per user
    fast = catalog_logsumexp(users, vectors, bias, same_start)
    (grad_fast,) = torch.autograd.grad((weights * fast).sum(), users)
    plain = torch.logsumexp(users @ vectors.T + bias, dim=1)
    (grad_plain,) = torch.autograd.grad((weights * plain).sum(), users)
    torch.testing.assert_close(fast, plain)
    torch.testing.assert_close(grad_fast, grad_plain)


def test_fast_path_does_not_apply_beyond_the_user_side(taste_log, tiny_config):
    from recmaml.fast_adapt import fast_path_applies

    model, _, _ = build(taste_log, tiny_config)
    assert not fast_path_applies(model, adapted_names(model, "all"))
    enable_meta_sgd(model, adapted_names(model, "user"), 0.5)
    assert not fast_path_applies(model, adapted_names(model, "user"))


def test_the_set_encoder_conditions_the_start_on_the_support_and_gets_a_meta_gradient(taste_log, tiny_config):
    from recmaml.meta import meta_loss

    model, cfg, batch = build(taste_log, tiny_config, model={"support_encoder": 8})
    with torch.no_grad():
        model.support_embedding.weight.normal_(0, 0.5)
        start = model.user_vector(batch.user_feats)  # (B, d): one start per user
    assert start.shape[0] == len(batch) and (start - start[0]).abs().max() > 1e-3
    names = adapted_names(model, cfg.meta.adapt)
    meta_loss(model, batch, cfg, names).backward()
    assert model.support_embedding.weight.grad.abs().sum() > 0  # trained through the outer loss


def test_catalog_vectors_are_reused_until_an_item_parameter_changes(taste_log, tiny_config):
    model, _, _ = build(taste_log, tiny_config)
    first = model.catalog_vectors()
    assert model.catalog_vectors() is first  # no second pass of the item tower
    torch.testing.assert_close(first, model.item_vectors().detach())
    with torch.no_grad():
        model.item_embedding.weight[0] += 1.0  # as an optimizer step would, in place
    changed = model.catalog_vectors()
    assert changed is not first
    torch.testing.assert_close(changed, model.item_vectors().detach())
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    reloaded = model.catalog_vectors()
    assert reloaded is not changed
    old = model.item_embedding
    model.item_embedding = torch.nn.Embedding(old.num_embeddings, old.embedding_dim)  # a module replaced
    replaced = model.catalog_vectors()
    assert replaced is not reloaded
    torch.testing.assert_close(replaced, model.item_vectors().detach())
