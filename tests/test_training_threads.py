"""Training threads (meta.threads, --threads on fit, quickstart, tune and benchmark) and a quickstart
whose Mult-VAE does not follow the clock."""

import json
import logging
import time

import pytest
import torch

from recmaml import MetaRecommender, quickstart, resume
from recmaml import threads as thread_counts
from recmaml.baselines import MultVAE
from recmaml.cli import build_parser, main
from recmaml.config import config_from_dict
from recmaml.errors import ConfigError
from planted import taste_groups


def _threads_per_epoch(config, log_) -> list[int]:
    seen = []
    MetaRecommender(config).fit(log_, progress=lambda epoch, record: seen.append(torch.get_num_threads()))
    return seen


def test_a_fit_trains_on_the_configured_threads_and_restores_torchs(taste_log, tiny_config):
    before = torch.get_num_threads()
    # both weight sets (the main ones and the sample weights: 2 epochs each) train on the configured threads
    assert _threads_per_epoch(tiny_config.replace(meta={"epochs": 2, "threads": 3}), taste_log) == [3] * 4
    assert torch.get_num_threads() == before


def test_auto_training_threads_leave_the_busy_cores_and_say_so(taste_log, tiny_config, monkeypatch, caplog):
    monkeypatch.setattr(thread_counts, "_default_threads", lambda: 4)
    monkeypatch.setattr(thread_counts.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(thread_counts, "_busy_cores", lambda: 3)  # three cores taken by other processes
    monkeypatch.setattr(thread_counts, "AUTO_THREADS_SECONDS", -1.0)  # look at every call
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with caplog.at_level(logging.INFO, logger="recmaml"):
            seen = _threads_per_epoch(tiny_config.replace(meta={"epochs": 2}), taste_log)  # meta.threads 'auto'
        assert seen == [1] * 4 and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert "meta-training on 1 torch thread: other processes are running" in caplog.text


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5])
def test_bad_training_threads_are_config_errors(bad):
    with pytest.raises(ConfigError, match="meta.threads"):
        config_from_dict({"meta": {"threads": bad}})


def test_a_fit_may_resume_on_another_thread_count(taste_log, tiny_config):
    # the checkpoint's fingerprint leaves the threads out: a fit started beside a busy job resumes anywhere
    model = torch.nn.Module()  # no buffers: only the config and the log count here
    prints = [resume.fingerprint(tiny_config.replace(meta={"threads": t}), taste_log, {}, model)
              for t in (1, 4, "auto")]
    assert prints[0] == prints[1] == prints[2]


def test_fit_threads_flag_reaches_the_saved_config(taste_log, tmp_path):
    import polars as pl

    warm = tmp_path / "warm.csv"
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids()}).write_csv(warm)
    (tmp_path / "short.toml").write_text("[meta]\nepochs = 1\n[model]\nitem_init = 'random'\n")
    assert main(["fit", "--config", str(tmp_path / "short.toml"), "--data", str(warm), "--threads", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert json.loads((tmp_path / "m" / "model.json").read_text())["config"]["meta"]["threads"] == 1


@pytest.mark.parametrize("command", ["fit", "quickstart", "tune", "benchmark", "recommend"])
def test_every_training_command_takes_threads_as_a_number_or_auto(command, capsys):
    required = {"fit": ["--data", "d", "--out", "o"], "quickstart": [], "tune": ["--data", "d", "--out", "o"],
                "benchmark": ["--out", "o"], "recommend": ["--model", "m", "--history", "h", "--out", "o"]}[command]
    for value, parsed in (("auto", "auto"), ("2", 2)):
        assert build_parser().parse_args([command, *required, "--threads", value]).threads == parsed
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_:
            main([command, *required, "--threads", bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "--threads" in err and "'auto'" in err and len(err.splitlines()) == 1


def test_the_quickstarts_mult_vae_is_bounded_by_its_validation_users_not_by_the_clock(monkeypatch):
    # with a fixed seed (test_baselines: same seed, same scores) a fit that stops on its validation users
    # whatever the clock says gives the same table on a busy machine as on an idle one
    import numpy as np

    from recmaml.protocol import cold_split, support_arrays

    log_ = taste_groups(n_users=60, per_user=10)
    split = cold_split(log_, cold_fraction=0.2, n_support=3, order="random", seed=0)
    validation = cold_split(split.warm, cold_fraction=0.2, n_support=3, order="random", seed=1)
    monkeypatch.setattr(quickstart, "MULT_VAE", {**quickstart.MULT_VAE, "hidden": 32, "latent": 8})
    idle, idle_params = quickstart.mult_vae_tuned(split.warm, validation)
    clock = iter(range(0, 10**9, 1000))  # every look at the clock: 1,000 s later, a very busy machine
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    busy, busy_params = quickstart.mult_vae_tuned(split.warm, validation)
    assert busy_params == idle_params and busy_params["epochs"] >= 1 and busy.max_seconds is None and busy.seed == 0
    # the input sizes were tuned: the chosen one is the benchmark's grid's, or a step past its ends
    assert busy_params["input_items"][0] == 1 and busy.input_items == tuple(busy_params["input_items"])
    np.testing.assert_array_equal(busy.score(*support_arrays(split.cold_support)),
                                  idle.score(*support_arrays(split.cold_support)))


def test_mult_vae_without_a_time_budget_accepts_none_only():
    assert MultVAE(max_seconds=None).max_seconds is None
    with pytest.raises(ValueError, match="max_seconds"):
        MultVAE(max_seconds=0.0)
