"""recmaml.ordered's sums against plain sequential float64 loops: IEEE adds in a fixed order give the same
bits on any machine, which is what lets serving promise a user the same scores in any batch."""

from __future__ import annotations

import numpy as np
import torch

from recmaml.ordered import ordered_embedding_sum, ordered_sum


def _in_order(x: np.ndarray, axis: int) -> np.ndarray:
    acc = np.zeros(np.delete(x.shape, axis), dtype=np.float64)
    for position in range(x.shape[axis]):
        acc = acc + np.take(x, position, axis=axis).astype(np.float64)
    return acc.astype(np.float32)


def test_ordered_sum_adds_in_index_order_in_float64_and_padding_changes_no_bit():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5, 13, 7)) * 10.0 ** rng.integers(-3, 4, size=(5, 13, 7))).astype(np.float32)
    for dim in (0, 1, 2):
        assert np.array_equal(ordered_sum(torch.from_numpy(x), dim).numpy(), _in_order(x, dim))
    padded = np.concatenate([x, np.zeros((5, 9, 7), dtype=np.float32)], axis=1)
    assert np.array_equal(ordered_sum(torch.from_numpy(padded), 1).numpy(), ordered_sum(torch.from_numpy(x), 1).numpy())
    assert ordered_sum(torch.zeros(3, 0, 2), 1).shape == (3, 2)


def test_the_embedding_sum_is_the_ordered_sum_of_the_masked_rows():
    rng = np.random.default_rng(1)
    table = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    items = torch.from_numpy(rng.integers(0, 30, size=(6, 11)))
    weights = torch.from_numpy(rng.choice([0.0, 1.0], size=(6, 11, 1)).astype(np.float32))  # a mask
    want = ordered_sum(table[items] * weights, dim=-2)
    assert torch.equal(ordered_embedding_sum(table, items, weights), want)
    one = torch.func.vmap(lambda i, w: ordered_embedding_sum(table, i, w))(items, weights)
    assert torch.equal(one, want)
    assert ordered_embedding_sum(table, items[:, :0], weights[:, :0]).shape == (6, 8)


def test_item_dots_of_the_real_entries_only_give_the_padded_batchs_values_and_gradients():
    from recmaml.ordered import item_dots

    rng = np.random.default_rng(2)
    vectors = torch.from_numpy(rng.normal(size=(50, 16)).astype(np.float32))
    items = torch.from_numpy(rng.integers(0, 50, size=(9, 6)))
    mask = torch.from_numpy(rng.choice([0.0, 1.0], size=(9, 6)).astype(np.float32))
    mask[4] = 0.0  # a user with no entry
    users = torch.from_numpy(rng.normal(size=(9, 16)).astype(np.float32))
    grad = torch.from_numpy(rng.normal(size=(9, 6)).astype(np.float32)) * mask
    full, part = users.clone().requires_grad_(True), users.clone().requires_grad_(True)
    dots_all, dots_real = item_dots(vectors, items, full), item_dots(vectors, items, part, mask)
    assert torch.equal(dots_all * mask, dots_real)
    (g_all,), (g_real,) = (torch.autograd.grad((d * grad).sum(), u) for d, u in ((dots_all, full), (dots_real, part)))
    assert torch.equal(g_all, g_real) and not g_real[4].any()
    # each user's gradient: its entries' products added in support order in float64
    want = np.zeros((9, 16), dtype=np.float64)
    for b in range(9):
        for s in range(6):
            want[b] += (grad[b, s] * vectors[items[b, s]]).numpy().astype(np.float64)
    assert np.array_equal(g_real.numpy(), want.astype(np.float32))
