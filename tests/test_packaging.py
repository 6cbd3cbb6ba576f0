"""The built wheel, installed outside the checkout: configs ship inside it and load by name, and the
connectors install as recmaml.connectors (no top-level `connectors` package to collide with another)."""

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile

import polars as pl
import pytest

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: setuptools from this environment (CI installs no network-fetched build deps)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO_ROOT)], check=True, capture_output=True, text=True)
    (path,) = out.glob("recmaml-*.whl")
    return path


def test_the_wheel_holds_the_configs_and_no_top_level_connectors(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "recmaml/configs/ml-100k.toml" in names and "recmaml/connectors/readers.py" in names
    assert "recmaml/configs/spaces/default.toml" in names  # `recmaml tune --space default`
    assert "recmaml/cli/__init__.py" in names and "recmaml/cli/training.py" in names  # the entry point's package
    assert not [n for n in names if n.startswith("connectors/")]


def test_installed_wheel_fits_with_a_shipped_config_from_outside_the_checkout(wheel, tmp_path, taste_log):
    # a fresh venv that sees this environment's dependencies (torch, polars, ...) through a .pth file,
    # with only the wheel installed into it: what `pip install recmaml` would put on a user's machine
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write("\n".join(p for p in deps if "recmaml" not in p) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    pl.DataFrame({"user_id": taste_log.user_ids(), "item_id": taste_log.item_ids(),
                  "rating": taste_log.rating}).write_csv(work / "warm.csv")
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import recmaml, recmaml.connectors as c, importlib.util as u; "
            "print(recmaml.__file__); print(u.find_spec('connectors'))")
    where = subprocess.run([str(python), "-c", code], cwd=work, check=True, capture_output=True, text=True,
                           env=clean_env).stdout.split()
    assert str(env_dir) in where[0] and where[1] == "None"  # the installed copy; no top-level connectors
    fit = subprocess.run([str(env_dir / "bin" / "recmaml"), "fit", "--config", "tiny", "--data", "warm.csv",
                          "--out", "model", "--quiet"], cwd=work, capture_output=True, text=True,
                         env={**clean_env, "OPENBLAS_NUM_THREADS": "1"}, timeout=600)
    assert fit.returncode == 0, fit.stderr
    saved = json.loads((work / "model" / "model.json").read_text())["config"]
    assert saved["model"]["embedding_dim"] == 16 and saved["meta"]["epochs"] == 15  # tiny.toml's, not the defaults
