"""What a model says about its lists (recmaml.explain): similar_items and the reasons of each recommended
item, on planted twins (tests/planted.twin_pairs: every user shows both items of a pair, so an item's one
neighbour is its twin, and a twin recommended to a user who shows the other must be recommended because
of it)."""


import numpy as np
import pandas as pd
import polars as pl
import pytest

from planted import twin_pairs
from recmaml import DataError, Interactions, MetaRecommender
from recmaml.cold import cold_users
from recmaml.config import PRIOR_BUCKETS, SIZE_BUCKETS
from recmaml.explain import list_reasons

N_PAIRS = 30
EVENS = np.arange(0, 2 * N_PAIRS, 2)


def twin(item):
    return np.asarray(item) ^ 1


@pytest.fixture(scope="module")
def twins(tiny_config):
    return MetaRecommender(tiny_config).fit(twin_pairs(n_pairs=N_PAIRS))


def one_of_pairs(n_users: int, size: int, seed: int = 1) -> Interactions:
    """Cold users each showing one item of `size` different pairs."""
    gen = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        pairs = gen.choice(N_PAIRS, size=size, replace=False)
        users += [f"u{u}"] * size
        items += list(2 * pairs + gen.integers(0, 2, size))
    return Interactions.from_ids(np.array(users), np.array(items))


def twin_rows(explained: pd.DataFrame, history: Interactions) -> list[tuple[int, list]]:
    """(item, because) of the rows whose item is the twin of one of its user's history items."""
    shown = pd.DataFrame({"user_id": history.user_ids(), "item_id": history.item_ids()})
    shown = shown.groupby("user_id").item_id.apply(set).to_dict()
    return [(r.item_id, list(r.because)) for r in explained.itertuples() if twin(r.item_id) in shown[r.user_id]]


# ---- similar items ---------------------------------------------------------------------------------------

def test_each_items_nearest_neighbour_is_its_twin(twins):
    ids, scores = twins.similar_items(EVENS, k=3, signal="ease")
    assert ids.shape == scores.shape == (N_PAIRS, 3)
    np.testing.assert_array_equal(ids[:, 0], twin(EVENS))
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    ids, _ = twins.similar_items(EVENS, k=1)  # the default signal: the item tower's cosine
    assert (ids[:, 0] == twin(EVENS)).mean() >= 0.9


def test_similar_items_takes_one_item_positions_and_candidates(twins):
    ids, scores = twins.similar_items(4, k=5)
    assert ids.shape == scores.shape == (5,) and 4 not in ids  # one item: 1-D; never its own neighbour
    positions, by_index_scores = twins.similar_items(twins.items.index(np.array([4])), k=5, by_index=True)
    np.testing.assert_array_equal(twins.items.ids[positions[0]], ids)
    np.testing.assert_allclose(by_index_scores[0], scores, rtol=1e-6)
    pool = np.array([5, 7, 9, 11])
    ids, _ = twins.similar_items([4, 6], k=10, candidates=pool)  # only the candidates, k cut to what they offer
    assert ids.shape == (2, 4) and set(ids.ravel()) <= set(pool) and ids[0, 0] == 5 and ids[1, 0] == 7
    ids, _ = twins.similar_items([0], k=10 ** 6)
    assert ids.shape == (1, 2 * N_PAIRS - 1)


def test_similar_items_names_what_is_wrong(twins):
    with pytest.raises(DataError, match=r"items: 1 id is not an item of this model \(e.g. \[999\]\)"):
        twins.similar_items([0, 999])
    with pytest.raises(DataError, match="signal= 'cosine'; use one of"):
        twins.similar_items([0], signal="cosine")
    with pytest.raises(DataError, match="with by_index=True"):
        twins.similar_items([2 * N_PAIRS], by_index=True)


# ---- reasons -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [2, 3, 5])
def test_a_recommended_twin_is_recommended_because_of_the_item_shown(twins, size):
    history = one_of_pairs(30, size)
    explained = twins.recommend(history, k=5, explain=2)
    assert isinstance(explained, pl.DataFrame) and explained.columns[-1] == "because"
    rows = twin_rows(explained.to_pandas(), history)
    assert len(rows) >= 30  # the served lists hold the twins
    assert all(because and because[0] == twin(item) for item, because in rows), rows


def test_the_scorer_alone_names_the_twin_too(twins):
    """The adapted scorer without the serving priors (no EASE term): its reasons come from adaptation and
    the set encoder alone."""
    history = one_of_pairs(30, 2)
    scorer = twins.with_serving(priors=False)
    rows = twin_rows(scorer.recommend(history, k=5, explain=1).to_pandas(), history)
    assert len(rows) >= 20
    assert np.mean([because[:1] == [twin(item)] for item, because in rows]) >= 0.8, rows


def test_a_reason_is_the_drop_of_the_score_without_that_item(twins):
    """A reason's strength is the item's score for the whole history minus its score for the history without
    that item, served with the whole history's settings (each size bucket has its own step size and priors'
    weights: a shorter history falls in another bucket, which would move every score at once)."""
    scales, ease, recent = (1.0, 4.0, 0.25, 1.0, 1.0, 1.0), (0.0, 0.0, 2.0, 0.25, 0.0, 0.0, 0.0), (0.0,) * 7
    odd = twins.with_serving(first_scales=scales, first_ease_weights=ease, first_recent_weights=recent)
    history = Interactions.from_ids(np.array(["a"] * 3), np.array([0, 12, 31]))
    size3 = np.searchsorted(SIZE_BUCKETS, 3, side="right") - 1, np.searchsorted(PRIOR_BUCKETS, 3, side="right") - 1
    held = odd.with_serving(first_scales=(scales[size3[0]],) * len(SIZE_BUCKETS),  # size 3's settings for all
                            first_ease_weights=(ease[size3[1]],) * len(PRIOR_BUCKETS))
    ranked = odd.recommend(history, k=4)
    found = list_reasons(odd, cold_users(odd, history), ranked, n=3)
    whole = odd.score(history, items=ranked.item_id)[0]
    np.testing.assert_allclose(held.score(history, items=ranked.item_id)[0], whole, atol=1e-5)
    for left_out in (0, 12, 31):
        rest = history.take(np.flatnonzero(history.item_ids() != left_out))
        drop = whole - held.score(rest, users=["a"], items=ranked.item_id)[0]
        for row in range(len(ranked)):
            named = odd.items.ids[found.items[row]] == left_out
            if drop[row] > 1e-4:
                assert named.any() and np.isclose(found.drops[row][named][0], drop[row], atol=1e-4)
            elif drop[row] < -1e-4:
                assert not named.any()  # a history item that did not raise the score is no reason


def test_explain_keeps_the_frame_and_gives_no_reasons_without_history(twins):
    history = pd.DataFrame({"user_id": ["a", "a"], "item_id": [0, 10]})
    candidates = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": [1, 3, 1, 3]})
    explained = twins.recommend(history, k=2, candidates=candidates, explain=3)
    assert isinstance(explained, pd.DataFrame)
    assert list(explained.columns) == ["user_id", "item_id", "score", "rank", "because"]
    by_row = {(r.user_id, r.item_id): list(r.because) for r in explained.itertuples()}
    assert by_row[("a", 1)][0] == 0 and by_row[("b", 1)] == [] and by_row[("b", 3)] == []  # b: no history
    ranked = twins.recommend(history, k=2, candidates=candidates)
    again = twins.explain(history, ranked, n=3)  # the same reasons from lists made before
    assert [list(b) for b in again.because] == [list(b) for b in explained.because]
    with pytest.raises(DataError, match="explain must be a whole number >= 1"):
        twins.explain(history, ranked, n=0)


# ---- the command line ----------------------------------------------------------------------------------------

@pytest.fixture
def main():
    """recmaml.cli.main (conftest puts the root logger back after each test)."""
    from recmaml.cli import main

    return main


@pytest.fixture(scope="module")
def twins_dir(twins, tmp_path_factory):
    path = tmp_path_factory.mktemp("twins") / "model"
    twins.save(path)
    return path


def test_recmaml_similar_writes_each_items_neighbours(twins_dir, tmp_path, capsys, main):
    out = tmp_path / "similar.csv"
    assert main(["similar", "--model", str(twins_dir), "--items", "0", "2", "--k", "3", "--signal", "ease",
                 "--out", str(out)]) == 0
    table = pl.read_csv(out)
    assert table.columns == ["item_id", "similar_item_id", "score", "rank"]
    assert table["item_id"].to_list() == [0] * 3 + [2] * 3 and table["rank"].to_list() == [1, 2, 3] * 2
    assert table.filter(pl.col("rank") == 1)["similar_item_id"].to_list() == [1, 3]
    assert main(["similar", "--model", str(twins_dir), "--k", "2"]) == 0  # every item, CSV on stdout
    assert pl.read_csv(capsys.readouterr().out.encode()).height == 2 * 2 * N_PAIRS
    assert main(["similar", "--model", str(twins_dir), "--items", "x1"]) == 2
    assert "--items 'x1': this model's item ids are integers" in capsys.readouterr().err


def test_recmaml_recommend_explain_adds_the_because_column(twins_dir, tmp_path, main):
    pl.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": [0, 10, 21, 31]}).write_csv(tmp_path / "h.csv")
    base = ["recommend", "--model", str(twins_dir), "--history", str(tmp_path / "h.csv"), "--k", "3"]
    assert main([*base, "--explain", "2", "--out", str(tmp_path / "recs.csv")]) == 0
    text = pl.read_csv(tmp_path / "recs.csv")
    assert text.columns == ["user_id", "item_id", "score", "rank", "because"]
    assert main([*base, "--explain", "2", "--out", str(tmp_path / "recs.parquet")]) == 0
    lists = pl.read_parquet(tmp_path / "recs.parquet")
    assert lists["because"].dtype == pl.List(pl.Int64)
    assert text["because"].fill_null("").to_list() == ["|".join(map(str, b)) for b in lists["because"].to_list()]
    twin_of = {1: 0, 11: 10, 20: 21, 30: 31}
    named = [b for i, b in zip(lists["item_id"], lists["because"].to_list()) if i in twin_of]
    assert named and all(b[0] == twin_of[i] for i, b in zip(lists["item_id"], lists["because"].to_list())
                         if i in twin_of)
    assert main([*base, "--out", str(tmp_path / "plain.csv")]) == 0
    assert pl.read_csv(tmp_path / "plain.csv").columns == ["user_id", "item_id", "score", "rank"]
    assert main([*base, "--explain", "-1", "--out", str(tmp_path / "bad.csv")]) == 2
    assert not (tmp_path / "bad.csv").exists()
