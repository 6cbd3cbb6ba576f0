import subprocess
import sys

import polars as pl

from recmaml import __version__


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "recmaml", *args], capture_output=True, text=True, cwd=cwd)


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and "fit" in out.stdout and "recommend" in out.stdout
    assert __version__ in run("--version").stdout


def test_fit_then_recommend_end_to_end(tmp_path, taste_log):
    log = pl.DataFrame({"user": taste_log.user_ids(), "item": taste_log.item_ids(), "rating": taste_log.rating})
    log.write_csv(tmp_path / "warm.csv")
    pl.DataFrame({"user": ["x", "x", "x"], "item": [0, 1, 2]}).write_csv(tmp_path / "cold.csv")
    from conftest import REPO_ROOT

    fit = run("--quiet", "fit", "--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(tmp_path / "warm.csv"),
              "--user-col", "user", "--item-col", "item", "--out", str(tmp_path / "model"))
    assert fit.returncode == 0, fit.stderr
    rec = run("--quiet", "recommend", "--model", str(tmp_path / "model"), "--history", str(tmp_path / "cold.csv"),
              "--user-col", "user", "--item-col", "item", "--k", "5", "--out", str(tmp_path / "recs.parquet"))
    assert rec.returncode == 0, rec.stderr
    recs = pl.read_parquet(tmp_path / "recs.parquet")
    assert recs.columns == ["user_id", "item_id", "score", "rank"] and recs.height == 5
    assert (recs["item_id"].to_numpy() // 20 == 0).sum() >= 4


def test_data_errors_exit_2_with_one_line_and_no_output(tmp_path):
    (tmp_path / "warm.csv").write_text("userId,movieId\n1,2\n")
    out = run("fit", "--data", str(tmp_path / "warm.csv"), "--out", str(tmp_path / "model"))
    assert out.returncode == 2
    assert "--user-col userId" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "model").exists()
