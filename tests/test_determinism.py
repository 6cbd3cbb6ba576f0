"""Determinism: a user's scores and ranked list do not depend on the batch it is served in, on the
threads serving runs on, or on how `recmaml recommend` cuts its input into chunks; users come out in
ascending id order; two fits with one seed give the same weights and the same lists."""

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from safetensors.numpy import load_file

from recmaml import Interactions, MetaRecommender
from recmaml.config import PRIOR_BUCKETS, PRIOR_WEIGHT_FIELDS
from recmaml.connectors import iter_user_chunks

from rankings import RELATIVE, assert_same_lists, assert_same_ranking  # the promise, which holds on any CPU (tests/rankings.py)


@pytest.fixture(scope="module")
def uneven_history(tiny_model_dir):
    """300 users with 1 to 40 rows each (supports padded to every length), ids spread over 1..10^9 so that
    numeric and text order differ, rows shuffled."""
    rng = np.random.default_rng(7)
    catalog = MetaRecommender.load(tiny_model_dir).items.ids
    users = rng.choice(np.arange(1, 10**9), 300, replace=False)
    rows = [(user, item) for user in users
            for item in rng.choice(catalog, rng.integers(1, 41), replace=False)]
    order = rng.permutation(len(rows))
    return pl.DataFrame({"user_id": [rows[i][0] for i in order], "item_id": [rows[i][1] for i in order]})


def _relative_gap(scores, reference):
    scale = np.abs(reference).max(axis=1, keepdims=True)
    return float((np.abs(scores - reference) / scale).max())


@pytest.mark.parametrize("priors", ["as fitted", "every prior weighted"])
def test_scores_do_not_depend_on_the_batch_or_the_threads(tiny_model_dir, uneven_history, priors):
    history = Interactions.from_ids(uneven_history["user_id"].to_numpy(), uneven_history["item_id"].to_numpy())
    reference = None
    weighted = {} if priors == "as fitted" else {
        name: (2.0,) * len(PRIOR_BUCKETS) for name in PRIOR_WEIGHT_FIELDS}  # EASE's and popularity's terms
    for threads in (1, 2):
        rec = MetaRecommender.load(tiny_model_dir)
        rec.config = rec.config.replace(serve={"threads": threads, **weighted})
        for batch_size in (4096, 1, 7):
            scores = rec.score(history, batch_size=batch_size)
            lists = rec.recommend(history, k=10, batch_size=batch_size)
            if reference is None:
                reference = scores, lists
                continue
            assert _relative_gap(scores, reference[0]) <= RELATIVE, (threads, batch_size)
            assert_same_lists(lists, reference[1])


def test_candidate_scores_do_not_depend_on_the_batch(tiny_model_dir, uneven_history):
    rec = MetaRecommender.load(tiny_model_dir)
    rng = np.random.default_rng(3)
    users = uneven_history["user_id"].unique().to_numpy()
    candidates = pl.DataFrame({"user_id": np.repeat(users, 8),
                               "item_id": rng.choice(rec.items.ids, 8 * len(users))}).unique()
    lists = [rec.recommend(uneven_history, k=5, candidates=candidates, batch_size=size) for size in (4096, 1, 7)]
    for other in lists[1:]:
        assert_same_lists(other, lists[0])


def _recommend(model_dir, history, out, *flags):
    done = subprocess.run([sys.executable, "-m", "recmaml", "recommend", "--model", str(model_dir), "--history",
                           str(history), "--out", str(out), "--k", "10", "--quiet", *flags],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return pl.read_csv(out)


def test_chunk_rows_and_batch_size_change_neither_the_order_nor_the_lists(tiny_model_dir, uneven_history, tmp_path):
    history = tmp_path / "history.csv"
    uneven_history.write_csv(history)
    runs = [_recommend(tiny_model_dir, history, tmp_path / f"out{i}.csv", *flags) for i, flags in enumerate((
        [], ["--chunk-rows", "97", "--batch-size", "1"], ["--chunk-rows", "1000", "--batch-size", "7"],
        ["--chunk-rows", "2500", "--batch-size", "4096", "--threads", "1"]))]
    served = runs[0]["user_id"].unique(maintain_order=True).to_list()
    assert served == sorted(set(uneven_history["user_id"].to_list()))  # ascending ids, every user once
    for other in runs[1:]:
        assert_same_lists(other, runs[0])


def test_chunks_come_in_ascending_id_order_with_each_user_in_one(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"user-{n}" for n in rng.integers(0, 10**6, 400)] + ["heavy"] * 300  # one user larger than a chunk
    path = tmp_path / "log.jsonl"
    pl.DataFrame({"user_id": ids, "item_id": rng.permutation(len(ids))}).sample(fraction=1.0, shuffle=True,
                                                                                  seed=2).write_ndjson(path)
    chunks = [chunk.users.ids[np.unique(chunk.user_idx)] for chunk in iter_user_chunks(path, chunk_rows=60)]
    assert len(chunks) > 3
    flat = np.concatenate(chunks)
    np.testing.assert_array_equal(flat, np.unique(ids))  # sorted across chunks, each user exactly once


def test_two_fits_with_one_seed_give_the_same_weights_and_lists(taste_log, tiny_config, tmp_path):
    config = tiny_config.replace(meta={"epochs": 3})
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        MetaRecommender(config).fit(taste_log).save(path)
    first, second = (load_file(path / "weights.safetensors") for path in paths)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    lists = [MetaRecommender.load(path).recommend(taste_log, k=5) for path in paths]
    np.testing.assert_array_equal(lists[0].item_id, lists[1].item_id)
    np.testing.assert_array_equal(lists[0].score, lists[1].score)


def test_the_list_comparison_lets_near_ties_swap_and_nothing_else():
    reference_items, reference_scores = np.array([5, 6, 7, 8]), np.array([3.0, 2.0, 2.0 - 1e-7, 1.0])
    assert_same_ranking(reference_items, reference_scores, reference_items, reference_scores)
    # 6 and 7 within the margin of each other: either order; 8 cut at k for 9, tied with it
    assert_same_ranking([5, 7, 6, 8], [3.0, 2.0 - 1e-7, 2.0, 1.0], reference_items, reference_scores)
    assert_same_ranking([5, 6, 7, 9], [3.0, 2.0, 2.0 - 1e-7, 1.0 + 1e-7], reference_items, reference_scores)
    with pytest.raises(AssertionError, match="not a tie"):  # a real reorder
        assert_same_ranking([6, 5, 7, 8], [3.0, 2.0, 2.0 - 1e-7, 1.0], reference_items, reference_scores)
    with pytest.raises(AssertionError):  # a score off by more than the margin
        assert_same_ranking(reference_items, [3.0, 2.0, 2.0 - 1e-7, 1.001], reference_items, reference_scores)
