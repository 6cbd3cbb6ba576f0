"""Arithmetic whose result does not depend on the batch a row is served in or on the thread count: matrix
products of a fixed shape (rows_mm), sums in index order (ordered_sum) and per-item dot products
(item_dots). Serving promises a user the same scores in any batch, chunk size or load (tests/test_determinism.py);
torch's own kernels choose their summation order by shape and threads.
"""

from __future__ import annotations

import torch

SERVING_ROWS = 8  # serving's matrix products have a multiple of this many rows (see rows_mm)

SERVING_DEPTH = 256  # and sum over at most this many terms; longer ones are cut and added in order


def rows_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, padded: bool = False) -> torch.Tensor:
    """a @ b (+ bias) with a's rows padded to a multiple of SERVING_ROWS (at least one block) and the
    inner dimension cut into pieces of at most SERVING_DEPTH terms, whose products are added in order.

    Why: MKL's float32 products choose their kernel, and so their summation order, by shape and by thread
    count: a user's row differs in its last bits between a batch of 7 and one of 4096 (a few rows take
    another kernel), and a long inner dimension is split between threads. Serving would then give other
    bits for a user in another batch, with another --chunk-rows or on a busier machine (serve.threads =
    'auto'). With at least SERVING_ROWS rows and short inner products, every row comes out the same in
    any batch and with any thread count (tests/test_determinism.py checks both). On this project's
    machines a product of 1 or 2 rows takes another kernel and 4 rows or more give the bits of a
    4,096-row product (checked for 4 to 64 rows, 1 and 2 threads, widths 32 to 256, with and without a
    bias and accumulated): 8 keeps a margin while one user's products cost an eighth of what 64 rows
    cost (the single-user fast path, recommend_user). The cost of the padding, measured with 64 rows on
    100,000 cold users of benchmarks/scale.py's catalog on one thread: adaptation 4% slower (12.7 s
    against 12.3 s with plain products). padded=True returns the product with its padding rows (a's rows
    rounded up): a caller that feeds it to another rows_mm saves the copy that padding it again would make."""
    rows, depth = a.shape
    pad = (-rows) % SERVING_ROWS if rows else SERVING_ROWS
    if pad:
        a = torch.cat([a, a.new_zeros(pad, depth)])
    if depth <= SERVING_DEPTH:  # one piece (most of serving's products): no slicing
        out = torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)
        return out if padded else out[:rows]
    out = None
    for lo in range(0, depth, SERVING_DEPTH):
        part, weights = a[:, lo:lo + SERVING_DEPTH], b[lo:lo + SERVING_DEPTH]
        if out is not None:
            out.addmm_(part, weights)
        elif bias is None:
            out = torch.mm(part, weights)
        else:
            out = torch.addmm(bias, part, weights)
    return out if padded else out[:rows]


def ordered_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x summed over `dim` in index order with a float64 accumulator, so that zeros padded at the end leave
    the result's bits alone. torch's sum reduces in an order that follows the length (vectorized and
    pairwise), so a user's padded support would round with the longest support of its batch. One add per
    position: the bits of CPU cumsum's last element (which also accumulates in float64, in order), at a
    fraction of its cost, as cumsum writes every partial sum. Works under torch.func.vmap."""
    if x.shape[dim] == 0:
        return x.sum(dim=dim)
    acc = x.select(dim, 0).to(torch.float64, copy=True)
    for position in range(1, x.shape[dim]):
        acc.add_(x.select(dim, position))
    return acc.to(x.dtype)


def ordered_embedding_sum(table: torch.Tensor, items: torch.Tensor, mask: torch.Tensor,
                          table64: torch.Tensor | None = None) -> torch.Tensor:
    """ordered_sum(table[items] * mask, dim=-2) for items (..., S) and a 0/1 mask (..., S, 1), bit for bit,
    without the (..., S, width) array: a masked position reads a row of zeros, and each position's rows are
    gathered from the float64 table and added in turn (the set encoder's sum over a support: 4,096 users x
    20 items x 256 wide was 84 MB, read three times). table64: zero_row_float64(table), when the caller keeps
    one (serving's weights do not change between batches)."""
    if table64 is None:
        table64 = zero_row_float64(table)
    index = torch.where(mask[..., 0] > 0, items, table.shape[0]).movedim(-1, 0).contiguous()
    if index.shape[0] == 0:
        return table.new_zeros(*items.shape[:-1], table.shape[-1])
    shape = (*index.shape[1:], table.shape[-1])

    def rows(position: int) -> torch.Tensor:  # index_select: a plain gather, cheaper than advanced indexing
        return table64.index_select(0, index[position].reshape(-1)).view(shape)

    acc = rows(0)  # a new tensor: the in-place adds below write nothing shared
    for position in range(1, index.shape[0]):
        acc.add_(rows(position))
    return acc.to(table.dtype)


def zero_row_float64(table: torch.Tensor) -> torch.Tensor:
    """`table` (n, width) in float64 with a row of zeros appended (row n): what masked positions read."""
    return torch.cat([table.detach().to(torch.float64), table.new_zeros(1, table.shape[1], dtype=torch.float64)])


class _ItemDots(torch.autograd.Function):
    """(B, S) products u_b . v_i of the real entries (rows, cols) of a padded (B, S) batch, 0 at padding,
    differentiable wrt the users only (serving never differentiates the item side). The backward adds each
    user's entries in support order in float64 (index_add_ adds in index order), so the gradient (and the
    adapted user) has the bits of an ordered_sum over the padded row, whatever the batch's padded length."""

    @staticmethod
    def forward(ctx, picked, users, rows, cols, shape):
        ctx.save_for_backward(picked, rows, cols)
        ctx.batch = shape[0]
        out = picked.new_zeros(shape)
        out[rows, cols] = (picked * users.index_select(0, rows)).sum(dim=1)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        picked, rows, cols = ctx.saved_tensors
        terms = grad_out[rows, cols].unsqueeze(1) * picked
        total = terms.new_zeros(ctx.batch, picked.shape[1], dtype=torch.float64)
        return None, total.index_add_(0, rows, terms.to(torch.float64)).to(picked.dtype), None, None, None


def item_dots(item_vectors: torch.Tensor, items: torch.Tensor, users: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S) products u_b . v_i of each user's items (B, S), in float32; with a (B, S) mask, only its
    nonzero entries are computed (0 elsewhere: a padded support's padding costs nothing). A product and a
    sum over the embedding dimension rather than a bmm: that sum has the same length and order for every
    entry, where the bmm's kernel (and so the last bits of its result and of the gradient it passes back)
    follows the batch's padded shape. Sums over S of these values are taken in float64 by the callers, for
    the same reason; the gradient's sum over S is ordered (_ItemDots)."""
    # row-major: by user, then support position (every entry when no mask is given)
    rows, cols = (torch.ones_like(items, dtype=torch.bool) if mask is None else mask != 0).nonzero(as_tuple=True)
    picked = item_vectors.detach().index_select(0, items[rows, cols])
    return _ItemDots.apply(picked, users, rows, cols, tuple(items.shape))
