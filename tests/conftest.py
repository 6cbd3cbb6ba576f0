"""Shared fixtures. MovieLens files are read from ../shared/data/movielens (never copied into the repo);
tests that need them skip with a clear reason in a clone that lacks that folder."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS: implicit warns without it

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_taste_groups(n_users: int = 240, n_groups: int = 3, items_per_group: int = 20, per_user: int = 10,
                      seed: int = 0, with_ratings: bool = True):
    """Users in taste groups: user u likes only items of group u % n_groups (rating 4-5) and gives a few
    items of another group a low rating (1-2). Returns an Interactions log with timestamps."""
    from recmaml.data import Interactions

    gen = np.random.default_rng(seed)
    users, items, ratings = [], [], []
    for u in range(n_users):
        g = u % n_groups
        liked = gen.choice(np.arange(g * items_per_group, (g + 1) * items_per_group), size=per_user, replace=False)
        other = (g + 1) % n_groups
        disliked = gen.choice(np.arange(other * items_per_group, (other + 1) * items_per_group), size=2, replace=False)
        users += [u] * (per_user + 2)
        items += [*liked, *disliked]
        ratings += [*gen.integers(4, 6, per_user), *gen.integers(1, 3, 2)]
    n = len(users)
    return Interactions.from_ids(np.array(users), np.array(items), rating=np.array(ratings, dtype=np.float32) if with_ratings else None,
                                 timestamp=gen.permutation(n).astype(np.int64))


@pytest.fixture(scope="session")
def taste_log():
    return make_taste_groups()


@pytest.fixture(scope="session")
def tiny_config():
    from recmaml.config import load_config

    return load_config(REPO_ROOT / "configs" / "tiny.toml")
