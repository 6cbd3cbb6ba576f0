"""Shared fixtures. MovieLens files are read from ../shared/data/movielens (never copied into the repo);
tests that need them skip with a clear reason in a clone that lacks that folder."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS: implicit warns without it

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from planted import taste_groups as make_taste_groups  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MOVIELENS_DIR = Path(os.environ.get("RECMAML_MOVIELENS", REPO_ROOT.parent / "shared" / "data" / "movielens"))


def _movielens_folder(name: str) -> Path:
    folder = MOVIELENS_DIR / name
    if not folder.is_dir():
        pytest.skip(f"MovieLens {name} not found at {folder} (CI provides ../shared; set RECMAML_MOVIELENS)")
    return folder


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return _movielens_folder("ml-100k")


@pytest.fixture(scope="session")
def ml_latest_small_dir() -> Path:
    return _movielens_folder("ml-latest-small")


@pytest.fixture(scope="session")
def ml1m_dir() -> Path:
    return _movielens_folder("ml-1m")


@pytest.fixture(autouse=True)
def _root_logging_put_back():
    """The root logger's handlers and level as they were before each test: recmaml.cli.main (logging.basicConfig
    with force=True) points them at the test's captured stderr, which is closed once the test ends, and a later
    test's log record would then fail there ('I/O operation on closed file', seen under load)."""
    import logging

    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def taste_log():
    return make_taste_groups()


@pytest.fixture(scope="session")
def tiny_config():
    from recmaml.config import load_config

    return load_config(REPO_ROOT / "configs" / "tiny.toml")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, taste_log, tiny_config):
    """A model of configs/tiny.toml fitted on the planted log and saved once per test run (read-only use)."""
    from recmaml import MetaRecommender

    path = tmp_path_factory.mktemp("tiny-model") / "model"
    MetaRecommender(tiny_config).fit(taste_log).save(path)
    return path
