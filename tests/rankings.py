"""What serving promises on any machine when a user is computed in batches of other shapes (one user alone,
a batch of the service, a frame of many users): the same scores to within RELATIVE of the list's largest
score, and the same list, except that two items whose scores lie within that margin of each other may swap.

Why not the bit: the matrix kernels a CPU's BLAS picks (and so the order of a product's sums) follow the
shape of the product. recmaml pads serving's products to a fixed number of rows (recmaml.ordered), which
gives one user the bits of a large batch on the machines checked, but another CPU may pick another kernel
for a few rows and round the last bit of a float32 score differently (seen: 1.19e-07 on a score near 1).
Comparisons of one computation with itself (a model with its saved copy, ids with positions) stay exact.
"""

from __future__ import annotations

import numpy as np

from recmaml import RankedLists

RELATIVE = 1e-6  # of the largest score of the list; float32 rounds at 6e-8 relative


def margin_of(reference_scores) -> float:
    """The absolute margin scores may differ by: RELATIVE of the largest magnitude (at least of 1)."""
    scores = np.asarray(reference_scores, dtype=np.float64)
    finite = np.abs(scores[np.isfinite(scores)])
    return RELATIVE * max(float(finite.max(initial=0.0)), 1.0)


def assert_close_scores(scores, reference, margin: float | None = None) -> None:
    """Scores equal to the reference's within the margin; NaN and inf where the reference has them."""
    scores, reference = np.asarray(scores, np.float64), np.asarray(reference, np.float64)
    margin = margin_of(reference) if margin is None else margin
    np.testing.assert_allclose(scores, reference, rtol=0, atol=margin)


def assert_same_ranking(items, scores, ref_items, ref_scores) -> None:
    """One user's list (best first) and its scores equal the reference's, but for near ties: at a rank where
    the items differ, the item shown must score within twice the margin of the reference's item there
    (in the reference itself, or, for an item the reference cut at k, against the reference's last score)."""
    items, ref_items = np.asarray(items), np.asarray(ref_items)
    scores, ref_scores = np.asarray(scores, np.float64), np.asarray(ref_scores, np.float64)
    assert len(items) == len(ref_items), f"{len(items)} items against {len(ref_items)}"
    margin = margin_of(ref_scores)
    assert_close_scores(scores, ref_scores, margin)  # the r-th best score moves no more than any score
    ref_score_of = dict(zip(ref_items.tolist(), ref_scores.tolist()))
    for rank in np.flatnonzero(items != ref_items):
        item = items[rank].item()
        its_reference = ref_score_of.get(item, ref_scores[-1] if len(ref_scores) else np.nan)
        assert abs(its_reference - ref_scores[rank]) <= 2 * margin, (
            f"rank {rank + 1}: item {item} (reference score {its_reference!r}) instead of {ref_items[rank]} "
            f"({ref_scores[rank]!r}): not a tie within {2 * margin:.3g}")


def assert_same_lists(lists, reference) -> None:
    """Every user's list (RankedLists or frames with user_id, item_id, score, rank) as the reference's, to
    assert_same_ranking's promise: the same users in the same order, each list compared alone."""
    users, items, scores, ranks = _columns(lists)
    ref_users, ref_items, ref_scores, ref_ranks = _columns(reference)
    np.testing.assert_array_equal(users, ref_users)
    np.testing.assert_array_equal(ranks, ref_ranks)
    starts = np.flatnonzero(ranks == 1)
    for start, stop in zip(starts, np.r_[starts[1:], len(ranks)]):
        assert_same_ranking(items[start:stop], scores[start:stop], ref_items[start:stop], ref_scores[start:stop])


def _columns(lists):
    if isinstance(lists, RankedLists):
        return lists.user_id, lists.item_id, lists.score, lists.rank
    frame = lists.to_pandas() if hasattr(lists, "to_pandas") else lists  # polars, else pandas
    return tuple(frame[column].to_numpy() for column in RankedLists.COLUMNS)
