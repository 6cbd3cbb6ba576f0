"""Every ```python block of README.md and of docs/*.md runs, page by page (README first, then docs/ in name
order), each page's blocks in order as a reader would paste that page into one session: the test
provides the files they name (tiny new-user histories, candidates, a ratings.csv, ...) in a folder
beside which ../shared is the real shared data, and shortens meta-training to 2 epochs (load_config is
patched, the blocks' text is not)."""

import os
import re

import numpy as np
import polars as pl
import pytest

import recmaml
from conftest import MOVIELENS_DIR, REPO_ROOT

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SPARK_BLOCKS = ("pyspark", "from recmaml.spark")  # run by tests/test_spark.py (marker spark: Java, pyspark)


def doc_pages() -> list:
    """README.md, then every docs/*.md: the pages whose code blocks a reader pastes."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def readme_blocks() -> list[tuple[str, int, str]]:
    """(page, line, code) of every python block of README.md and docs/*.md."""
    blocks = []
    for page in doc_pages():
        text = page.read_text()
        name = page.relative_to(REPO_ROOT).as_posix()
        blocks += [(name, text[:m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]
    return blocks


def _plant_files(folder, ml100k) -> None:
    """The inputs the blocks read, taken from ML-100K so that their ids are the model's."""
    rows = np.flatnonzero(np.isin(ml100k.user_ids(), [1, 2, 3]))
    users = np.char.add("new-", ml100k.user_ids()[rows].astype(str))  # new users: ids the warm log lacks
    new = pl.DataFrame({"user_id": users, "item_id": ml100k.item_ids()[rows], "rating": ml100k.rating[rows]})
    new = new.group_by("user_id", maintain_order=True).head(5)
    new.write_parquet(folder / "todays_new_users.parquet")
    new.write_csv(folder / "new_users.csv")
    candidates = pl.DataFrame({"user_id": np.repeat(new["user_id"].unique(maintain_order=True).to_numpy(), 3),
                               "item_id": np.tile([50, 100, 181], 3)})
    candidates.write_parquet(folder / "candidates_from_retrieval.parquet")
    candidates.write_csv(folder / "other_recs.csv")
    ratings = pl.DataFrame({"userId": ml100k.user_ids()[:500], "movieId": ml100k.item_ids()[:500],
                            "rating": ml100k.rating[:500]})
    ratings.write_csv(folder / "ratings.csv")
    events = ratings.rename({"userId": "user_id", "movieId": "item_id"}).drop("rating")
    events.write_parquet(folder / "events.parquet")
    events.write_ndjson(folder / "events.jsonl")
    from recmaml.connectors import write_frame

    write_frame(ratings.rename({"userId": "user_id", "movieId": "item_id"}), f"sqlite:///{folder / 'logs.db'}",
                table="ratings")


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    pytest.importorskip("adbc_driver_sqlite")
    pytest.importorskip("implicit")
    shared = MOVIELENS_DIR.parent.parent
    if not (MOVIELENS_DIR / "ml-100k").is_dir():
        pytest.skip(f"the README's blocks read ../shared/data, not found at {shared}")
    from recmaml.connectors import read_interactions

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared)  # the README's ../shared/data/... paths, from `work`
    ml100k = read_interactions(MOVIELENS_DIR / "ml-100k")
    _plant_files(work, ml100k)
    real_load_config = recmaml.load_config
    monkeypatch.setattr(recmaml, "load_config", lambda *a, **kw: real_load_config(*a, **kw).replace(
        meta={"epochs": 2, "patience": 0}))
    monkeypatch.chdir(work)
    recmaml.MetaRecommender(recmaml.load_config("ml-100k")).fit(ml100k).save("runs/ml100k")  # the first block loads it

    namespaces: dict[str, dict] = {}  # one session per page: a page's blocks may use its earlier blocks only
    ran: dict[str, int] = {}
    for page, line, code in readme_blocks():
        if any(marker in code for marker in SPARK_BLOCKS):
            continue
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespaces.setdefault(page, {}))
        except Exception as err:
            pytest.fail(f"the python block at {page}:{line} fails: {type(err).__name__}: {err}")
        ran[page] = ran.get(page, 0) + 1
    assert sum(ran.values()) >= 6
    assert ran.get("README.md", 0) >= 1  # the front page's five-line API
    assert os.path.isfile("recs.parquet")  # the last block wrote its ranked lists
