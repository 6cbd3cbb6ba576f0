"""`recmaml quickstart`: where its data comes from, and a whole run on small data."""

import json
import shutil

import pytest

from recmaml.connectors import read_ranked_lists
from recmaml import quickstart
from recmaml.cli import main


@pytest.fixture
def no_local_copies(monkeypatch):
    monkeypatch.delenv("RECMAML_DATA", raising=False)
    monkeypatch.setattr(quickstart, "local_candidates", lambda cwd: [])


def test_data_flag_then_env_then_local_copy(ml100k_dir, tmp_path, monkeypatch):
    assert "(--data)" in quickstart.find_data(str(ml100k_dir)).source
    monkeypatch.setenv("RECMAML_DATA", str(ml100k_dir.parent))  # a folder holding ml-100k/
    assert "($RECMAML_DATA)" in quickstart.find_data(None).source
    monkeypatch.delenv("RECMAML_DATA")
    shutil.copytree(ml100k_dir, tmp_path / "ml-100k")
    monkeypatch.setattr(quickstart, "REPO_ROOT", tmp_path / "elsewhere" / "repo")  # hide ../shared
    choice = quickstart.find_data(None, cwd=tmp_path, allow_download=False)
    assert "(local copy)" in choice.source and choice.log.n_users == 943


def test_synthetic_data_when_nothing_else_is_there(no_local_copies):
    choice = quickstart.find_data(None, allow_download=False)
    assert "synthetic" in choice.source and "--data" in choice.source
    assert choice.log.n_users == 943 and choice.log.n_items <= 1682


def test_a_failed_download_falls_back_to_synthetic_data(no_local_copies, monkeypatch):
    from recmaml import connectors

    def offline(name):
        raise OSError("network is unreachable")

    monkeypatch.setattr(connectors, "download_movielens", offline)
    assert "synthetic" in quickstart.find_data(None).source


def test_quickstart_writes_model_lists_and_metrics(no_local_copies, tmp_path, capsys):
    # the real quickstart path (configs/ml-100k.toml) on its synthetic stand-in: about 15 s
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--no-download", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("popularity", "als", "ease", "item_knn", "mult_vae", "recmaml", "nDCG@20"))
    assert "recmaml / " in table  # the ratio against the best of the five
    assert "trained until validation users stopped improving" in table  # Mult-VAE at full strength
    metrics = json.loads((tmp_path / "qs" / "metrics.json").read_text())
    ranked = read_ranked_lists(tmp_path / "qs" / "cold_users_top20.csv")
    assert len(set(ranked.user_id.tolist())) == metrics["cold_users"] > 100
    assert (tmp_path / "qs" / "model" / "model.json").is_file()
    # the stand-in's users come in taste clusters, which adaptation finds and popularity cannot
    results = metrics["results"]
    assert results["recmaml"]["ndcg@20"] > 1.1 * results["popularity"]["ndcg@20"]
    assert results["mult_vae"]["params"]["epochs"] >= 1  # what early stopping chose, recorded
