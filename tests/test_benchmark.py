"""The benchmark suite: protocols, metrics against hand-computed values, intervals, resume, and a smoke
run of `recmaml benchmark` with every system on a tiny planted log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recmaml.benchmark import (
    SYSTEMS, BenchmarkSpec, _cell_metrics, make_splits, ranking_cell, read_cells, log_relevance_threshold,
    resolve_systems, run_benchmark,
)
from recmaml.data import Interactions
from recmaml.errors import DataError
from recmaml.metrics import random_ndcg, reciprocal_ranks
from recmaml.protocol import ColdSplit, kshot_split, query_ndcg_per_user
from recmaml.report import interval, paired, summarize
from recmaml.synthetic import clustered_interactions
from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def log():
    return clustered_interactions(300, 120, min_per_user=4, max_per_user=30, seed=3)


# ------------------------------------------------------------------------------------------ protocols


def _ids(inter: Interactions) -> set:
    return set(inter.users.ids[np.unique(inter.user_idx)].tolist())


@pytest.mark.parametrize("order", ["random", "temporal"])
def test_kshot_split_is_user_disjoint_with_supports_of_exactly_k(log, order):
    split = kshot_split(log, order=order, seed=0)
    assert not _ids(split.warm) & _ids(split.cold)
    assert _ids(split.warm) | _ids(split.cold) == _ids(log)
    assert abs(split.cold.n_users - 0.2 * log.n_users) <= 1
    for k in (1, 3, 5, 20):
        at = split.at(k)
        sizes = np.bincount(at.cold_support.user_idx, minlength=at.n_cold)
        assert (sizes == k).all()
        counts = np.bincount(split.cold.user_idx, minlength=split.cold.n_users)
        assert at.n_cold == int((counts > k).sum())  # every cold user with more than k rows, no other
        assert (np.bincount(at.cold_query.user_idx, minlength=at.n_cold) >= 1).all()
        # support and query partition each evaluated user's rows
        pairs_s = set(zip(at.cold_support.user_ids(), at.cold_support.item_ids()))
        pairs_q = set(zip(at.cold_query.user_ids(), at.cold_query.item_ids()))
        assert not pairs_s & pairs_q


def test_temporal_supports_are_the_earliest_interactions(log):
    split = kshot_split(log, order="temporal", seed=1)
    at = split.at(5)
    for user in range(at.n_cold):
        latest_support = at.cold_support.timestamp[at.cold_support.user_idx == user].max()
        earliest_query = at.cold_query.timestamp[at.cold_query.user_idx == user].min()
        assert latest_support <= earliest_query


def test_supports_of_growing_k_are_nested(log):
    split = kshot_split(log, order="random", seed=2)
    small, large = split.at(3), split.at(10)
    small_pairs = set(zip(small.cold_support.user_ids(), small.cold_support.item_ids()))
    large_users = set(large.cold_support.user_ids().tolist())
    large_pairs = set(zip(large.cold_support.user_ids(), large.cold_support.item_ids()))
    assert {p for p in small_pairs if p[0] in large_users} <= large_pairs


def test_temporal_protocol_refused_without_timestamps(log):
    no_time = Interactions(log.user_idx, log.item_idx, log.users, log.items, rating=log.rating)
    with pytest.raises(DataError, match="no timestamps"):
        kshot_split(no_time, order="temporal")
    with pytest.raises(DataError, match="temporal protocol needs timestamps"):
        run_benchmark(no_time, BenchmarkSpec(name="x", protocols=("temporal",), systems=("popularity",)), "/tmp/none")


def test_melu_split_hides_ten_and_validation_is_carved_from_warm(log):
    splits = make_splits(log, "melu", 0, (), 0.2)
    test, val = splits.test["melu"], splits.val["melu"]
    assert (np.bincount(test.cold_query.user_idx) == 10).all()
    assert _ids(val.cold_support) <= _ids(splits.warm)
    assert not _ids(val.cold_support) & _ids(test.cold_support)


def test_no_support_item_is_ranked():
    from recmaml.data import Vocabulary

    # three cold users, five items; the support items score highest but must never be ranked
    users, items = Vocabulary(np.arange(3)), Vocabulary(np.arange(5))
    support = Interactions(np.array([0, 1, 2]), np.array([0, 1, 2]), users, items)
    query = Interactions(np.array([0, 1, 2]), np.array([3, 3, 4]), users, items)
    scores = np.tile(np.array([9.0, 8.0, 7.0, 1.0, 0.0], np.float32), (3, 1))
    cell = ranking_cell(scores, ColdSplit(support, support, query), None)
    # each user's own support item is out: item 3 ranks 3rd (users 0 and 1), item 4 ranks 4th (user 2)
    assert cell["mrr"] == pytest.approx(np.mean([1 / 3, 1 / 3, 1 / 4]))
    assert cell["ndcg@20"] == pytest.approx(np.mean([1 / math.log2(4), 1 / math.log2(4), 1 / math.log2(5)]))


# -------------------------------------------------------------------------------------------- metrics


def test_reciprocal_ranks_by_hand():
    scores = np.array([[0.9, 0.5, 0.1, -np.inf], [0.2, 0.3, 0.4, 0.1]])
    # user 0 relevant: item 2 (rank 3) and item 1 (rank 2) -> 1/2; user 1: item 0 (rank 3); user 2: none
    rr = reciprocal_ranks(np.vstack([scores, np.zeros((1, 4))]), [0, 0, 1], [2, 1, 0], 3)
    assert rr[0] == pytest.approx(0.5)
    assert rr[1] == pytest.approx(1 / 3)
    assert np.isnan(rr[2])


def test_ranking_cell_ndcg_by_hand():
    from recmaml.data import Vocabulary

    items = Vocabulary(np.arange(4))
    users = Vocabulary(np.arange(1))
    support = Interactions(np.array([0]), np.array([0]), users, items)
    query = Interactions(np.array([0, 0]), np.array([1, 3]), users, items, rating=np.array([5.0, 2.0], np.float32))
    scores = np.array([[10.0, 1.0, 3.0, 2.0]], np.float32)  # ranking (support 0 excluded): 2, 3, 1
    cell = ranking_cell(scores, ColdSplit(support, support, query), relevance_threshold=4.0)  # relevant: item 1 only
    assert cell["ndcg@20"] == pytest.approx(1 / math.log2(4))  # rank 3
    assert cell["recall@20"] == 1.0 and cell["mrr"] == pytest.approx(1 / 3)
    every = ranking_cell(scores, ColdSplit(support, support, query), relevance_threshold=None)  # items 1 and 3
    ideal = 1 + 1 / math.log2(3)
    assert every["ndcg@20"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal)


def test_random_query_ndcg_by_hand():
    # gains of two items 3 and 0: a random order puts the good one first half of the time
    expected_at1 = random_ndcg(np.array([[3.0, 0.0]]), np.array([[1, 1]]), 1)[0]
    assert expected_at1 == pytest.approx(0.5)
    expected_at3 = random_ndcg(np.array([[3.0, 0.0]]), np.array([[1, 1]]), 3)[0]
    assert expected_at3 == pytest.approx((1.5 * (1 + 1 / math.log2(3))) / 3.0)


def test_query_ndcg_perfect_and_random_expectation(log):
    query = Interactions(np.array([0, 0, 0]), np.array([0, 1, 2]), log.users, log.items,
                         rating=np.array([1.0, 5.0, 3.0], np.float32))
    assert query_ndcg_per_user(query.rating, query, 3)[0] == pytest.approx(1.0)
    worst = query_ndcg_per_user(-query.rating, query, 1)[0]
    assert worst == pytest.approx(1.0 / 31.0)  # gain 2^1-1 over the ideal 2^5-1
    rand = query_ndcg_per_user(query.rating, query, 1, random=True)[0]
    assert rand == pytest.approx(np.mean([1, 31, 7]) / 31)


def test_relevance_threshold_follows_the_scale():
    def log_with(ratings):
        n = len(ratings)
        return Interactions.from_ids(np.arange(n), np.arange(n), rating=np.array(ratings, np.float32))

    assert log_relevance_threshold(log_with([1, 2, 3, 4, 5])) == 4.0
    assert log_relevance_threshold(log_with(np.arange(1, 9) / 2)) == 3.5  # FilmTrust: 0.5..4
    assert log_relevance_threshold(log_with(np.arange(1, 11))) == 8.0
    assert log_relevance_threshold(Interactions.from_ids([0], [0])) is None


# -------------------------------------------------------------------------------- intervals, paired


def test_interval_is_a_t_interval():
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))
    assert math.isnan(interval([0.5])[1])


def test_paired_difference_detects_a_real_gap_and_not_noise():
    gen = np.random.default_rng(0)
    base = gen.random(500)
    cells = lambda values, seed: {"seed": seed, "per_k": {"5": {"v": list(values)}}}  # noqa: E731
    better = paired([cells(base + 0.05, 0)], [cells(base, 0)], "5", "v")
    assert better["mean"] == pytest.approx(0.05) and better["beyond_noise"]
    noise = paired([cells(base + gen.normal(0, 0.1, 500), 0)], [cells(base, 0)], "5", "v")
    assert abs(noise["mean"]) < noise["half"] * 1.5
    with_missing = paired([cells([0.5, None, 0.7], 0)], [cells([0.1, 0.2, None], 0)], "5", "v")
    assert with_missing["users"] == 1


# ---------------------------------------------------------------------------------- systems, running


def test_resolve_systems():
    assert resolve_systems("all") == tuple(SYSTEMS)
    assert resolve_systems("recmaml_0_steps") == ("recmaml_maml", "recmaml_0_steps")
    with pytest.raises(DataError, match="unknown system"):
        resolve_systems("nope")


def test_resume_reads_finished_cells_back(log, tmp_path, tiny_config):
    spec = BenchmarkSpec(name="tiny", protocols=("random",), ks=(1, 5), seeds=(0,),
                         systems=("popularity", "item_mean"), config=tiny_config)
    run_benchmark(log, spec, tmp_path)
    cell = tmp_path / "cells/tiny/random/seed0/popularity.json"
    first = cell.read_bytes()
    cell.write_text(cell.read_text().replace('"system":"popularity"', '"system":"popularity","marker":1'))
    marked = cell.read_bytes()
    run_benchmark(log, spec, tmp_path)  # nothing recomputed: the marked file stays as it is
    assert cell.read_bytes() == marked != first
    (tmp_path / "cells/tiny/random/seed0/item_mean.json").unlink()
    run_benchmark(log, spec, tmp_path)  # only the missing cell is computed again
    assert cell.read_bytes() == marked
    assert (tmp_path / "cells/tiny/random/seed0/item_mean.json").is_file()


def test_smoke_every_system_through_the_cli(tmp_path):
    """`recmaml benchmark` on a tiny CSV log with string ids: every system, two protocols, 2 seeds;
    cells, results.md/json and plots appear, every metric is finite, and the report compares."""
    import pandas as pd

    from recmaml.cli import main

    log = clustered_interactions(150, 60, min_per_user=4, max_per_user=30, seed=3)
    frame = pd.DataFrame({"user_id": [f"u{u}" for u in log.user_ids()], "item_id": [f"i{i}" for i in log.item_ids()],
                          "rating": log.rating, "timestamp": log.timestamp})
    path = tmp_path / "tiny.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "bench"
    code = main(["--quiet", "benchmark", "--data", str(path), "--protocol", "random,melu", "--support-sizes", "0,1,5",
                 "--seeds", "0,1", "--systems", "all", "--config", "configs/tiny.toml", "--budget-seconds", "1", "--grid", "minimal",
                 "--out", str(out)])
    assert code == 0
    cells = read_cells(out)
    assert len(cells) == 2 * (2 * len(SYSTEMS) - 1)  # the blend ranks: not on the MeLU protocol
    for cell in cells:
        for k, metrics in cell["per_k"].items():
            assert np.isfinite(metrics["ndcg@20"]), (cell["system"], k)
            assert 0.0 <= metrics["ndcg@20"] <= 1.0
        if cell["protocol"] == "melu" and cell["rating"]:
            assert np.isfinite(cell["per_k"]["melu"]["mae"])
    summary = summarize(cells)
    block = summary["tiny"]["random"]
    assert set(block["ks"]) == {"0", "1", "5"}
    assert all(np.isfinite(row["5"]["ndcg@20"][1]) for row in block["systems"].values())  # intervals
    assert block["comparison"]["5"]["ndcg@20"]["baseline"] in {n for n, s in SYSTEMS.items() if s.family == "baseline"}
    assert "mae" in summary["tiny"]["melu"]["comparison"]["melu"]
    text = (out / "results.md").read_text()
    assert "### tiny, random protocol" in text and "recmaml_transfer" in text
    assert (out / "plots/tiny.png").stat().st_size > 1000  # one figure per data set, its MeLU panel included
    assert "![tiny](plots/tiny.png)" in text  # linked relative to the page
    reproduce = [line for line in text.splitlines() if line.startswith("Reproduce: ")]
    assert reproduce and not any(" /" in line for line in reproduce), reproduce[:1]  # no machine's absolute paths
    assert json.loads((out / "results.json").read_text())["tiny"]["melu"]["cells"] == 2 * (len(SYSTEMS) - 1)


def test_cli_errors_are_one_line(tmp_path, capsys, log):
    from recmaml.cli import main

    assert main(["benchmark", "--out", str(tmp_path / "b")]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(tmp_path / "b"), "--report-only"]) == 2
    assert "no finished benchmark cells" in capsys.readouterr().err
    assert main(["benchmark", "--data", "../shared/nope.csv", "--out", str(tmp_path / "b")]) == 2
    capsys.readouterr()
    assert main(["benchmark", "--data", "x.csv", "--support-sizes", "a,b", "--out", str(tmp_path / "b")]) == 2
    assert "spelled" not in capsys.readouterr().err
    # the former spelling still works, with a note (--k is a list length everywhere else)
    assert main(["benchmark", "--data", "x.csv", "--k", "a,b", "--out", str(tmp_path / "b")]) == 2
    assert "is spelled --support-sizes now" in capsys.readouterr().err


def test_tuning_picks_the_best_validation_point_and_never_sees_test_users(log):
    from recmaml.benchmark import CellContext, System, _Baseline, run_system
    from recmaml.baselines import Popularity

    splits = make_splits(log, "random", 0, (5,), 0.2)
    warm_sizes = []

    def fit(warm, ctx, good):
        warm_sizes.append(warm.n_users)
        model = Popularity().fit(warm)
        if not good:  # the reversed popularity order: clearly worse on validation users
            model.counts = -model.counts
        return _Baseline(model)

    system = System("fake", "baseline", False, fit, lambda ctx: {"good": [False, True]})
    ctx = CellContext("random", 4.0, has_ratings=True, budget_seconds=0, grid="full")
    record = run_system(system, log, splits, ctx, {})
    assert record["params"] == {"good": True}
    assert [g["params"]["good"] for g in record["grid"]] == [False, True]
    assert record["grid"][1]["validation"] > record["grid"][0]["validation"]
    # two validation fits on the validation warm users, then one on all warm users
    assert warm_sizes == [splits.val_warm.n_users] * 2 + [splits.warm.n_users]
    test_users = set(splits.test[5].cold_support.users.ids.tolist())
    assert not test_users & set(splits.val_warm.users.ids.tolist())


def test_recmaml_cells_are_the_fitted_product_served_with_the_protocols_history_kind(log, tiny_config):
    # the benchmark tunes nothing of recmaml's: one fit on the warm users, as `recmaml fit` ships it (the
    # serving scales its own validation users chose), served as `recommend` serves a temporal split's
    # users ('first' histories) and a random split's ('sample')
    from recmaml.benchmark import SYSTEMS, CellContext, run_system

    for protocol, kind in (("random", "sample"), ("temporal", "first")):
        splits = make_splits(log, protocol, 0, (3,), 0.2)
        ctx = CellContext(protocol, 4.0, has_ratings=True, budget_seconds=0, grid="full", config=tiny_config)
        cache = {}
        record = run_system(SYSTEMS["recmaml_maml"], log, splits, ctx, cache)
        assert record["params"] == {} and record["grid"] == []
        fitted = cache["recmaml_maml"]
        assert fitted.history_kind == kind
        assert record["resolved_config"]["serve"]["sample_scales"] != "auto"
        support = splits.test[3].cold_support
        expected = fitted.rec.score(support, users=support.users.ids, items=support.items.ids, history_kind=kind)
        np.testing.assert_array_equal(fitted.scores(splits.test[3]), expected)


def test_recent_popularity_counts_the_window_before_each_users_time():
    from recmaml.baselines import RecentPopularity
    from recmaml.benchmark import user_times

    day = 86400
    # item 0 is liked in the first year, item 1 in the third; item 2 is rated low throughout
    times = np.r_[np.arange(0, 300, 3), np.arange(730, 1030, 3), np.arange(0, 1030, 10)] * day
    items = np.r_[np.zeros(100), np.ones(100), np.full(103, 2)].astype(int)
    ratings = np.r_[np.full(200, 5.0), np.full(103, 1.0)].astype(np.float32)
    warm = Interactions.from_ids(np.arange(len(items)) % 50, items, rating=ratings, timestamp=times)
    model = RecentPopularity(window_days=180, threshold=4.0).fit(warm)
    scores = model.score_at(np.array([200.0, 1000.0, 1500.0]) * day)
    assert scores[0].argmax() == 0 and scores[1].argmax() == 1
    assert scores[2, :2].max() < 1.0  # nothing in the window: only the all-time tie-break is left
    assert scores[2, 0] == scores[2, 1] > scores[2, 2]  # all-time counts order what the window cannot
    # a user's time: its latest revealed interaction, or with nothing revealed its first hidden one
    from recmaml.data import Vocabulary

    cold = Vocabulary(np.array([0, 1]))
    split = ColdSplit(warm=warm, cold_support=Interactions.from_ids(np.array([0]), np.array([0]), timestamp=np.array([5]),
                                                                    users=cold, items=warm.items),
                      cold_query=Interactions.from_ids(np.array([0, 1, 1]), np.array([1, 1, 2]),
                                                       timestamp=np.array([9, 7, 3]), users=cold, items=warm.items))
    np.testing.assert_array_equal(user_times(split), [5, 3])


def test_rating_metrics_only_for_rating_models(log):
    splits = make_splits(log, "random", 0, (5,), 0.2)
    split = splits.test[5]
    scores = np.zeros((split.n_cold, log.n_items), np.float32) + 3.0
    assert "mae" in _cell_metrics(scores, split, "random", True, 4.0)
    assert "mae" not in _cell_metrics(scores, split, "random", False, 4.0)


def test_one_recmaml_fit_serves_both_protocols_of_a_seed(log, tmp_path, tiny_config, monkeypatch):
    # the random and temporal splits of one seed hold out the same users: recmaml (tuned on nothing) fits once
    from recmaml.recommender import MetaRecommender

    fits = []
    original = MetaRecommender.fit
    monkeypatch.setattr(MetaRecommender, "fit", lambda self, warm, **kw: fits.append(warm.n_users) or original(self, warm, **kw))
    spec = BenchmarkSpec(name="planted", protocols=("random", "temporal"), ks=(3,), seeds=(0,),
                         systems=("recmaml_maml",), budget_seconds=0, config=tiny_config)
    run_benchmark(log, spec, tmp_path)
    cells = {c["protocol"]: c for c in read_cells(tmp_path)}
    assert len(fits) == 1 and cells["temporal"].get("fit_shared") and not cells["random"].get("fit_shared")
    assert cells["random"]["per_k"]["3"]["ndcg@20"] != cells["temporal"]["per_k"]["3"]["ndcg@20"]


def test_the_blend_reuses_its_parts_choices_and_is_a_reference_line_not_a_baseline(log, tmp_path, tiny_config):
    from recmaml.report import summarize

    spec = BenchmarkSpec(name="planted", protocols=("random",), ks=(1, 3), seeds=(0,),
                         systems=("popularity", "ease", "mult_vae", "recent_popularity", "blend", "recmaml_maml"),
                         budget_seconds=5, config=tiny_config, grid="minimal")  # the parts' first points: quick
    run_benchmark(log, spec, tmp_path)
    cells = {c["system"]: c for c in read_cells(tmp_path)}
    blend = cells["blend"]
    assert blend["family"] == "reference" and set(blend["params"]) == {"1", "3"}  # weights per K
    parts = {"popularity", "recent_popularity", "ease", "item_knn", "mult_vae"}
    for k, weights in blend["params"].items():
        assert set(weights) == parts and any(weights.values())  # the all-zero point orders nothing
        assert [g["weights"] for g in blend["grid"] if g["k"] == k] == [weights]
    comparison = summarize(read_cells(tmp_path))["planted"]["random"]["comparison"]["3"]["ndcg@20"]
    assert comparison["baseline"] != "blend" and comparison["reference"] == "blend"
    assert math.isclose(comparison["reference_ratio"],
                        cells["recmaml_maml"]["per_k"]["3"]["ndcg@20"] / blend["per_k"]["3"]["ndcg@20"], rel_tol=1e-3)


def test_a_grid_search_goes_past_the_grids_end_while_its_optimum_sits_there():
    from recmaml.protocol import GRID_EXTENSIONS, grid_points, past_the_edge, tune

    def search(grid: dict, value) -> list[dict]:
        points = grid_points(grid)
        tried = [{"params": p, "validation": value(p)} for p in points]
        best = lambda: max(tried, key=lambda t: t["validation"])["params"]  # noqa: E731
        while (extra := past_the_edge(best(), [t["params"] for t in tried], points)) is not None:
            tried.append({"params": extra, "validation": value(extra)})
        return tried

    # the optimum (lam 1e5) lies past the grid's top: the search steps out by the grid's own factor (10)
    tried = search({"lam": [10.0, 100.0, 1000.0], "rows": [None, 4.0]},
                   lambda p: -abs(np.log10(p["lam"]) - 5) - (p["rows"] is None))
    assert [t["params"] for t in tried[6:]] == [{"lam": 1e4, "rows": 4.0}, {"lam": 1e5, "rows": 4.0},
                                                {"lam": 1e6, "rows": 4.0}]
    assert max(tried, key=lambda t: t["validation"])["params"] == {"lam": 1e5, "rows": 4.0}
    # no further than GRID_EXTENSIONS steps at an end; an integer axis stays integers
    tried = search({"factors": [32, 128, 256]}, lambda p: p["factors"])
    assert [t["params"]["factors"] for t in tried[3:]] == [512, 1024, 2048][:GRID_EXTENSIONS]
    # down from the bottom, unless the axis starts at 0 (no shrink: its natural end)
    assert [t["params"]["window"] for t in search({"window": [30.0, 90.0, 365.0]}, lambda p: -p["window"])[3:]] == [
        10.0, 3.33333, 1.11111]
    assert len(search({"shrink": [0.0, 10.0, 100.0]}, lambda p: -p["shrink"])) == 3
    assert len(search({"shrink": [0.0, 10.0]}, lambda p: p["shrink"])) == 2  # no factor from 0 to 10
    # an optimum inside the grid, or a choice that is no number, adds nothing
    assert len(search({"lam": [10.0, 100.0, 1000.0]}, lambda p: -abs(p["lam"] - 100))) == 3
    assert len(search({"rows": [None, 4.0]}, lambda p: p["rows"] is None)) == 2
    # a range axis with one low (Mult-VAE's input sizes) steps its high, up and down, and stays a range
    ranges = {"rows": [None, 4.0], "items": [(1, 5), (1, 20), (1, 50)]}
    tried = search(ranges, lambda p: p["items"][1] + (p["rows"] is None))
    assert [t["params"] for t in tried[6:]] == [{"rows": None, "items": (1, 125)}, {"rows": None, "items": (1, 312)},
                                                {"rows": None, "items": (1, 779)}]
    tried = search(ranges, lambda p: -p["items"][1])
    assert [t["params"]["items"] for t in tried[6:]] == [(1, 1)]  # 5 / 4 rounds to 1; below that, 0: no size
    assert len(search({"items": [(1, 5), (2, 50)]}, lambda p: p["items"][1])) == 2  # two lows: no axis
    # the quickstart's small grids (protocol.tune) step out the same way
    best, value, tried = tune(lambda lam, rows: -abs(np.log10(lam) - 5) - (rows is None),
                              {"lam": [10.0, 100.0, 1000.0], "rows": [None, 4.0]})
    assert best == {"lam": 1e5, "rows": 4.0} and value == 0.0 and len(tried) == 9


def test_grid_edges_place_each_choice_in_its_own_cells_grid():
    from recmaml.report import _grid_edge

    def cell(grid, **chosen):
        return {"grid": [{"params": p, "validation": 0.0} for p in grid], "params": chosen}

    narrow = [{"lam": v} for v in (1.0, 10.0, 100.0)]
    wide = narrow + [{"lam": 1000.0}]
    # an old cell at its own grid's edge stays an edge beside a wider grid's cells; a value the narrow grid
    # never had (1000) is placed in the wide one
    assert _grid_edge([cell(narrow, lam=100.0), cell(wide, lam=100.0), cell(wide, lam=1000.0)]) == [
        "lam: 100.0 (high edge), 1000.0 (high edge)"]
    assert _grid_edge([cell(wide, lam=100.0), cell(wide, lam=10.0)]) == ["lam: 10.0 (inside), 100.0 (inside)"]
    # tuples sort by their numbers ((1, 5) < (1, 20) < (1, 50)), not by their text; a parameter an old
    # cell's grid lacked is placed only where a cell chose it
    items = [{"input_items": [1, n], "threshold": None} for n in (5, 20, 50)]
    assert _grid_edge([cell(items, input_items=[1, 20], threshold=None), cell(narrow, lam=10.0)]) == [
        "input_items: (1, 20) (inside)", "threshold: None (one of 1)", "lam: 10.0 (inside)"]
    rows = [{"threshold": t} for t in (4.0, None)]  # which rows: a choice, not a scale with edges
    assert _grid_edge([cell(rows, threshold=4.0), cell(rows, threshold=None)]) == ["threshold: 4.0 (one of 2), None (one of 2)"]


def test_the_blends_weights_start_from_its_best_part_and_only_climb():
    from recmaml.benchmark import BLEND_WEIGHTS, _coordinate_ascent

    # a value that peaks at a = 1, b = 0.5, c = 0, which no single part reaches
    def value(w):
        return -(w["a"] - 1) ** 2 - (w["b"] - 0.5) ** 2 - w["c"] ** 2

    weights, best = _coordinate_ascent(["a", "b", "c"], value)
    assert weights == {"a": 1.0, "b": 0.5, "c": 0.0} and best == 0.0
    assert best > max(value({n: float(n == m) for n in "abc"}) for m in "abc")
    assert set(weights.values()) <= set(BLEND_WEIGHTS)
    # nothing beats the best single part: it is kept
    assert _coordinate_ascent(["a", "b"], lambda w: 1.0 if w == {"a": 1.0, "b": 0.0} else 0.0) == ({"a": 1.0, "b": 0.0}, 1.0)


def test_mult_vae_is_tuned_until_validation_stops_improving_and_refitted_for_those_epochs(log, tmp_path, monkeypatch):
    import dataclasses

    import recmaml.benchmark as benchmark
    from recmaml.baselines import MultVAE

    refits = []
    original_fit = MultVAE.fit

    def spy(self, warm, validate=None):
        if validate is None:
            refits.append((self.epochs, self.max_seconds))
        return original_fit(self, warm, validate)

    monkeypatch.setattr(MultVAE, "fit", spy)
    monkeypatch.setattr(benchmark, "MULT_VAE_MAX_EPOCHS", 400)
    small = {"input_items": [(1, 5), (1, 20)], "hidden": [64], "latent": [16]}  # two quick points
    monkeypatch.setitem(benchmark.SYSTEMS, "mult_vae", dataclasses.replace(SYSTEMS["mult_vae"], grid=lambda ctx: small))
    spec = BenchmarkSpec(name="planted", protocols=("random",), ks=(3,), seeds=(0,), systems=("mult_vae",),
                         budget_seconds=0.01)  # a budget the early stopping ignores
    run_benchmark(log, spec, tmp_path)
    cell = read_cells(tmp_path)[0]
    assert all(g["notes"]["stopped_by"] in ("patience", "epochs") and g["learned"]["epochs"] >= 1 for g in cell["grid"])
    best = max(cell["grid"], key=lambda g: g["validation"])
    assert cell["params"] == {**best["params"], "epochs": best["learned"]["epochs"]}
    assert refits == [(best["learned"]["epochs"], None)]  # the refit on every warm user: those epochs, no budget


def test_points_that_differ_only_in_the_history_rows_share_one_fit(log, tmp_path, monkeypatch):
    from recmaml.baselines import EASE

    fits = []
    original_fit = EASE.fit

    def spy(self, warm):
        fits.append((self.lam, self.threshold))
        return original_fit(self, warm)

    monkeypatch.setattr(EASE, "fit", spy)
    rated = Interactions.from_ids(log.users.ids[log.user_idx], log.items.ids[log.item_idx],
                                  rating=np.where(np.arange(len(log)) % 3, 5.0, 2.0))
    run_benchmark(rated, BenchmarkSpec(name="rated", protocols=("random",), ks=(3,), seeds=(0,), systems=("ease",)),
                  tmp_path)
    cell = read_cells(tmp_path)[0]
    assert len(cell["grid"]) == 2 * len(fits[:-1]) == len(set(fits[:-1])) * 2  # two history choices per fit
    liked = log_relevance_threshold(rated)
    assert liked is not None and {g["params"]["support_threshold"] for g in cell["grid"]} == {None, liked}


def test_a_blend_run_alone_takes_its_parts_choices_from_their_finished_cells(log, tmp_path, tiny_config):
    spec = BenchmarkSpec(name="planted", protocols=("random",), ks=(3,), seeds=(0,), systems=("ease",), config=tiny_config)
    run_benchmark(log, spec, tmp_path)
    ease = read_cells(tmp_path)[0]
    ease["params"] = {"lam": 12345.0}  # a choice the grid's first point is not
    (tmp_path / "cells/planted/random/seed0/ease.json").write_text(json.dumps(ease))
    chosen = {}
    original = SYSTEMS["ease"].fit

    def spy(warm, ctx, **params):
        chosen.update(params)
        return original(warm, ctx, **params)

    import dataclasses
    import recmaml.benchmark as benchmark

    benchmark.SYSTEMS["ease"] = dataclasses.replace(SYSTEMS["ease"], fit=spy)
    try:
        run_benchmark(log, dataclasses.replace(spec, systems=("blend",)), tmp_path)
    finally:
        benchmark.SYSTEMS["ease"] = dataclasses.replace(SYSTEMS["ease"], fit=original)
    assert chosen == {"lam": 12345.0}


def test_time_aware_popularity_on_a_log_without_timestamps_is_a_clear_error(log):
    from recmaml.baselines import RecentPopularity

    untimed = Interactions.from_ids(log.user_ids(), log.item_ids(), rating=log.rating)
    with pytest.raises(DataError, match="needs timestamps"):
        RecentPopularity().fit(untimed)


def test_the_page_spells_todays_flags_and_every_thread_count_its_cells_ran_with(tmp_path):
    import shutil

    from recmaml.report import write_report

    # FilmTrust's random-protocol cells of the full run, each as if recorded with `--k` (the support sizes'
    # former name; the folder's own cells say whichever flag their run was given)
    shutil.copytree(REPO_ROOT / "benchmarks/full-run/cells/filmtrust/random", tmp_path / "cells/filmtrust/random")
    cells = sorted((tmp_path / "cells").rglob("*.json"))
    for path in cells:
        cell = json.loads(path.read_text())
        cell["command"] = cell["command"].replace(" --support-sizes ", " --k ")
        path.write_text(json.dumps(cell))
    assert all(" --k " in json.loads(p.read_text())["command"] for p in cells)
    write_report(tmp_path)
    text = (tmp_path / "results.md").read_text()
    reproduce = " ".join(line for line in text.splitlines() if line.startswith("Reproduce: "))
    assert " --support-sizes 0,1,3,5,10,20 " in reproduce and " --k " not in reproduce
    assert "torch threads per run: 1\n" in text  # every cell ran with one
    one = json.loads(cells[0].read_text())
    one["environment"]["torch_threads"] = 2  # a cell of a run with --threads 2
    cells[0].write_text(json.dumps(one))
    write_report(tmp_path)
    assert f"torch threads per run: 1 ({len(cells) - 1} cells), 2 (1 cells)" in (tmp_path / "results.md").read_text()


def test_rebuilding_a_page_in_place_keeps_its_hand_written_preface_and_links_its_plots_from_the_page(tmp_path):
    import shutil

    from recmaml.report import write_report

    out = tmp_path / "run"
    shutil.copytree(REPO_ROOT / "benchmarks/full-run/cells/filmtrust/random", out / "cells/filmtrust/random")
    page = tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    write_report(out, page=page)
    first = page.read_text()
    assert "![filmtrust](../run/plots/filmtrust.png)" in first
    assert (page.parent / "../run/plots/filmtrust.png").resolve().is_file()
    lines = first.splitlines()
    page.write_text("\n".join([lines[0], "", "Written by a person: what this run shows.", "", *lines[2:]]) + "\n")
    write_report(out, page=page)
    second = page.read_text()
    assert second.count("Written by a person: what this run shows.") == 1
    assert second.index("Written by a person") < second.index("- Machine: ")
    assert "Written by a person" not in (out / "results.md").read_text()
    assert second.replace("Written by a person: what this run shows.\n\n", "") == first
