"""Times in units other than seconds, and `at` where it cannot act (issue 27, silent wrong answers): a
millisecond timestamp read as seconds put a user thousands of years after the warm log."""

import copy
import warnings

import numpy as np
import pytest

from recmaml import MetaRecommender, load_config
from recmaml.build import prepare
from recmaml.cli import main
from recmaml.cold import ArrivalWarning
from recmaml.connectors import read_interactions, read_ranked_lists
from recmaml.data import Interactions
from recmaml.times import TimestampUnitWarning

DAY = 86_400
START = 879_000_000  # 1997-11-08: the first era's users arrive in the 100 days after it
ERA = 4 * 365 * DAY  # the second era's, four years later
SECONDS = 880_000_000  # 1997-11-20, in the first era
MILLISECONDS = 880_000_000_000  # the same time in milliseconds


def eras_log(n_users: int = 240, seed: int = 0) -> Interactions:
    """Warm users of two eras four years apart: each likes 3 evergreen items (60-69) and 7 of its era's
    (0-29 in 1997, 30-59 in 2001), so what was popular at a user's time tells its era's items."""
    gen = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        era = u % 2
        start = START + era * ERA + int(gen.integers(0, 100 * DAY))
        liked = gen.choice(np.arange(30 * era, 30 * era + 30), 7, replace=False)
        items += [*gen.choice(np.arange(60, 70), 3, replace=False), *liked]
        users += [u] * 10
        times += [start + 3600 * i for i in range(10)]
    return Interactions.from_ids(np.array(users), np.array(items), timestamp=np.array(times, np.int64))


@pytest.fixture(scope="module")
def eras_model(tmp_path_factory):
    config = load_config("tiny", meta={"epochs": 3}, model={"sample_weights": False})
    rec = MetaRecommender(config).fit(eras_log())
    assert rec.priors is not None and rec.priors.has_time  # the time-aware popularity serves
    path = tmp_path_factory.mktemp("eras") / "model"
    rec.save(path)
    return path


def _history(*rows) -> Interactions:
    users, items, times = zip(*rows)
    return Interactions.from_ids(np.array(users), np.array(items), timestamp=np.array(times, np.int64))


def test_a_history_in_milliseconds_gets_the_lists_of_the_same_history_in_seconds(eras_model):
    rec = MetaRecommender.load(eras_model)
    seconds = rec.recommend(_history(("new", 60, SECONDS), ("new", 61, SECONDS + 60)), k=10)
    with pytest.warns(TimestampUnitWarning, match="milliseconds since 1970"):
        millis = rec.recommend(_history(("new", 60, MILLISECONDS), ("new", 61, MILLISECONDS + 60_000)), k=10)
    assert millis.item_id.tolist() == seconds.item_id.tolist()
    later = rec.recommend(_history(("new", 60, SECONDS + ERA), ("new", 61, SECONDS + ERA + 60)), k=10)
    assert later.item_id.tolist() != seconds.item_id.tolist()  # time decides: read as seconds, ms would be 'later'
    with pytest.warns(TimestampUnitWarning):
        one = rec.recommend_user([60, 61], timestamps=[MILLISECONDS, MILLISECONDS + 60_000], k=10)
    assert one.items.tolist() == seconds.item_id.tolist()


def test_users_served_together_may_send_different_units(eras_model):
    """The service batches users of different clients: each one's times are read by their own size."""
    from recmaml.cold import UserHistory
    from recmaml.serve import rank_histories

    rec = MetaRecommender.load(eras_model)
    with pytest.warns(TimestampUnitWarning, match=r"\(1 of its 2 times\)"):
        a, b = rank_histories(rec, [UserHistory([60], timestamps=[MILLISECONDS]),
                                    UserHistory([60], timestamps=[SECONDS])], k=10)
    assert a.items.tolist() == b.items.tolist()


def test_the_command_line_reads_a_millisecond_history_as_seconds(eras_model, tmp_path, capsys):
    for name, t in (("s", SECONDS), ("ms", MILLISECONDS)):
        (tmp_path / f"{name}.csv").write_text("user_id,item_id,timestamp\n" + "".join(
            f"u{u},{60 + u},{t}\n" for u in range(5)))
        assert main(["recommend", "--model", str(eras_model), "--history", str(tmp_path / f"{name}.csv"), "--k", "10",
                     "--chunk-rows", "2", "--out", str(tmp_path / f"{name}-recs.csv")]) == 0
    err = capsys.readouterr().err
    assert err.count("column 'timestamp': milliseconds since 1970") == 1  # once, though read in 3 chunks
    assert "880000000000 -> 880000000, 1997-11-20" in err
    assert read_ranked_lists(tmp_path / "ms-recs.csv").equals(read_ranked_lists(tmp_path / "s-recs.csv"))


@pytest.mark.parametrize("unit, per_second", [("milliseconds", 10**3), ("microseconds", 10**6),
                                              ("nanoseconds", 10**9)])
def test_a_log_in_a_finer_unit_is_read_in_seconds_naming_the_column(unit, per_second, tmp_path):
    times = [SECONDS, SECONDS + 1, SECONDS + 7200]
    (tmp_path / "log.csv").write_text("user,item,ts\n" + "".join(
        f"{u},{i},{t * per_second + 123}\n" for u, i, t in zip([1, 1, 2], [5, 6, 5], times)))
    with pytest.warns(TimestampUnitWarning, match=rf"log.csv: column 'ts': {unit} since 1970") as caught:
        log = read_interactions(tmp_path / "log.csv", user_col="user", item_col="item", timestamp_col="ts")
    assert sorted(log.timestamp.tolist()) == times
    assert caught[0].filename == __file__


def test_seconds_are_left_as_they_are(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n1,5,880000000\n2,5,1700000000\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(read_interactions(tmp_path / "log.csv").timestamp.tolist()) == [880000000, 1700000000]


def test_a_warm_log_built_in_milliseconds_is_trained_in_seconds():
    log = eras_log(40)
    millis = Interactions.from_ids(log.users.ids[log.user_idx], log.items.ids[log.item_idx],
                                   timestamp=log.timestamp * 1000)
    with pytest.warns(TimestampUnitWarning, match="the warm log's timestamps: milliseconds"):
        prepared = prepare(load_config("tiny"), millis)
    assert np.array_equal(prepared.log.timestamp, log.timestamp)


def test_at_in_milliseconds_is_at_in_seconds(eras_model):
    rec = MetaRecommender.load(eras_model)
    seconds = rec.recommend_user([], k=10, at=SECONDS).items
    with pytest.warns(TimestampUnitWarning, match=r"at=: milliseconds since 1970"):
        millis = rec.recommend_user([], k=10, at=MILLISECONDS).items
    assert millis.tolist() == seconds.tolist()
    with pytest.warns(TimestampUnitWarning):
        mapped = rec.arriving_at({"new": MILLISECONDS})
    assert mapped.arrival[1].tolist() == [SECONDS]


def test_at_is_said_to_be_ignored_for_users_with_timestamps(eras_model):
    rec = MetaRecommender.load(eras_model)
    history = _history(("a", 60, SECONDS), ("b", 61, SECONDS), ("b", 62, SECONDS + 9))
    no_times = Interactions.from_ids(np.array(["c"]), np.array([63]))
    with pytest.warns(ArrivalWarning, match="at= is ignored for 2 users whose history has timestamps") as caught:
        rec.arriving_at(SECONDS + ERA).recommend(history, k=5)
    assert caught[0].message.ignored == 2 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a history without timestamps: at is what serves it, nothing to say
        rec.arriving_at(SECONDS + ERA).recommend(no_times, k=5)
        rec.arriving_at({"c": SECONDS}).recommend(history, k=5)  # at names none of the timed users
    with pytest.warns(ArrivalWarning, match="ignored for 1 user whose"):
        rec.recommend_user([60], timestamps=[SECONDS], at=SECONDS + ERA)


def test_the_command_line_counts_the_users_at_is_ignored_for_once(eras_model, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},{60 + u},{SECONDS}\n"
                                                                           for u in range(5)))
    assert main(["recommend", "--model", str(eras_model), "--history", str(tmp_path / "h.csv"), "--at", "1998-01-01",
                 "--chunk-rows", "2", "--out", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert err.count("--at is ignored") == 1 and "--at is ignored for 5 users" in err


@pytest.mark.parametrize("at, needle", [
    ("1990-01-01", "before the warm log's first time (1997-11-"),
    ("2030-01-01", "more than the log's own span after the warm log's last time (2002-"),
    (START + ERA + 200 * DAY, None),  # inside the log: nothing to say
])
def test_an_at_outside_the_warm_log_is_said(at, needle, eras_model):
    rec = MetaRecommender.load(eras_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.arriving_at(at)
    said = [str(w.message) for w in caught if issubclass(w.category, ArrivalWarning)]
    if needle is None:
        assert not said
    else:
        assert len(said) == 1 and needle in said[0] and caught[0].filename == __file__, said


def test_a_mapping_at_says_how_many_of_its_users_lie_outside(eras_model):
    rec = MetaRecommender.load(eras_model)
    with pytest.warns(ArrivalWarning, match=r"at= 2060-01-01 for 1 of 2 users lies more than"):
        rec.arriving_at({"a": "2060-01-01", "b": SECONDS})


def test_at_on_a_model_that_reads_no_time_is_said(eras_model):
    rec = copy.copy(MetaRecommender.load(eras_model))
    rec.priors = None  # as a model of a log without timestamps
    with pytest.warns(ArrivalWarning, match="at= has no effect: this model reads no time"):
        rec.arriving_at(SECONDS)


def test_the_command_line_says_where_at_falls(eras_model, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user_id,item_id\nu,60\n")
    assert main(["recommend", "--model", str(eras_model), "--history", str(tmp_path / "h.csv"), "--at", "2030-01-01",
                 "--out", str(tmp_path / "r.csv")]) == 0
    assert "warning: --at 2030-01-01 lies more than the log's own span after" in capsys.readouterr().err
