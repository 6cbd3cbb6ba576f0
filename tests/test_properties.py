"""Property tests (hypothesis): rankings are sorted, unique, exclude what a user showed, never longer than
k or the candidates, and the same for a user alone as in any batch; vocabularies and ranked-list files
round-trip any ids."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmaml import Interactions, MetaRecommender, RankedLists, Vocabulary
from recmaml.data import UNKNOWN

N_ITEMS = 60  # the planted log's catalog (tests/planted.taste_groups)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

histories = st.lists(st.tuples(st.integers(0, 6), st.integers(0, N_ITEMS - 1)), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def rec(tiny_model_dir):
    return MetaRecommender.load(tiny_model_dir)


def _log(pairs) -> Interactions:
    users = np.array([f"u{u}" for u, _ in pairs])
    return Interactions.from_ids(users, np.array([i for _, i in pairs]), rating=np.full(len(pairs), 5.0))


@SETTINGS
@given(pairs=histories, k=st.integers(1, 70), batch_size=st.integers(1, 9))
def test_rankings_are_sorted_unique_unseen_and_at_most_k(rec, pairs, k, batch_size):
    ranked = rec.recommend(_log(pairs), k=k, batch_size=batch_size)
    seen = {(f"u{u}", i) for u, i in pairs}
    for user in set(f"u{u}" for u, _ in pairs):
        mine = ranked.user_id == user
        items, scores, ranks = ranked.item_id[mine], ranked.score[mine], ranked.rank[mine]
        shown = sum(1 for u, _ in seen if u == user)
        assert len(items) == min(k, N_ITEMS - shown)  # every unseen item can be ranked
        assert len(set(items.tolist())) == len(items)
        assert not any((user, int(i)) in seen for i in items)
        assert ranks.tolist() == list(range(1, len(items) + 1))
        assert np.all(np.diff(scores) <= 0)


@SETTINGS
@given(pairs=histories, k=st.integers(1, 20), batch_size=st.integers(1, 9))
def test_a_user_alone_gets_the_list_it_gets_in_any_batch(rec, pairs, k, batch_size):
    together = rec.recommend(_log(pairs), k=k, batch_size=batch_size)
    user = f"u{pairs[0][0]}"
    alone = rec.recommend(_log([p for p in pairs if f"u{p[0]}" == user]), k=k)
    mine = together.user_id == user
    np.testing.assert_allclose(together.score[mine], alone.score, rtol=1e-5, atol=1e-6)
    # items agree except where two scores tie to float rounding
    differ = together.item_id[mine] != alone.item_id
    assert np.all(np.abs(together.score[mine][differ] - alone.score[differ]) < 1e-5)


@SETTINGS
@given(pairs=histories, candidates=st.lists(st.integers(0, N_ITEMS - 1), max_size=15), k=st.integers(1, 20))
def test_candidate_lists_hold_only_candidates_and_are_never_longer(rec, pairs, candidates, k):
    log = _log(pairs)
    user = f"u{pairs[0][0]}"
    if not candidates:
        return
    cand = Interactions.from_ids(np.array([user] * len(candidates)), np.array(candidates, dtype=np.int64))
    ranked = rec.recommend(log, k=k, candidates=cand)
    mine = ranked.item_id[ranked.user_id == user]
    seen = {i for u, i in pairs if f"u{u}" == user}
    allowed = set(candidates) - seen
    assert set(mine.tolist()) <= allowed and len(mine) == min(k, len(allowed))


# text ids: any unicode but NUL, which the readers refuse (numpy text arrays cannot keep a trailing NUL;
# test_hostile checks the refusal), and lone surrogates, which no UTF-8 file can hold
ids = st.one_of(st.lists(st.integers(-2**62, 2**62), max_size=30),
                st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                 min_size=1, max_size=12).filter(lambda t: t.strip() == t and t), max_size=30))


@SETTINGS
@given(values=ids)
def test_vocabularies_round_trip_any_ids(values):
    vocab = Vocabulary.fit(values)
    assert len(vocab) == len(set(values))
    if values:
        idx = vocab.index(values)
        assert (idx != UNKNOWN).all()
        assert [str(v) for v in vocab.lookup(idx)] == [str(v) for v in values]
    assert Vocabulary.from_json(vocab.to_json()) == vocab


@SETTINGS
@given(users=ids, fmt=st.sampled_from(["csv", "parquet", "jsonl"]))
def test_ranked_list_files_round_trip_any_ids(users, fmt, tmp_path_factory):
    from recmaml.connectors import read_ranked_lists, write_ranked_lists

    users = list(dict.fromkeys(users))  # distinct users, one list of two items each
    user_ids = np.repeat(np.asarray(users), 2) if users else np.array([], dtype=np.int64)
    ranked = RankedLists(user_ids, np.tile([7, 3], len(users)).astype(np.int64),
                         np.tile([0.5, 0.25], len(users)).astype(np.float32), np.tile([1, 2], len(users)).astype(np.int32))
    path = tmp_path_factory.mktemp("round-trip") / f"ranked.{fmt}"
    write_ranked_lists(ranked, path)
    back = read_ranked_lists(path)
    assert len(back) == len(ranked)
    assert [str(u) for u in back.user_id] == [str(u) for u in ranked.user_id]
    assert back.item_id.tolist() == ranked.item_id.tolist() and back.rank.tolist() == ranked.rank.tolist()
    np.testing.assert_allclose(back.score, ranked.score, rtol=1e-6)


def _write_log(frame, path, fmt):
    if fmt in ("csv", "tsv"):
        frame.write_csv(path, separator="," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_ndjson(path)


@SETTINGS
@given(users=ids, items=ids, fmt=st.sampled_from(["csv", "tsv", "parquet", "jsonl"]), data=st.data())
def test_interaction_files_round_trip_any_ids(users, items, fmt, data, tmp_path_factory):
    """Any ids (integers, or unicode text with commas, quotes, tabs or newlines) written by polars in
    every format read back as the same (user, item, rating) rows; a file without rows is refused."""
    import polars as pl

    from recmaml import DataError
    from recmaml.connectors import read_interactions

    n = min(len(users), len(items))
    rows = {(users[i], items[i]) for i in range(n)}  # distinct pairs: duplicates would be merged on read
    ratings = data.draw(st.lists(st.integers(1, 5), min_size=len(rows), max_size=len(rows)))
    frame = pl.DataFrame({"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows],
                          "rating": [float(r) for r in ratings]},
                         schema_overrides={"user_id": pl.Int64 if users and isinstance(users[0], int) else pl.String,
                                           "item_id": pl.Int64 if items and isinstance(items[0], int) else pl.String})
    path = tmp_path_factory.mktemp("log-round-trip") / f"log.{fmt}"
    _write_log(frame, path, fmt)
    if not rows:
        with pytest.raises(DataError):
            read_interactions(path)
        return
    log = read_interactions(path)
    back = {(str(u), str(i), float(r)) for u, i, r in zip(log.user_ids(), log.item_ids(), log.rating)}
    assert back == {(str(u), str(i), float(r)) for (u, i), r in zip(rows, ratings)}


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=40))
def test_string_ids_factorized_by_polars_match_numpys_unique(values):
    import polars as pl

    from recmaml.frames import factorized_ids, ids_to_numpy

    series = pl.Series("id", values, dtype=pl.String)
    vocab, index = factorized_ids(series)
    want_vocab, want_index = Vocabulary.fit_transform(ids_to_numpy(series))
    assert np.array_equal(vocab.ids, want_vocab.ids) and np.array_equal(index, want_index)
    assert index.dtype == want_index.dtype


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.from_regex(r"\s*[+-]?[0-9]{1,20}\s*", fullmatch=True), st.text(max_size=8)),
                       min_size=1, max_size=12))
def test_text_ids_of_an_integer_vocabulary_match_alike_in_python_and_in_polars(values):
    """A request's few ids are parsed in Python, a frame's many by polars: the same indices either way."""
    import recmaml.data as data

    vocab = Vocabulary(np.array([-5, 0, 7, 42, 2**63 - 1], dtype=np.int64))
    text = np.array(values + ["42", " 7\n", "+0", "x"], dtype=str)
    few = vocab.index(text)
    limit = data._PYTHON_PARSE_MAX
    try:
        data._PYTHON_PARSE_MAX = 0  # every text through polars
        many = vocab.index(text)
    finally:
        data._PYTHON_PARSE_MAX = limit
    assert np.array_equal(few, many)
    assert few[-4:].tolist() == [3, 2, 1, -1]
