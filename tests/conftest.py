"""Shared fixtures. MovieLens files are read from ../shared/data/movielens (never copied into the repo);
tests that need them skip with a clear reason in a clone that lacks that folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MOVIELENS_DIR = Path(os.environ.get("RECMAML_MOVIELENS", REPO_ROOT.parent / "shared" / "data" / "movielens"))

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows down) without it


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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
