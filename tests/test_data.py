import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recmaml.data import UNKNOWN, Interactions, RankedLists, SideFeatures, Vocabulary
from recmaml.errors import DataError


def test_vocabulary_maps_ids_to_sorted_positions_and_back():
    vocab, idx = Vocabulary.fit_transform(np.array([30, 10, 20, 10]))
    assert vocab.ids.tolist() == [10, 20, 30]
    assert idx.tolist() == [2, 0, 1, 0]
    assert vocab.lookup(idx).tolist() == [30, 10, 20, 10]


def test_vocabulary_string_ids():
    vocab, idx = Vocabulary.fit_transform(["b", "a", "c", "a"])
    assert vocab.ids.tolist() == ["a", "b", "c"]
    assert idx.tolist() == [1, 0, 2, 0]
    assert vocab.index(["c", "zz", "a"]).tolist() == [2, UNKNOWN, 0]


def test_unknown_ids_map_to_sentinel_in_bulk():
    vocab = Vocabulary.fit([5, 7, 9])
    assert vocab.index(np.array([4, 5, 6, 9, 10, 100])).tolist() == [UNKNOWN, 0, UNKNOWN, 2, UNKNOWN, UNKNOWN]
    # one text id among integer ids turns a whole column into text: the ids that read as integers match
    assert vocab.index(["5", "x", " 9"]).tolist() == [0, UNKNOWN, 2]
    assert Vocabulary.fit([]).index([1, 2]).tolist() == [UNKNOWN, UNKNOWN]


def test_sparse_integer_ids_take_the_sorting_path():
    values = np.array([10**15, 3, 10**15, -7])
    vocab, idx = Vocabulary.fit_transform(values)
    assert vocab.ids.tolist() == [-7, 3, 10**15]
    assert vocab.lookup(idx).tolist() == values.tolist()


@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=200))
def test_vocabulary_round_trip_and_json(values):
    vocab, idx = Vocabulary.fit_transform(values)
    assert vocab.lookup(idx).tolist() == values
    assert len(vocab) == len(set(values))
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    assert np.array_equal(vocab.index(values), idx)


# numpy's fixed-width strings drop trailing NUL characters, so ids with NULs are out of scope.
@given(st.lists(st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=5), min_size=1, max_size=100))
def test_vocabulary_string_round_trip(values):
    vocab, idx = Vocabulary.fit_transform(values)
    assert vocab.lookup(idx).tolist() == values
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_vocabulary_rejects_unsorted_ids():
    with pytest.raises(DataError, match="sorted and unique"):
        Vocabulary([3, 1])


def test_interactions_from_ids_with_given_vocabularies_drop_unknown_rows():
    items = Vocabulary.fit([1, 2, 3])
    log = Interactions.from_ids([7, 7, 8], [1, 99, 3], rating=[5, 4, 3], items=items)
    assert log.user_ids().tolist() == [7, 8]
    assert log.item_ids().tolist() == [1, 3]
    assert log.rating.tolist() == [5.0, 3.0]
    assert log.n_items == 3 and not log.is_implicit


def test_interactions_csr_and_take():
    log = Interactions.from_ids(["u1", "u2", "u2"], ["a", "b", "c"], rating=[1, 2, 3])
    dense = log.to_csr("rating").toarray()
    assert dense.tolist() == [[1, 0, 0], [0, 2, 3]]
    sub = log.take(log.user_idx == 1)
    assert sub.item_ids().tolist() == ["b", "c"] and sub.n_users == 2


def test_side_features_are_aligned_to_the_vocabulary():
    feats = SideFeatures(
        ids=Vocabulary.fit([1, 2]),
        categorical={"gender": np.array([1, 2])},
        categorical_levels={"gender": ["F", "M"]},
        multi_hot={"genre": np.array([[1, 0], [1, 1]], dtype=np.uint8)},
        multi_hot_levels={"genre": ["Comedy", "Drama"]},
        numeric={"year": np.array([0.5, -0.5], dtype=np.float32)},
    )
    log = Interactions.from_ids([2, 3], [10, 10], item_features=None, user_features=feats)
    uf = log.user_features
    assert uf.ids == log.users
    assert uf.categorical["gender"].tolist() == [2, 0]  # user 3 has no features: code 0 (missing)
    assert uf.multi_hot["genre"].tolist() == [[1, 1], [0, 0]]
    assert uf.numeric["year"][0] == pytest.approx(-0.5) and np.isnan(uf.numeric["year"][1])


def test_side_features_reject_wrong_lengths():
    with pytest.raises(DataError, match="rows"):
        SideFeatures(ids=Vocabulary.fit([1, 2]), categorical={"g": np.array([1])}, categorical_levels={"g": ["x"]})


def test_ranked_lists_frames_round_trip():
    ranked = RankedLists(np.array([1, 1, 2]), np.array(["a", "b", "a"]), np.array([0.9, 0.5, 0.7]), np.array([1, 2, 1]))
    for frame in (ranked.to_pandas(), ranked.to_polars()):
        assert RankedLists.from_frame(frame).equals(ranked)
    both = RankedLists.concat([ranked, ranked])
    assert len(both) == 6 and both.rank.dtype == np.int32
    with pytest.raises(DataError, match="missing"):
        RankedLists.from_frame(ranked.to_pandas().drop(columns="rank"))


def test_side_features_are_read_in_the_layout_a_model_was_trained_with():
    train = SideFeatures(
        ids=Vocabulary([1, 2, 3]), categorical={"job": np.array([1, 2, 0])}, categorical_levels={"job": ["a", "b"]},
        multi_hot={"tags": np.array([[1, 0], [0, 1], [1, 1]], np.float32)}, multi_hot_levels={"tags": ["x", "y"]},
        numeric={"age": np.array([20.0, 30.0, np.nan], np.float32)})
    layout = train.layout()
    assert layout["numeric"]["age"] == [25.0, 5.0]
    # new users: levels in another order, an unseen level, a missing feature, raw numbers
    new = SideFeatures(
        ids=Vocabulary([7, 8]), categorical={"job": np.array([1, 2])}, categorical_levels={"job": ["b", "zz"]},
        multi_hot={"tags": np.array([[1, 1, 0], [0, 0, 1]], np.float32)}, multi_hot_levels={"tags": ["y", "new", "x"]})
    read = new.conformed(layout)
    assert read.categorical["job"].tolist() == [2, 0]  # "b" is level 2 of training; "zz" is unknown: missing
    assert read.multi_hot["tags"].tolist() == [[0, 1], [1, 0]]  # columns matched by level name
    assert np.isnan(read.numeric["age"]).all()  # absent here: missing
    again = train.conformed(layout)
    np.testing.assert_allclose(again.numeric["age"][:2], [-1.0, 1.0])
