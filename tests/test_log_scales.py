"""What a log's columns mean, decided from the values: a rating column of counts (plays) is not a rating
scale, and a threshold that leaves few positives is said out loud (issue 27, silent wrong answers)."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from recmaml import MetaRecommender
from recmaml.benchmark import log_relevance_threshold
from recmaml.build import MIN_POSITIVE_SHARE, FewPositivesWarning, resolve_for_log
from recmaml.cli import main
from recmaml.config import load_config
from recmaml.data import Interactions, is_count_column, relevant_rating

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data"
TINY = str(REPO_ROOT / "configs" / "tiny.toml")


def plays_log(n_users: int = 60, n_artists: int = 80, per_user: int = 16, seed: int = 0) -> Interactions:
    """A listening log in small: every (user, artist) row counts plays, Zipf-distributed (most a few plays,
    a few in the thousands), as the usual input of implicit."""
    gen = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    artists = np.concatenate([gen.choice(n_artists, per_user, replace=False) for _ in range(n_users)])
    plays = np.minimum(gen.zipf(1.6, len(users)), 100_000).astype(np.float32)
    return Interactions.from_ids(users, artists, rating=plays)


def test_counts_are_told_from_rating_scales():
    plays = plays_log().rating
    assert is_count_column(plays) and relevant_rating(plays) is None  # the old rule: a count near the top
    gen = np.random.default_rng(0)
    for scale, relevant in (([1, 2, 3, 4, 5], 4.0), (np.arange(1, 9) / 2, 3.5), (np.arange(1, 11), 8.0),
                            (np.arange(0, 101), 75.0)):
        ratings = gen.choice(scale, 2000).astype(np.float32)
        assert not is_count_column(ratings) and relevant_rating(ratings) == relevant, scale
    assert not is_count_column(np.ones(50, np.float32)) and not is_count_column(None)


def test_the_benchmarks_relevance_follows_the_same_decision():
    assert log_relevance_threshold(plays_log()) is None  # every held-out play is relevant, not 3 of them


@pytest.mark.parametrize("name, relevant", [("movielens/ml-100k", 4.0), ("filmtrust", 3.5), ("ciaodvd", 4.0)])
def test_real_rating_logs_keep_their_thresholds(name, relevant):
    from recmaml.connectors import read_interactions

    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their duplicated rows
        log = read_interactions(SHARED / name)
    assert not is_count_column(log.rating)
    assert resolve_for_log(load_config(TINY), log).tasks.positive_threshold == relevant


def test_the_public_listening_log_is_read_as_counts():
    """The issue's log (HetRec 2011 Last.fm, 92,834 rows of plays): 'auto' gave 320725, reached by 3 rows."""
    from recmaml.connectors import read_interactions

    path = SHARED / "lastfm-hetrec2011" / "user_artists.dat"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    log = read_interactions(path, format="tsv", user_col="userID", item_col="artistID", rating_col="weight",
                            timestamp_col=None)
    assert len(log) == 92_834 and is_count_column(log.rating)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FewPositivesWarning: no threshold at all
        assert resolve_for_log(load_config(TINY), log, rating_col="weight").tasks.positive_threshold is None


def test_auto_on_counts_is_every_row_positive_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="recmaml"), warnings.catch_warnings():
        warnings.simplefilter("error")
        config = resolve_for_log(load_config(TINY), plays_log(), rating_col="plays")
    assert config.tasks.positive_threshold is None
    note = caplog.text
    assert "'plays' holds counts, not a rating scale" in note and "every row as a positive" in note
    assert "tasks.positive_threshold" in note  # how to choose otherwise


def test_a_threshold_that_leaves_few_positives_warns_at_the_callers_line():
    log = plays_log()
    threshold = float(np.quantile(log.rating, 0.99))
    config = load_config(TINY).replace(tasks={"positive_threshold": threshold})
    with pytest.warns(FewPositivesWarning) as caught:
        resolve_for_log(config, log, rating_col="plays")
    warning = caught[0]
    assert warning.filename == __file__ and warning.message.share < MIN_POSITIVE_SHARE
    text = str(warning.message)
    assert f"tasks.positive_threshold = {threshold:g}" in text and "'plays'" in text
    assert "%) positive" in text and "leave tasks.positive_threshold out" in text  # the share and the fix


def test_a_derived_threshold_that_leaves_few_positives_warns_too():
    """A 1-5 scale where hardly anyone gives more than 3 (a 4 from 2%): 'auto' says 4."""
    gen = np.random.default_rng(0)
    rating = np.where(gen.random(2000) < 0.02, 4.0, gen.choice([1.0, 2.0, 3.0], 2000)).astype(np.float32)
    log = Interactions.from_ids(np.arange(2000) % 100, np.arange(2000) % 37, rating=rating)
    with pytest.warns(FewPositivesWarning, match=r"positive_threshold = 4 leaves .* a lower rating \(1: every row"):
        resolve_for_log(load_config(TINY), log)


def test_fit_warns_where_fit_was_called():
    config = load_config(TINY, meta={"epochs": 1}).replace(tasks={"positive_threshold": 1000.0})
    with pytest.warns(FewPositivesWarning) as caught:
        MetaRecommender(config).fit(plays_log())
    assert caught[0].filename == __file__


def test_fit_on_a_listening_log_saves_no_threshold_and_says_why(tmp_path, capsys):
    """`recmaml fit --config tiny --data plays.tsv --user-col user --item-col artist --rating-col plays`"""
    log = plays_log()
    rows = zip(log.users.ids[log.user_idx], log.items.ids[log.item_idx], log.rating.astype(int))
    (tmp_path / "plays.tsv").write_text("user\tartist\tplays\n" + "".join(f"{u}\t{a}\t{p}\n" for u, a, p in rows))
    assert main(["fit", "--config", TINY, "--data", str(tmp_path / "plays.tsv"), "--user-col", "user",
                 "--item-col", "artist", "--rating-col", "plays", "--out", str(tmp_path / "m")]) == 0
    assert "rating column 'plays' holds counts" in capsys.readouterr().err
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["config"]["tasks"]["positive_threshold"] is None
