"""recmaml.meta: what meta-training says about how it ended."""

from dataclasses import replace

import numpy as np

from recmaml import build


def _trained(log, config):
    return build.trained_scorer(build.prepare(config, log), None, False, None, False)[1]


def _latest_row_disliked(log):
    """The log with each user's latest row rated 1: a user showing all its earlier rows has nothing left
    to find."""
    latest = np.zeros(log.n_users, np.int64) - 1
    np.maximum.at(latest, log.user_idx, log.timestamp)
    rating = np.where(log.timestamp == latest[log.user_idx], 1.0, log.rating).astype(np.float32)
    return replace(log, rating=rating)


def test_no_validation_users_is_said_only_when_there_are_none(taste_log, tiny_config):
    short = tiny_config.replace(meta={"epochs": 2})
    none = _trained(taste_log, short.replace(tasks={"validation_users": 0.0}))
    assert "no validation users (tasks.validation_users = 0)" in none.summary()
    # validation users who reveal all but their latest row, which is disliked: no figure, yet they exist
    unscored = _trained(_latest_row_disliked(taste_log),
                        short.replace(tasks={"validation_support": 50, "order": "temporal"}))
    assert unscored.best_epoch < 1 and "no validation users" not in unscored.summary()
    assert f"of the {unscored.validation_users} validation users was never a number" in unscored.summary()
