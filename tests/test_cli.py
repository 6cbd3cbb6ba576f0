"""The command line: end to end through a subprocess, every error path in-process (exit 2, one line, no
output file)."""

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch

from conftest import REPO_ROOT
from recmaml.connectors import read_ranked_lists
from recmaml import MetaRecommender, __version__
from recmaml.cli import build_parser, main

GROUP = 20  # items per taste group in tests/planted.taste_groups
COMMANDS = ("fit", "recommend", "spark-recommend", "predict", "evaluate", "quickstart", "benchmark", "tune")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "recmaml", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def files(tmp_path_factory, taste_log):
    """A warm log with other column names, cold histories (3 group-0 items for x, 3 group-1 items for y),
    their held-out items, pairs and candidates."""
    folder = tmp_path_factory.mktemp("cli")
    pl.DataFrame({"user": taste_log.user_ids(), "item": taste_log.item_ids(), "rating": taste_log.rating}
                 ).write_csv(folder / "warm.csv")
    pl.DataFrame({"user": ["x"] * 3 + ["y"] * 3, "item": [0, 1, 2, 20, 21, 22]}).write_csv(folder / "cold.csv")
    pl.DataFrame({"user": ["x", "x", "y", "y"], "item": [3, 4, 23, 24], "rating": [5.0] * 4}).write_csv(folder / "heldout.csv")
    pl.DataFrame({"user": ["x", "x", "y"], "item": [5, 45, 25]}).write_csv(folder / "pairs.csv")
    pl.DataFrame({"user": ["x", "x", "x", "y"], "item": [41, 7, 27, 26]}).write_csv(folder / "candidates.csv")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, taste_log, tiny_config):
    path = tmp_path_factory.mktemp("model") / "model"
    MetaRecommender(tiny_config).fit(taste_log).save(path)
    return path


COLS = ("--user-col", "user", "--item-col", "item")


def test_help_lists_every_command_and_each_has_an_example(capsys):
    out = run("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)
    assert __version__ in run("--version").stdout
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([command, "--help"])
        assert exit_.value.code == 0 and f"example:\n  recmaml {command}" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_answer_without_importing_torch(flag):
    # torch takes seconds to import; a user asking what the commands are should not wait for it
    runner = ("import runpy, sys\n"
              f"sys.argv = ['recmaml', {flag!r}]\n"
              "try:\n    runpy.run_module('recmaml', run_name='__main__')\n"
              "except SystemExit as exit_:\n    assert exit_.code == 0, exit_.code\n"
              "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch"), out.stdout[-300:]


def test_a_missing_extra_is_installed_from_the_checkout_not_a_package_index(model_dir, monkeypatch, capsys):
    # no package index has recmaml: `pip install 'recmaml[serve]'` fails; the checkout's editable install works
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the serve extra were not installed
    monkeypatch.delitem(sys.modules, "recmaml.service", raising=False)
    import recmaml

    monkeypatch.delattr(recmaml, "service", raising=False)  # `from recmaml import service` reads it first
    assert main(["serve", "--model", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{sys.executable} -m pip install -e '{REPO_ROOT}[serve]'" in err and "'recmaml[serve]'" not in err


def test_a_wheel_install_is_told_the_extras_own_packages(tmp_path):
    from recmaml.errors import install_extra

    hint = install_extra("serve", package_dir=tmp_path / "site-packages" / "recmaml")  # no pyproject.toml above
    assert "pip install 'fastapi>=" in hint and "recmaml[" not in hint


def test_benchmark_help_still_names_its_systems_and_default_sizes(capsys):
    from recmaml.benchmark import DEFAULT_KS, SYSTEMS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--help"])
    page = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert f"default {','.join(map(str, DEFAULT_KS))};" in page and ", ".join(SYSTEMS) in page


def test_fit_recommend_predict_evaluate_end_to_end(files, tmp_path):
    fit = run("fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(files / "warm.csv"), *COLS,
              "--out", str(tmp_path / "model"))
    assert fit.returncode == 0, fit.stderr
    assert "meta-training" in fit.stderr and "saved the model" in fit.stderr  # progress bar and a summary
    assert "ran all 15 epochs (meta.epochs); best validation nDCG@20 0." in fit.stderr  # tiny.toml: no patience
    assert "val_ndcg@20=" in fit.stderr

    rec = run("recommend", "--model", str(tmp_path / "model"), "--history", str(files / "cold.csv"), *COLS,
              "--k", "5", "--out", str(tmp_path / "recs.parquet"), "--quiet")
    assert rec.returncode == 0 and rec.stderr == "", rec.stderr
    recs = pl.read_parquet(tmp_path / "recs.parquet")
    assert recs.columns == ["user_id", "item_id", "score", "rank"] and recs.height == 10
    for user, group in (("x", 0), ("y", 1)):
        assert (recs.filter(pl.col("user_id") == user)["item_id"].to_numpy() // GROUP == group).sum() >= 4

    pred = run("predict", "--model", str(tmp_path / "model"), "--history", str(files / "cold.csv"), *COLS,
               "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "pred.csv"), "--quiet")
    assert pred.returncode == 0, pred.stderr
    preds = pl.read_csv(tmp_path / "pred.csv")
    assert preds.columns == ["user_id", "item_id", "prediction"] and preds.height == 3
    assert preds["prediction"][0] > preds["prediction"][1]  # x: its group's item above another group's

    ev = run("evaluate", "--model", str(tmp_path / "model"), "--history", str(files / "cold.csv"), *COLS,
             "--heldout", str(files / "heldout.csv"), "--k", "17", "--out", str(tmp_path / "metrics.json"))
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 17 places hold every unseen item of the user's group; which come first is the planted data's noise
    # (EASE, which the serving priors weigh in, puts items 3 and 4 11th and 12th for a group-0 user)
    assert metrics["users"] == 2 and metrics["recall@17"] >= 0.5 and "ndcg@17" in ev.stdout


def test_streamed_recommend_equals_one_chunk_and_candidates_are_kept(files, model_dir, tmp_path):
    args = ["recommend", "--model", str(model_dir), "--history", str(files / "cold.csv"), *COLS, "--k", "4", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole.csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "chunks.csv"), "--chunk-rows", "2"]) == 0
    whole, chunks = read_ranked_lists(tmp_path / "whole.csv"), read_ranked_lists(tmp_path / "chunks.csv")
    key = lambda r: sorted(zip(r.user_id.tolist(), r.item_id.tolist(), r.rank.tolist()))  # noqa: E731
    assert key(whole) == key(chunks)

    assert main([*args, "--out", str(tmp_path / "cands.jsonl"), "--candidates", str(files / "candidates.csv"),
                 "--chunk-rows", "2"]) == 0
    cands = read_ranked_lists(tmp_path / "cands.jsonl").to_pandas()
    ranked_for_x = cands[cands.user_id == "x"].item_id.tolist()
    assert ranked_for_x[0] == 7 and sorted(ranked_for_x) == [7, 27, 41]  # only candidates, x's group first
    assert cands[cands.user_id == "y"].item_id.tolist() == [26]


def test_unknown_items_are_one_summary_line(files, model_dir, tmp_path, capsys):
    (tmp_path / "hist.csv").write_text("user,item\nx,0\nx,999\ny,998\ny,2\nz,1\n")  # a minority unknown
    assert main(["recommend", "--model", str(model_dir), "--history", str(tmp_path / "hist.csv"), *COLS,
                 "--chunk-rows", "2", "--out", str(tmp_path / "r.csv")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines == ["warning: dropped 2 history rows naming 2 items the model does not know"]


def test_fit_says_why_it_stopped_and_names_the_rating_validation_metric(files, tmp_path):
    (tmp_path / "rating.toml").write_text((REPO_ROOT / "configs/tiny.toml").read_text().replace(
        'objective = "implicit"', 'objective = "rating"').replace("epochs = 15\npatience = 0", "epochs = 40\npatience = 1\nema = 0.0"))  # raw weights: validation stalls
    fit = run("fit", "--config", str(tmp_path / "rating.toml"), "--data", str(files / "warm.csv"), *COLS,
              "--out", str(tmp_path / "model"))
    assert fit.returncode == 0, fit.stderr
    assert "stopped early at epoch" in fit.stderr and "of 40: validation RMSE had not improved for 1 epochs" in fit.stderr
    rmse = float(fit.stderr.split("best validation RMSE ")[1].split()[0])
    assert 0 < rmse < 3  # an RMSE as it reads, not its negation
    assert "val_rmse=" in fit.stderr


def test_duplicated_rows_are_one_summary_line_for_the_whole_run(files, model_dir, tmp_path, capsys):
    rows = "".join(f"{u},{i}\n{u},{i}\n" for u, i in (("x", 0), ("y", 20), ("z", 40), ("w", 1)))
    (tmp_path / "dup.csv").write_text("user,item\n" + rows)  # each pair twice, over several chunks
    assert main(["recommend", "--model", str(model_dir), "--history", str(tmp_path / "dup.csv"), *COLS,
                 "--chunk-rows", "2", "--out", str(tmp_path / "r.csv")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "dropped 4 duplicated (user, item) history rows in all" in lines[0], lines


def bad_invocations(files, model_dir, tmp):
    """(argv, words the error must contain, the output that must not appear)."""
    cold = ["--history", str(files / "cold.csv"), *COLS]
    rec = ["recommend", "--model", str(model_dir)]
    (tmp / "bad.toml").write_text("[meta]\ninner_stepz = 2\n")
    (tmp / "corrupt").mkdir()
    (tmp / "null_pairs.csv").write_text("user,item\nx,1\n,2\n")
    (tmp / "other_users.csv").write_text("user,region\n1001,a\n1002,b\n")
    (tmp / "corrupt" / "model.json").write_text("{")
    return [
        ([*rec, "--history", str(tmp / "nope.csv"), "--out", str(tmp / "a.csv")], "nope.csv", tmp / "a.csv"),
        ([*rec, "--history", str(files / "cold.csv"), "--out", str(tmp / "b.csv")], "--user-col", tmp / "b.csv"),
        ([*rec, *cold, "--out", str(tmp / "c.xlsx")], "unknown file extension", tmp / "c.xlsx"),
        ([*rec, *cold, "--out", str(tmp / "no" / "d.csv")], "does not exist", tmp / "no" / "d.csv"),
        ([*rec, *cold, "--k", "0", "--out", str(tmp / "e.csv")], "--k", tmp / "e.csv"),
        (["recommend", "--model", str(tmp / "absent"), *cold, "--out", str(tmp / "f.csv")], "absent", tmp / "f.csv"),
        (["recommend", "--model", str(tmp / "corrupt"), *cold, "--out", str(tmp / "g.csv")], "corrupt", tmp / "g.csv"),
        (["fit", "--config", str(tmp / "bad.toml"), "--data", str(files / "warm.csv"), *COLS, "--out", str(tmp / "m")],
         "inner_stepz", tmp / "m"),
        (["predict", "--model", str(model_dir), *cold, "--pairs", str(files / "cold.csv"), "--out", str(tmp / "p.csv"),
          "--user-col", "nobody"], "nobody", tmp / "p.csv"),
        (["evaluate", "--model", str(model_dir), *cold, "--heldout", str(tmp / "gone.csv"),
          "--out", str(tmp / "m.json")], "gone.csv", tmp / "m.json"),
        (["evaluate", "--model", str(model_dir), *cold, "--heldout", str(files / "heldout.csv"),
          "--out", str(tmp / "no" / "m.json")], "does not exist", tmp / "no" / "m.json"),
        ([*rec, *cold, "--chunk-rows", "0", "--out", str(tmp / "h.csv")], "--chunk-rows", tmp / "h.csv"),
        ([*rec, *cold, "--batch-size", "-1", "--out", str(tmp / "i.csv")], "--batch-size", tmp / "i.csv"),
        (["predict", "--model", str(model_dir), *cold, "--pairs", str(files / "pairs.csv"), "--out", "pandas"],
         "not an output", tmp / "pandas"),
        (["predict", "--model", str(model_dir), *cold, "--pairs", str(tmp / "null_pairs.csv"),
          "--out", str(tmp / "q.csv")], "null or empty ids", tmp / "q.csv"),
        ([*rec, *cold, "--user-features", str(tmp / "other_users.csv"), "--out", str(tmp / "j.csv")],
         "names none of", tmp / "j.csv"),
        ([*rec, *cold, "--device", "tpu", "--out", str(tmp / "k.csv")], "--device tpu: unknown device", tmp / "k.csv"),
        (["fit", "--data", str(files / "warm.csv"), *COLS, "--device", "cuda:x", "--out", str(tmp / "m2")],
         "--device cuda:x", tmp / "m2"),
        *([] if torch.cuda.is_available() else [
            ([*rec, *cold, "--device", "cuda", "--out", str(tmp / "l.csv")], "is not available", tmp / "l.csv"),
            (["fit", "--data", str(files / "warm.csv"), *COLS, "--device", "cuda", "--out", str(tmp / "m3")],
             "use cpu", tmp / "m3")]),
    ]


def test_every_error_exits_2_with_one_line_and_no_output(files, model_dir, tmp_path, capsys):
    for argv, words, output in bad_invocations(files, model_dir, tmp_path):
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith(f"recmaml {argv[0]}: error:") and words in lines[0], err
        assert "Traceback" not in err and not output.exists(), argv
        assert not [p for p in output.parent.glob(".*.tmp")] if output.parent.is_dir() else True


def test_device_flag_serves_on_the_named_device(files, model_dir, tmp_path):
    args = ["recommend", "--model", str(model_dir), "--history", str(files / "cold.csv"), *COLS, "--k", "4", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "default.csv")]) == 0
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "cpu.csv")]) == 0
    assert (tmp_path / "default.csv").read_text() == (tmp_path / "cpu.csv").read_text()


def test_a_model_saved_with_a_gpu_device_loads_on_the_cpu(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "gpu_model"
    shutil.copytree(model_dir, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["config"]["meta"]["device"] = "cuda"  # as trained on a GPU machine
    (copy / "model.json").write_text(json.dumps(meta))
    assert MetaRecommender.load(copy).config.meta.device == "cpu"


@pytest.mark.parametrize("argv,needle", [
    (["recommend", "--model", "m"], "--history"),
    (["recommend", "--model", "m", "--history", "h.csv", "--out", "o.csv", "--k", "2.5"], "--k: invalid int value"),
    (["recommen"], "invalid choice: 'recommen'"),
])
def test_usage_errors_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert needle in err and err.endswith("--help")


def test_fit_reads_side_feature_tables(files, tmp_path):
    (tmp_path / "items.csv").write_text("item\ttheme\tyear\n" + "".join(
        f"{i}\t{'abc'[i // GROUP]}|all\t{1990 + i}\n" for i in range(3 * GROUP)))
    (tmp_path / "users.csv").write_text("user,region\n" + "".join(f"{u},r{u % 2}\n" for u in range(0, 240, 3)))
    assert main(["fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(files / "warm.csv"), *COLS,
                 "--item-features", str(tmp_path / "items.csv"), "--user-features", str(tmp_path / "users.csv"),
                 "--out", str(tmp_path / "model"), "--quiet"]) == 0
    rec = MetaRecommender.load(tmp_path / "model")
    assert rec.model.item_spec.multi_hot == {"theme": 4} and rec.model.item_spec.numeric == ("year",)
    assert rec.user_layout["categorical"]["region"] == ["r0", "r1"]


def test_candidates_need_no_rating_column_and_users_without_history_are_ranked(files, model_dir, tmp_path):
    (tmp_path / "hist.csv").write_text("user,item,stars\n1,0,5\n1,1,4\nx7,20,5\n")
    (tmp_path / "cands.csv").write_text("user,item\n1,45\n1,3\nnew,5\nnew,25\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(tmp_path / "hist.csv"), *COLS,
                 "--rating-col", "stars", "--candidates", str(tmp_path / "cands.csv"), "--chunk-rows", "1",
                 "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    ranked = read_ranked_lists(tmp_path / "r.csv").to_pandas()
    assert ranked[ranked.user_id == "1"].item_id.tolist() == [3, 45]  # int-looking ids among string ids
    assert sorted(ranked[ranked.user_id == "new"].item_id) == [5, 25]  # candidates only, no history
    assert ranked[ranked.user_id == "x7"].empty


def test_unknown_items_are_summarized_per_input(files, model_dir, tmp_path, capsys):
    (tmp_path / "cands.csv").write_text("user,item\nx,5\nx,777\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(files / "cold.csv"), *COLS,
                 "--candidates", str(tmp_path / "cands.csv"), "--out", str(tmp_path / "r.csv")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines == ["warning: 1 user of the history has no candidate rows (e.g. 'y') and got no list: the "
                     "candidates restrict every list to the user's own",
                     "warning: dropped 1 candidate rows naming 1 items the model does not know"]


def test_predict_reads_pairs_from_sql(files, model_dir, tmp_path):
    pytest.importorskip("adbc_driver_sqlite")
    from recmaml.connectors import write_frame

    uri = f"sqlite:///{tmp_path / 'pairs.db'}"
    write_frame(pl.DataFrame({"user": ["x", "y"], "item": [3, 45]}), uri, table="todo")
    assert main(["predict", "--model", str(model_dir), "--history", str(files / "cold.csv"), *COLS,
                 "--pairs", uri, "--pairs-table", "todo", "--out", str(tmp_path / "p.parquet"), "--quiet"]) == 0
    assert pl.read_parquet(tmp_path / "p.parquet")["item_id"].to_list() == [3, 45]


def test_a_rating_model_refuses_a_history_without_ratings(files, tmp_path, taste_log, tiny_config, capsys):
    path = tmp_path / "rating_model"
    MetaRecommender(tiny_config.replace(model={"objective": "rating"})).fit(taste_log).save(path)
    code = main(["predict", "--model", str(path), "--history", str(files / "cold.csv"), *COLS,
                 "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "--rating-col" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()


def test_user_features_reach_serving_in_training_terms(files, tmp_path):
    (tmp_path / "users.csv").write_text("user,age\n" + "".join(f"{u},{20 + u % 40}\n" for u in range(240)))
    (tmp_path / "cold_users.csv").write_text("user,age\nx,25\ny,500\n")
    assert main(["fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(files / "warm.csv"), *COLS,
                 "--user-features", str(tmp_path / "users.csv"), "--out", str(tmp_path / "model"), "--quiet"]) == 0
    rec = MetaRecommender.load(tmp_path / "model")
    mean, std = rec.user_layout["numeric"]["age"]
    assert abs(mean - 39.5) < 0.1 and 11 < std < 12  # the warm users' statistics, saved with the model
    args = ["recommend", "--model", str(tmp_path / "model"), "--history", str(files / "cold.csv"), *COLS, "--quiet"]
    assert main([*args, "--out", str(tmp_path / "with.csv"), "--user-features", str(tmp_path / "cold_users.csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "without.csv")]) == 0
    with_, without = read_ranked_lists(tmp_path / "with.csv"), read_ranked_lists(tmp_path / "without.csv")
    assert not np.allclose(with_.score, without.score)  # the features are used at serving


def test_an_early_stop_closes_the_bar_at_the_stop_with_the_reason(taste_log, tmp_path):
    (tmp_path / "stops.toml").write_text((REPO_ROOT / "configs/tiny.toml").read_text().replace(
        "epochs = 15\npatience = 0", "epochs = 300\npatience = 1\nema = 0.0"))  # raw weights: validation stalls
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(), "rating": taste_log.rating,
                  "timestamp": taste_log.timestamp}).write_csv(tmp_path / "warm.csv")  # timestamps: sample weights too
    fit = run("fit", "--config", str(tmp_path / "stops.toml"), "--data", str(tmp_path / "warm.csv"),
              "--out", str(tmp_path / "model"))
    assert fit.returncode == 0, fit.stderr
    # the bar as left (the last weights': a log with timestamps also trains sample weights, whose bar
    # opens after the main weights' bar has closed at its stop)
    lines = fit.stderr.replace("\r", "\n").splitlines()
    sample_bar = [i for i, line in enumerate(lines) if line.startswith("sample weights")]
    assert sample_bar, fit.stderr
    # why the main weights stopped is said when they stop, before the sample weights' phase starts
    said = [i for i, line in enumerate(lines) if line.startswith("meta-training stopped early at epoch")]
    assert said and said[0] < sample_bar[0], fit.stderr
    assert any(line.startswith("sample weights stopped early at epoch") for line in lines[sample_bar[0]:])
    last = [line for line in lines if "stopped (early stopping) at epoch" in line][-1]
    stopped = int(last.split("stopped (early stopping) at epoch ")[1].split()[0])
    assert stopped < 300 and "of 300: 100%" in last and f"{stopped}/{stopped}" in last, last


def test_a_resumed_fits_bar_counts_only_its_own_epochs_in_the_rate():
    import argparse

    from tqdm import tqdm

    from recmaml.cli.common import LazyBar as _LazyBar

    bar = _LazyBar(argparse.Namespace(quiet=False), total=300, unit="epoch", desc="meta-training")
    bar(97, {"train_loss": 1.0, "of": 300})  # the first epoch after a checkpoint of 96
    shown = tqdm.format_meter(**{**bar.bar.format_dict, "elapsed": 10.0, "rate": None})
    assert "97/300" in shown and "10.00s/epoch" in shown, shown  # one epoch in 10 s, not 97


def test_nproc_help_says_what_is_true_and_more_ranks_than_cores_is_a_warning(files, tmp_path, monkeypatch, capsys):
    import os

    from recmaml.cli import training

    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "bit for bit" in help_ and "1.44 x slower" in help_ and "It pays on" in help_
    monkeypatch.setattr(training, "_fit_on_ranks", lambda args: None)  # the warning comes before any rank starts
    cores = os.cpu_count() or 1
    argv = ["fit", "--data", str(files / "warm.csv"), *COLS, "--out", str(tmp_path / "m"),
            "--set", f"meta.gradient_groups={cores + 1}"]  # as many groups as ranks: no error before the warning
    assert main([*argv, "--nproc", str(cores + 1)]) == 0
    assert f"--nproc {cores + 1} starts more processes than this machine's {cores} cores" in capsys.readouterr().err
    if cores > 1:
        assert main([*argv, "--nproc", str(cores)]) == 0
        assert "more processes" not in capsys.readouterr().err


# ---- no silent wrong answers, and advice in the CLI's own spelling -------------------------------------


def _recommend(model, history, out, *flags):
    return main(["recommend", "--model", str(model), "--history", str(history), *COLS, "--out", str(out), *flags])


def test_a_history_naming_no_model_item_is_an_error_with_examples_and_the_cause(model_dir, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user,item\nx,m0\nx,m1\ny,m20\n")  # 'm'-prefixed ids, a numeric model
    assert _recommend(model_dir, tmp_path / "h.csv", tmp_path / "r.csv") == 2
    err = capsys.readouterr().err
    assert "none of its 3 rows names an item the model knows" in err and "'m0'" in err and "0, 1, 2" in err
    assert "prefix 'm'" in err and "--allow-unknown-items" in err and "allow_unknown_items" not in err
    assert not (tmp_path / "r.csv").exists()
    assert _recommend(model_dir, tmp_path / "h.csv", tmp_path / "r.csv", "--allow-unknown-items") == 0
    err = capsys.readouterr().err
    assert "2 users; 2 named only items the model does not know and were ranked from the meta-learned start" in err
    lists = read_ranked_lists(tmp_path / "r.csv").to_pandas()
    assert lists.groupby("user_id").item_id.apply(tuple).nunique() == 1  # what the flag accepts: one list for all


def test_a_history_mostly_of_unknown_items_is_a_loud_warning(model_dir, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user,item\nx,0\nx,901\ny,902\ny,903\n")
    assert _recommend(model_dir, tmp_path / "h.csv", tmp_path / "r.csv") == 0
    err = capsys.readouterr().err
    assert "3 of its 4 rows (75%) name items the model does not know" in err and "901" in err
    assert "1 user is left with no known item" in err
    assert _recommend(model_dir, tmp_path / "h.csv", tmp_path / "r.csv", "--allow-unknown-items") == 0
    assert "75%" not in capsys.readouterr().err


def test_predict_and_evaluate_check_the_history_too(model_dir, files, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user,item,rating\nx,m0,5\n")
    common = ["--model", str(model_dir), "--history", str(tmp_path / "h.csv"), *COLS]
    assert main(["predict", *common, "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "p.csv")]) == 2
    assert main(["evaluate", *common, "--heldout", str(files / "heldout.csv")]) == 2
    assert capsys.readouterr().err.count("names an item the model knows") == 2


def test_users_without_candidates_are_counted_in_the_summary(model_dir, files, tmp_path, capsys):
    (tmp_path / "cands.csv").write_text("user,item\nx,5\n")
    assert _recommend(model_dir, files / "cold.csv", tmp_path / "r.csv", "--candidates", str(tmp_path / "cands.csv")) == 0
    err = capsys.readouterr().err
    assert "1 user of the history has no candidate rows (e.g. 'y') and got no list" in err
    assert "(2 users; 1 had no candidate rows and got no list)" in err
    assert read_ranked_lists(tmp_path / "r.csv").to_pandas().user_id.tolist() == ["x"]


def test_k_beyond_the_catalog_is_said_once(model_dir, files, tmp_path, capsys):
    assert _recommend(model_dir, files / "cold.csv", tmp_path / "r.csv", "--k", "5000", "--chunk-rows", "3") == 0
    err = capsys.readouterr().err
    assert err.count("--k 5000 is more than the model's") == 1


def test_evaluate_derives_the_relevant_rating_from_the_logs_scale(model_dir, files, tmp_path, capsys):
    # a 0.5-4 scale: 3.5 is relevant there (as fit and benchmark judge it), which a fixed 4 would miss
    (tmp_path / "held.csv").write_text("user,item,rating\nx,3,3.5\nx,4,0.5\ny,23,4\ny,24,1\n")
    args = ["evaluate", "--model", str(model_dir), "--history", str(files / "cold.csv"), "--heldout",
            str(tmp_path / "held.csv"), *COLS]
    assert main([*args, "--out", str(tmp_path / "m.json")]) == 0
    assert "relevant: held-out ratings of at least 3.5, from the log's scale" in capsys.readouterr().err
    assert json.loads((tmp_path / "m.json").read_text())["users"] == 2
    assert main([*args, "--threshold", "4", "--out", str(tmp_path / "m4.json")]) == 0
    assert json.loads((tmp_path / "m4.json").read_text())["users"] == 1  # the flag still wins
    assert main([*args, "--out", str(tmp_path / "m4.json")]) == 0  # an earlier metrics file is replaced
    assert json.loads((tmp_path / "m4.json").read_text())["users"] == 2
    assert main([*args, "--out", str(tmp_path)]) == 2 and "is a folder" in capsys.readouterr().err


def test_evaluate_counts_every_user_and_writes_per_user_metrics(model_dir, files, tmp_path, capsys):
    # x: relevant held-out rows; y: held-out rows rated below 4 only; z: adapted, nothing held out
    (tmp_path / "h.csv").write_text("user,item\nx,0\nx,1\ny,20\ny,21\nz,40\n")
    (tmp_path / "held.csv").write_text("user,item,rating\nx,3,5\nx,4,4\ny,23,2\ny,24,1\n")
    args = ["evaluate", "--model", str(model_dir), "--history", str(tmp_path / "h.csv"), "--heldout",
            str(tmp_path / "held.csv"), *COLS, "--k", "10", "--out", str(tmp_path / "m.json")]
    assert main([*args, "--per-user", str(tmp_path / "users.csv")]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (metrics["users"], metrics["users_without_relevant"], metrics["users_without_heldout"]) == (1, 1, 1)
    assert "users_without_relevant  1" in out
    assert "1 user had held-out rows, none relevant (rated at least 4)" in err
    users = pl.read_csv(tmp_path / "users.csv").sort("user_id")
    assert users["user_id"].to_list() == ["x", "y", "z"] and users["relevant"].to_list() == [2, 0, 0]
    assert users["ndcg@10"][0] == pytest.approx(metrics["ndcg@10"]) and users["ndcg@10"].null_count() == 2
    assert main([*args, "--per-user", str(tmp_path / "users.xlsx")]) == 2
    assert "--per-user " in capsys.readouterr().err
    assert not (tmp_path / "users.xlsx").exists()


@pytest.mark.parametrize("held_times, flag, kind, said", [
    ("10,11", [], "first", "history kind: first (every user's history precedes its held-out rows"),
    ("1,11", [], "sample", "history kind: sample (some history rows come after held-out rows"),
    ("1,11", ["--history-kind", "first"], "first", "note: --history-kind first, though the timestamps show"),
])
def test_evaluate_reads_the_history_kind_from_the_timestamps(held_times, flag, kind, said, model_dir, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user,item,timestamp\nx,0,5\nx,1,6\ny,20,5\n")
    first, second = held_times.split(",")
    (tmp_path / "held.csv").write_text(f"user,item,rating,timestamp\nx,3,5,{first}\ny,23,5,{second}\n")
    assert main(["evaluate", "--model", str(model_dir), "--history", str(tmp_path / "h.csv"), "--heldout",
                 str(tmp_path / "held.csv"), *COLS, *flag, "--out", str(tmp_path / "m.json")]) == 0
    out, err = capsys.readouterr()
    assert json.loads((tmp_path / "m.json").read_text())["history_kind"] == kind
    assert said in err and f"history_kind            {kind}" in out


@pytest.mark.parametrize("out", ["out.xlsx", "out"])
def test_an_output_name_without_a_known_extension_gets_output_advice(out, model_dir, files, tmp_path, capsys):
    assert _recommend(model_dir, files / "cold.csv", tmp_path / out) == 2
    err = capsys.readouterr().err
    assert "--format" not in err and "--out recs.parquet" in err and "format=" not in err
    assert ("Excel" in err) == (out == "out.xlsx")


def test_cli_errors_give_flags_and_name_every_missing_column(model_dir, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("userId,movieId\nx,0\n")
    assert main(["recommend", "--model", str(model_dir), "--history", str(tmp_path / "h.csv"),
                 "--out", str(tmp_path / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert "missing columns 'user_id' for the user, 'item_id' for the item" in err
    assert "pass --user-col userId --item-col movieId" in err and "_col=" not in err


def test_decimal_commas_are_read_with_the_decimal_flag(model_dir, files, tmp_path, capsys):
    (tmp_path / "h.csv").write_text("user;item;rating\nx;0;3,5\nx;1;4,5\n")
    pairs = ["predict", "--model", str(model_dir), "--history", str(tmp_path / "h.csv"), *COLS,
             "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "p.csv")]
    assert main(pairs) == 2
    assert "decimal comma: pass --decimal , to read 3,5 as 3.5" in capsys.readouterr().err
    assert main([*pairs, "--decimal", ","]) == 0


def test_three_kinds_of_folder_that_are_not_a_model_get_three_messages(model_dir, files, tmp_path, capsys):
    import shutil

    parent = tmp_path / "runs"
    shutil.copytree(model_dir, parent / "model")
    (tmp_path / "stopped").mkdir()
    from recmaml.resume import CHECKPOINT

    (tmp_path / "stopped" / CHECKPOINT).write_bytes(b"")
    for folder, needle in ((parent, f"holds one in model/: pass --model {parent / 'model'}"),
                           (tmp_path / "stopped", f"unfinished fit (interrupted or killed), no model yet; finish it: "
                            f"recmaml fit --resume --out {tmp_path / 'stopped'}"),
                           (tmp_path / "nowhere", "no such folder; check the path")):
        assert _recommend(folder, files / "cold.csv", tmp_path / "r.csv") == 2
        assert needle in capsys.readouterr().err


def test_the_model_remembers_the_fit_column_names_and_a_flag_still_wins(files, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(files / "warm.csv"), *COLS,
                 "--out", str(model), "--quiet"]) == 0
    assert MetaRecommender.load(model).columns == {"user": "user", "item": "item", "rating": "rating",
                                                    "timestamp": "timestamp"}
    base = ["--model", str(model), "--history", str(files / "cold.csv")]
    assert main(["recommend", *base, "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0  # no --*-col flags
    assert main(["predict", *base, "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    assert main(["evaluate", *base, "--heldout", str(files / "heldout.csv")]) == 0
    assert main(["recommend", *base, "--item-col", "movie", "--out", str(tmp_path / "r2.csv")]) == 2
    assert "missing column 'movie' for the item" in capsys.readouterr().err


def test_a_model_saved_before_column_names_were_recorded_still_loads(model_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    meta = json.loads((old / "model.json").read_text())
    meta.pop("columns", None)
    (old / "model.json").write_text(json.dumps(meta))
    assert MetaRecommender.load(old).columns is None


def test_the_benchmarks_default_support_sizes_include_0_as_the_docs_say():
    from recmaml.benchmark import DEFAULT_KS

    assert build_parser().parse_args(["benchmark", "--out", "bench"]).support_sizes is None  # the suite's default
    default = ",".join(map(str, DEFAULT_KS))
    assert default == "0,1,3,5,10,20"
    assert f"the default `--support-sizes` is {default}" in (REPO_ROOT / "docs" / "benchmarks.md").read_text()


def test_the_sample_weights_get_a_bar_of_their_own_after_the_main_weights_bar_ends(capsys):
    import argparse

    from recmaml.cli.common import LazyBar as _LazyBar
    from recmaml.meta import Stop, TrainHistory

    def stopped_at(epochs):
        return TrainHistory(epochs=[{}] * epochs, best_epoch=1, best_score=0.3, stopped=Stop.EARLY, max_epochs=300,
                            patience=epochs - 1)

    with _LazyBar(argparse.Namespace(quiet=False), total=300, unit="epoch", desc="meta-training") as bar:
        for epoch in (1, 2, 3):  # the main weights stop after 3 epochs...
            bar(epoch, {"train_loss": 1.0, "of": 300})
        bar.finished("meta-training", stopped_at(3))
        for epoch in (1, 2):  # ...then the sample weights train from their own first epoch
            bar(epoch, {"train_loss": 1.0, "of": 300})
        bar.finished("sample weights", stopped_at(2))
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "meta-training stopped (early stopping) at epoch 3 of 300" in err and "3/3" in err
    assert "sample weights stopped (early stopping) at epoch 2 of 300" in err and "2/2" in err


def test_progress_on_a_file_is_a_line_at_a_time(tmp_path):
    """stderr that is not a terminal (a CI log, a file) gets whole lines, not a pile of redrawn frames."""
    import io
    import sys as _sys

    from recmaml import progress

    captured = io.StringIO()
    before = _sys.stderr
    _sys.stderr = captured
    try:
        with progress.progress_bar(total=3, unit="user", desc="serving") as bar:
            for step in range(3):
                bar.set_postfix(loss=f"{step:.4f}")  # a postfix per epoch, as meta-training sets it
                bar.set_description(f"serving {step}")
                bar.update(1)
    finally:
        _sys.stderr = before
    text = captured.getvalue()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[-1].startswith("serving 2: 100%"), text
    assert len(text.splitlines()) <= 3  # the first frame and the last, not one per update


def test_similar_names_the_signals_that_similar_items_takes():
    from recmaml.cli.similar import SIGNAL_WORDS
    from recmaml.explain import SIGNALS

    assert tuple(SIGNAL_WORDS) == SIGNALS  # spelled twice so that `recmaml --help` imports no torch


def test_fit_takes_epochs_seed_and_any_config_field_without_a_toml_file(files, tmp_path, capsys):
    model = tmp_path / "model"
    base = ["fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(files / "warm.csv"), *COLS,
            "--out", str(model), "--quiet"]
    assert main([*base, "--epochs", "2", "--seed", "5", "--set", "tasks.order=random",
                 "--set", "meta.max_seconds=600", "--set", 'model.user_hidden=[32, 16]']) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["config"]["meta"]["epochs"] == 2 and len(meta["history"]) == 2
    assert meta["config"]["meta"]["seed"] == 5 and meta["config"]["meta"]["max_seconds"] == 600
    assert meta["config"]["tasks"]["order"] == "random" and meta["config"]["model"]["user_hidden"] == [32, 16]
    capsys.readouterr()
    assert main([*base, "--set", "meta.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "--set meta.epoch=3: unknown key meta.epoch; valid keys of [meta]" in err and "'epochs'" in err
    assert main([*base, "--seed", "-1"]) == 2
    assert "--seed -1: meta.seed = -1" in capsys.readouterr().err
    assert main([*base, "--set", "epochs=3"]) == 2
    assert "--set epochs=3: give SECTION.KEY=VALUE, e.g. --set meta.epochs=5" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--epochs", "0"])
    assert exit_.value.code == 2 and "--epochs: '0': use a whole number >= 1 or 'auto'" in capsys.readouterr().err


def test_keep_column_names_writes_the_inputs_names(files, model_dir, tmp_path, capsys):
    base = ["--model", str(model_dir), "--history", str(files / "cold.csv"), *COLS, "--quiet"]
    assert main(["recommend", *base, "--k", "3", "--out", str(tmp_path / "r.csv"), "--keep-column-names"]) == 0
    assert pl.read_csv(tmp_path / "r.csv").columns == ["user", "item", "score", "rank"]
    assert main(["recommend", *base, "--k", "3", "--out", str(tmp_path / "plain.csv")]) == 0
    assert pl.read_csv(tmp_path / "plain.csv").columns == ["user_id", "item_id", "score", "rank"]
    assert main(["predict", *base, "--pairs", str(files / "pairs.csv"), "--out", str(tmp_path / "p.parquet"),
                 "--keep-column-names"]) == 0
    assert pl.read_parquet(tmp_path / "p.parquet").columns == ["user", "item", "prediction"]
    capsys.readouterr()
    clash = ["--model", str(model_dir), "--history", str(files / "cold.csv"), "--user-col", "score", "--item-col",
             "item", "--out", str(tmp_path / "x.csv"), "--keep-column-names"]
    assert main(["recommend", *clash]) == 2 and not (tmp_path / "x.csv").exists()
    assert "cannot keep the column name 'score'" in capsys.readouterr().err
