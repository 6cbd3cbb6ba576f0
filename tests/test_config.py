from pathlib import Path

import pytest

from conftest import REPO_ROOT

from recmaml.config import Config, config_from_dict, load_config
from recmaml.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"tiny.toml", "ml-100k.toml", "ml-100k-rating.toml", "ml-100k-temporal.toml", "ml-1m.toml", "ml-latest-small.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_and_wrong_types_are_listed_together(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[meta]\nepoch = 3\ninner_lr = "fast"\n[model]\nobjective = "ranking"\n[extra]\nx = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "unknown key meta.epoch" in msg and "epochs" in msg  # lists the valid keys
    assert "meta.inner_lr" in msg and "wrong type" in msg
    assert "model.objective" in msg and "implicit" in msg
    assert "unknown section [extra]" in msg


def test_ranges_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="support_min"):
        load_config(None, tasks={"support_min": 5, "support_max": 2})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("[meta\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "broken.toml")


def test_defaults_live_in_code_and_overrides_apply():
    cfg = load_config(None, meta={"epochs": 3}, model={"user_hidden": [8, 8]})
    assert cfg.meta.epochs == 3 and cfg.model.user_hidden == (8, 8)
    assert cfg.replace(serve={"inner_steps": 0}).serve.inner_steps == 0
    assert cfg.meta.inner_lr == Config().meta.inner_lr


def test_inconsistent_knobs_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="tasks.negatives > 0"):
        load_config(None, model={"loss": "bpr"})
    with pytest.raises(ConfigError, match=r"meta.ema must be in \[0, 1\)"):
        load_config(None, meta={"ema": 1.5})
    with pytest.raises(ConfigError, match="inner_lr must be > 0"):
        load_config(None, meta={"inner_lr": 0.0})
    with pytest.raises(ConfigError, match="meta.gradient_groups = 0; it must be >= 1"):
        load_config(None, meta={"gradient_groups": 0})
    assert load_config(None, meta={"meta_batch_size": 1}).meta.gradient_groups == 2  # an empty group adds nothing


def test_shipped_configs_load_by_name_and_unknown_names_list_them(tmp_path, monkeypatch):
    from recmaml.config import shipped_configs

    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ folder here
    assert {"ml-100k", "tiny"} <= set(shipped_configs())
    assert load_config("ml-100k") == load_config("ml-100k.toml") == load_config(REPO_ROOT / "configs/ml-100k.toml")
    with pytest.raises(ConfigError, match="ml-100k-temporal"):  # the error names what ships
        load_config("ml-100k-temporl")


def test_an_absent_or_unknown_device_is_a_config_error():
    import torch

    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load_config(None, meta={"device": "tpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="meta.device.*not available"):
            load_config(None, meta={"device": "cuda"})


def test_auto_epochs_and_patience_follow_the_number_of_training_users():
    from recmaml.meta import AUTO_OUTER_STEPS, training_length

    meta = Config().meta
    assert (meta.epochs, meta.patience) == ("auto", "auto")
    small = training_length(meta, 600)  # ML-100K's training users: 5 steps an epoch, the 300 cap binds
    assert (small.epochs, small.patience) == (300, 42)
    large = training_length(meta, 12_900)  # CiaoDVD's: 101 steps an epoch
    assert large.epochs == -(-AUTO_OUTER_STEPS // 101) == 60 and large.patience == 8
    huge = training_length(meta, 5_000_000)
    assert (huge.epochs, huge.patience) == (10, 3)  # at least 10 epochs however large the log
    pinned = training_length(Config().replace(meta={"epochs": 7, "patience": 0}).meta, 12_900)
    assert (pinned.epochs, pinned.patience) == (7, 0)  # whole numbers are kept as given


def test_epochs_and_patience_take_whole_numbers_or_auto():
    with pytest.raises(ConfigError, match=r"meta.epochs = 'many'; use a whole number or 'auto'"):
        config_from_dict({"meta": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="meta.patience must be >= 0"):
        config_from_dict({"meta": {"patience": -1}})
