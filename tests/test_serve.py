"""Serving threads: 'auto' takes the free cores, a number is kept, and calls restore torch's setting."""

import numpy as np
import pytest
import torch

from recmaml import ConfigError, Interactions, MetaRecommender
from recmaml import threads as thread_counts
from recmaml.config import config_from_dict


def test_auto_threads_take_the_cores_no_other_process_runs_on(monkeypatch):
    monkeypatch.setattr(thread_counts, "AUTO_THREADS_SECONDS", -1.0)  # look at every call
    monkeypatch.setattr(thread_counts.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(thread_counts, "_default_threads", lambda: 8)
    for busy, threads in ((0, 8), (3, 5), (7, 1), (20, 1)):
        monkeypatch.setattr(thread_counts, "_busy_cores", lambda busy=busy: busy)
        assert thread_counts.serving_threads("auto") == threads
    assert thread_counts.serving_threads(3) == 3
    monkeypatch.setattr(thread_counts, "_default_threads", lambda: 2)
    monkeypatch.setattr(thread_counts, "_busy_cores", lambda: 0)
    assert thread_counts.serving_threads("auto") == 2  # never more than torch's own default


def test_auto_threads_look_at_the_machine_at_most_once_a_second(monkeypatch):
    monkeypatch.setattr(thread_counts, "_auto_threads", [-float("inf"), 1])
    monkeypatch.setattr(thread_counts.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(thread_counts, "_default_threads", lambda: 8)
    looks = []
    monkeypatch.setattr(thread_counts, "_busy_cores", lambda: looks.append(1) or 3)
    assert [thread_counts.serving_threads("auto") for _ in range(50)] == [5] * 50
    assert len(looks) == 1  # a stream of calls shares one look at /proc
    monkeypatch.setattr(thread_counts, "_busy_cores", lambda: looks.append(1) or 6)
    thread_counts._auto_threads[0] -= thread_counts.AUTO_THREADS_SECONDS + 0.1  # a second later
    assert thread_counts.serving_threads("auto") == 2 and len(looks) == 2


def test_busy_cores_reads_the_running_count():
    assert 0 <= thread_counts._busy_cores() <= 10_000


def test_a_serving_call_runs_on_the_configured_threads_and_restores_them(taste_log, tiny_config, monkeypatch):
    rec = MetaRecommender(tiny_config.replace(meta={"epochs": 1}, serve={"threads": 1})).fit(taste_log)
    seen = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n)))
    before = torch.get_num_threads()
    history = Interactions.from_ids(np.array(["a", "a"]), np.array([0, 1]), rating=np.array([5.0, 5.0]))
    rec.recommend(history, k=3)
    rec.score(history)
    rec.predict(history, np.array(["a"]), np.array([2]))
    assert torch.get_num_threads() == before
    if before != 1:
        assert seen.count(1) == 3 and seen.count(before) == 3  # set for each call, then restored


def test_bad_thread_settings_are_config_errors():
    for bad in (0, -2, "many"):
        with pytest.raises(ConfigError, match="serve.threads"):
            config_from_dict({"serve": {"threads": bad}})
