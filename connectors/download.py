"""Fetch a MovieLens archive from GroupLens into a local cache, verified and unpacked atomically.

    folder = download_movielens("ml-100k")     # ~/.cache/recmaml/ml-100k (or $RECMAML_DATA/ml-100k)
    interactions = read_movielens(folder)

The archive is downloaded to a temporary folder inside the cache, checked, unpacked there and moved
into place with os.replace, so a failed or interrupted download never leaves a half-written folder.
GroupLens publishes no checksums for its archives and we have not measured them; the unpacked data
files are checked instead, against values measured on the original files (shared/data/movielens/SHA256SUMS,
and for ml-1m ratings.dat its git blob id). Pass sha256= to check a whole archive instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from recmaml.errors import DataError

log = logging.getLogger(__name__)

BASE_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"

# Measured checks of the unpacked data files, per archive: file -> (algorithm, hex digest).
FILE_CHECKS: dict[str, dict[str, tuple[str, str]]] = {
    "ml-100k": {
        "u.data": ("sha256", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
        "u.item": ("sha256", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
        "u.user": ("sha256", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
        "u.genre": ("sha256", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
        "u.occupation": ("sha256", "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d"),
    },
    "ml-1m": {
        "ratings.dat": ("git-blob", "77a7c4b150f588c23bb9e1f068aa996c0b413695"),
        "users.dat": ("sha256", "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3"),
        "movies.dat": ("sha256", "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9"),
    },
    "ml-latest-small": {
        "ratings.csv": ("sha256", "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"),
        "movies.csv": ("sha256", "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07"),
    },
}
ARCHIVE_SHA256: dict[str, str | None] = {name: None for name in FILE_CHECKS}
"""Whole-archive sha256 per known name; None where no value was measured (the files are checked instead)."""

_NO_NETWORK_HINT = "no network? pass --data DIR with an unpacked copy"


def default_cache_dir() -> Path:
    """$RECMAML_DATA, else ~/.cache/recmaml."""
    return Path(os.environ.get("RECMAML_DATA") or Path.home() / ".cache" / "recmaml").expanduser()


def download_movielens(
    name: str = "ml-100k",
    cache_dir=None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """The unpacked folder of MovieLens archive `name`, downloaded into `cache_dir` unless it is there
    already (or `force`). `url` overrides the GroupLens address; `sha256` checks the whole archive
    (otherwise the known data files are checked after unpacking)."""
    _check_name(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / name
    if target.is_dir() and not force:
        log.debug("%s: already downloaded", target)
        return target
    url = url or _known_url(name)
    sha256 = sha256 or ARCHIVE_SHA256.get(name)
    file_checks = {} if sha256 else FILE_CHECKS.get(name)
    if not sha256 and not file_checks:
        raise DataError(f"no known checksum for {name!r}; pass sha256= with the archive's sha256 to verify {url}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}.partial-") as tmp:
        archive = Path(tmp) / "archive.zip"
        _fetch(url, archive)
        if sha256:
            _check_digest(archive, "sha256", sha256, url)
        folder = _unpack(archive, Path(tmp) / "unpacked", name)
        for file, (algorithm, expected) in file_checks.items():
            _check_digest(folder / file, algorithm, expected, f"{name}/{file} from {url}")
        _move_into_place(folder, target, Path(tmp) / "previous")
    log.info("downloaded %s into %s", url, target)
    return target


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DataError(f"invalid data set name {name!r}; expected e.g. one of {sorted(FILE_CHECKS)}")


def _known_url(name: str) -> str:
    if name not in FILE_CHECKS:
        raise DataError(f"unknown MovieLens archive {name!r}; known: {sorted(FILE_CHECKS)}; or pass url= and sha256=")
    return BASE_URL.format(name=name)


def _fetch(url: str, dest: Path) -> None:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(f"cannot download {url} ({reason}); {_NO_NETWORK_HINT}") from err


def _digest(file: Path, algorithm: str) -> str:
    if algorithm == "git-blob":  # what `git hash-object FILE` prints
        digest = hashlib.sha1(f"blob {file.stat().st_size}\0".encode())
    else:
        digest = hashlib.new(algorithm)
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(file: Path, algorithm: str, expected: str, what: str) -> None:
    if not file.is_file():
        raise DataError(f"{what}: the archive has no {file.name}; the download was removed")
    got = _digest(file, algorithm)
    if got != expected.lower():
        raise DataError(
            f"{what}: {algorithm} mismatch: expected {expected}, got {got}; the download was removed "
            "(a corrupt or changed file: retry, or pass sha256= to accept a new archive knowingly)"
        )


def _unpack(archive: Path, dest: Path, name: str) -> Path:
    """Unzip `archive` into `dest`; the data folder is dest/name, else the archive's single top folder,
    else dest itself."""
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # extractall drops absolute paths and '..' from member names
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive.name}: not a readable zip archive ({err}); the download was removed") from err
    entries = list(dest.iterdir())
    if (dest / name).is_dir():
        return dest / name
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _move_into_place(folder: Path, target: Path, trash: Path) -> None:
    """Move `folder` to `target`; an existing target is moved to `trash` first (removed by the caller)."""
    if target.exists():
        os.replace(target, trash)
    os.replace(folder, target)
