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


def test_the_embedding_sum_is_the_ordered_sum_of_the_weighted_rows_with_and_without_gradients():
    rng = np.random.default_rng(1)
    table = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    items = torch.from_numpy(rng.integers(0, 30, size=(6, 11)))
    weights = torch.from_numpy(rng.choice([0.0, 1.0], size=(6, 11, 1)).astype(np.float32))
    want = ordered_sum(table[items] * weights, dim=-2)
    assert torch.equal(ordered_embedding_sum(table, items, weights), want)
    leaf = table.clone().requires_grad_(True)
    got = ordered_embedding_sum(leaf, items, weights)
    assert torch.equal(got, want)
    got.sum().backward()
    assert torch.equal(leaf.grad, torch.zeros_like(table).index_put_((items.flatten(),),
                                                                       weights.flatten()[:, None].expand(-1, 8),
                                                                       accumulate=True))
    one = torch.func.vmap(lambda i, w: ordered_embedding_sum(table, i, w))(items, weights)
    assert torch.equal(one, want)
    assert ordered_embedding_sum(table, items[:, :0], weights[:, :0]).shape == (6, 8)
