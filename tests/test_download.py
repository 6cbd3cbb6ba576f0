"""download_movielens without the network: archives are built in tmp_path and served by file:// URLs."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from recmaml.connectors import download
from recmaml.connectors.download import download_movielens
from recmaml.errors import DataError

TINY_U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"


def _zip(path: Path, files: dict[str, str]) -> tuple[str, str]:
    """Write a zip holding `files` (archive name -> text); returns (file:// url, sha256)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path) -> tuple[str, str]:
    return _zip(tmp_path / "ml-100k.zip", {"ml-100k/u.data": TINY_U_DATA, "ml-100k/README": "tiny\n"})


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_download_verifies_and_unpacks(archive, cache):
    url, sha = archive
    folder = download_movielens("ml-100k", cache, url=url, sha256=sha)
    assert folder == cache / "ml-100k"
    assert (folder / "u.data").read_text() == TINY_U_DATA
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]  # no temporary files left behind


def test_checksum_mismatch_leaves_nothing(archive, cache):
    url, sha = archive
    wrong = "0" * 64
    with pytest.raises(DataError, match=f"expected {wrong}, got {sha}"):
        download_movielens("ml-100k", cache, url=url, sha256=wrong)
    assert list(cache.iterdir()) == []


def test_known_files_are_checked_without_an_archive_checksum(archive, cache, monkeypatch):
    url, _ = archive
    with pytest.raises(DataError, match=r"ml-100k/u\.data.*sha256 mismatch"):  # tiny u.data is not the real one
        download_movielens("ml-100k", cache, url=url)
    assert list(cache.iterdir()) == []
    tiny = ("sha256", hashlib.sha256(TINY_U_DATA.encode()).hexdigest())
    monkeypatch.setitem(download.FILE_CHECKS, "ml-100k", {"u.data": tiny})
    assert (download_movielens("ml-100k", cache, url=url) / "u.data").is_file()


def test_existing_folder_is_reused_without_downloading(cache):
    (cache / "ml-100k").mkdir(parents=True)
    missing_url = (cache / "nowhere.zip").as_uri()
    assert download_movielens("ml-100k", cache, url=missing_url) == cache / "ml-100k"


def test_force_downloads_again(archive, cache):
    url, sha = archive
    old = cache / "ml-100k"
    old.mkdir(parents=True)
    (old / "stale.txt").write_text("old")
    folder = download_movielens("ml-100k", cache, url=url, sha256=sha, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["README", "u.data"]
    assert [p.name for p in cache.iterdir()] == ["ml-100k"]


def test_network_failure_is_a_clear_error(cache):
    with pytest.raises(DataError, match="no network\\? pass --data DIR"):
        download_movielens("ml-100k", cache, url=(cache / "nowhere.zip").as_uri(), sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_archive_without_top_folder(tmp_path, cache):
    url, sha = _zip(tmp_path / "flat.zip", {"u.data": TINY_U_DATA})
    folder = download_movielens("mini", cache, url=url, sha256=sha)
    assert (folder / "u.data").read_text() == TINY_U_DATA


def test_not_a_zip(tmp_path, cache):
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        download_movielens("mini", cache, url=bad.as_uri(), sha256=hashlib.sha256(b"not a zip").hexdigest())
    assert list(cache.iterdir()) == []


def test_unknown_names_need_url_and_checksum(archive, cache):
    with pytest.raises(DataError, match="unknown MovieLens archive"):
        download_movielens("ml-20m", cache)
    with pytest.raises(DataError, match="pass sha256="):
        download_movielens("mini", cache, url=archive[0])
    with pytest.raises(DataError, match="invalid data set name"):
        download_movielens("../escape", cache, url=archive[0], sha256=archive[1])


def test_default_cache_dir_from_environment(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("RECMAML_DATA", str(tmp_path / "env-cache"))
    url, sha = archive
    assert download_movielens(url=url, sha256=sha) == tmp_path / "env-cache" / "ml-100k"


def test_git_blob_digest_matches_git_hash_object(tmp_path):
    file = tmp_path / "hello.txt"
    file.write_bytes(b"hello\n")
    assert download._digest(file, "git-blob") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_known_checks_match_the_shared_copies(ml100k_dir, ml_latest_small_dir, ml1m_dir):
    folders = {"ml-100k": ml100k_dir, "ml-latest-small": ml_latest_small_dir, "ml-1m": ml1m_dir}
    for name, checks in download.FILE_CHECKS.items():
        for file, (algorithm, expected) in checks.items():
            if (folders[name] / file).exists():  # the shared ml-1m lacks ratings.dat
                assert download._digest(folders[name] / file, algorithm) == expected, f"{name}/{file}"
