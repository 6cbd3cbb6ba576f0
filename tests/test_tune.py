"""`recmaml tune`: spaces, the successive-halving schedule, and a whole run on a tiny log."""

import re

import polars as pl
import pytest

from recmaml import load_config
from recmaml.cli import main
from recmaml.config import ConfigError
from recmaml.synthetic import clustered_interactions
from recmaml.tune import config_toml, load_space, planned_fits, rung_budgets, space_from_dict


def test_the_default_space_loads_and_bad_spaces_are_clear_errors():
    assert {d.name for d in load_space("default")} >= {"meta.inner_lr", "model.support_encoder"}
    for raw, words in [
        ({"meta": {"inner_stepz": [1, 2]}}, "unknown field meta.inner_stepz"),
        ({"metaa": {"inner_lr": [1.0]}}, "unknown section [metaa]"),
        ({"meta": {"inner_lr": []}}, "give at least one value"),
        ({"meta": {"inner_lr": {"low": 2.0, "high": 1.0}}}, "empty range"),
        ({"meta": {"inner_lr": {"low": 0.0, "high": 1.0, "log": True}}}, "log needs low > 0"),
        ({"meta": {"inner_steps": ["two"]}}, "meta.inner_steps = 'two'"),
        ({"meta": {"inner_lr": 0.5}}, "give a list of values or a range"),
        ({}, "names no field"),
    ]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            space_from_dict(raw)


def test_the_schedule_fits_the_budget_and_halves_the_trials():
    budgets = rung_budgets(600.0, 9, 3, 2.0)
    assert len(budgets) == 3 and budgets[1] == pytest.approx(3 * budgets[0])
    # 9 trials at b, 3 at 3b, 1 at 9b: three rungs of equal cost that together make the budget
    assert 9 * budgets[0] + 3 * budgets[1] + 1 * budgets[2] == pytest.approx(600.0)
    assert planned_fits(9, 3, 3) == 14  # 9 + 3 + 1 trials' fits, and the untuned config's at the top rung
    assert len(rung_budgets(10.0, 9, 3, 2.0)) == 1  # too little time for halving: one rung


def test_best_toml_reads_back_to_the_same_config(tmp_path):
    cfg = load_config(None, meta={"inner_lr": 0.123, "ema": 0.99}, model={"user_hidden": [32, 16]},
                      serve={"inner_steps": 3})
    (tmp_path / "best.toml").write_text(config_toml(cfg, header="a header\nover two lines"))
    assert load_config(tmp_path / "best.toml") == cfg


def test_tune_end_to_end_on_a_tiny_log(tmp_path, capsys):
    log = clustered_interactions(160, 60, min_per_user=6, max_per_user=25, seed=4)
    pl.DataFrame({"user_id": log.user_ids(), "item_id": log.item_ids(), "rating": log.rating,
                  "timestamp": log.timestamp}).write_csv(tmp_path / "log.csv")
    (tmp_path / "space.toml").write_text('[meta]\ninner_lr = { low = 0.1, high = 1.0, log = true }\n'
                                         'inner_steps = [1, 2]\n[tasks]\norder = ["random", "mixed"]\n')
    code = main(["--quiet", "tune", "--data", str(tmp_path / "log.csv"), "--space", str(tmp_path / "space.toml"),
                 "--config", "tiny", "--trials", "4", "--budget-minutes", "0.5", "--out", str(tmp_path / "t")])
    assert code == 0
    board = pl.read_csv(tmp_path / "t" / "leaderboard.csv")
    assert board.height == 4 and board["rank"].to_list() == [1, 2, 3, 4]
    assert set(board.columns) >= {"meta.inner_lr", "meta.inner_steps", "tasks.order", "validation_ndcg@20"}
    best = load_config(tmp_path / "t" / "best.toml")
    first = board.row(0, named=True)
    assert best.meta.inner_lr == pytest.approx(first["meta.inner_lr"]) and best.tasks.order == first["tasks.order"]
    assert best.model.embedding_dim == load_config("tiny").model.embedding_dim  # the base config is kept
    out = capsys.readouterr().out
    assert "best: validation nDCG@20" in out
    assert "shape:" not in out and "untuned" in out  # a table of what varied, not polars' repr of every field
    # the untuned row is scored, at the budget of the trials that went furthest: what tuning gained
    untuned = next(line.split() for line in out.splitlines() if line.startswith("untuned"))
    assert 0.0 < float(untuned[1]) < 1.0 and float(untuned[2]) == pytest.approx(first["budget_s"], abs=0.1)
    gain = re.search(r"\(([+-]\d\.\d{4}) over the untuned config\)", out)
    assert gain and float(gain[1]) == pytest.approx(first["validation_ndcg@20"] - float(untuned[1]), abs=1.01e-4)  # 4 digits
    assert "the untuned config 0." in (tmp_path / "t" / "best.toml").read_text()
    # the best config trains with `recmaml fit`
    assert main(["--quiet", "fit", "--config", str(tmp_path / "t" / "best.toml"), "--data", str(tmp_path / "log.csv"),
                 "--out", str(tmp_path / "model")]) == 0


def test_a_bad_space_exits_2_before_any_work(tmp_path, capsys):
    (tmp_path / "space.toml").write_text("[meta]\ninner_lr = []\n")
    code = main(["tune", "--data", str(tmp_path / "absent.csv"), "--space", str(tmp_path / "space.toml"),
                 "--out", str(tmp_path / "t")])
    assert code == 2 and "give at least one value" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_the_leaderboard_prints_the_fields_that_varied_beside_the_untuned_config():
    from recmaml.tune import Trial, leaderboard_table

    trials = [Trial(0, {"meta.inner_lr": 0.123456, "meta.inner_steps": 2, "tasks.order": "mixed"}, {60.0: 0.41}),
              Trial(1, {"meta.inner_lr": 0.9, "meta.inner_steps": 2, "tasks.order": "random"}, {60.0: 0.43}),
              Trial(2, {"meta.inner_lr": 0.3, "meta.inner_steps": 2, "tasks.order": "mixed"}, {20.0: 0.45})]
    base = load_config("tiny")
    lines = leaderboard_table(trials, base).splitlines()
    header, rows = lines[0].split(), [line.split() for line in lines[1:5]]
    assert header == ["rank", "trial", "nDCG@20", "budget_s", "meta.inner_lr", "tasks.order"]  # only what varied
    assert rows[0] == ["1", "1", "0.4300", "60", "0.9", "random"]  # the later rung first, then the score
    assert rows[1][4] == "0.1235" and rows[2][:2] == ["3", "2"]
    assert rows[3] == ["untuned", str(base.meta.inner_lr), base.tasks.order]  # the base config, for comparison
    assert lines[5] == "the same in every trial: meta.inner_steps = 2"
    assert max(len(line) for line in lines) < 100 and "shape:" not in "\n".join(lines)


def test_the_untuned_row_shows_its_score_and_budget_when_scored():
    from recmaml.tune import Trial, leaderboard_table

    trials = [Trial(0, {"meta.inner_lr": 0.2}, {60.0: 0.41}), Trial(1, {"meta.inner_lr": 0.9}, {60.0: 0.43})]
    base = load_config("tiny")
    untuned = Trial(-1, {"meta.inner_lr": base.meta.inner_lr}, {60.0: 0.38})
    lines = leaderboard_table(trials, base, untuned=untuned).splitlines()
    assert lines[3].split() == ["untuned", "0.3800", "60", str(base.meta.inner_lr)]
