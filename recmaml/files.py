"""Files every output goes through: written to a temporary file beside the destination and moved into
place, so a destination is never half-written and a failure leaves it untouched; temporaries that killed
processes left behind are swept by the next run that writes there.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from recmaml.errors import DataError


def default_file_mode() -> int:
    """The permissions a plain open() gives a new file under the user's umask (mkstemp's are 0600)."""
    mask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True


def sweep_debris(folder: Path, prefix: str) -> int:
    """Remove what killed recmaml processes left in `folder`: entries named `{prefix}{pid}.*` (temporary
    outputs, partition folders) whose process no longer runs. A SIGKILL runs no cleanup, so the next
    run does it. Returns how many were removed."""
    removed = 0
    try:
        entries = list(Path(folder).glob(f"{glob.escape(prefix)}*"))
    except OSError:
        return 0
    for entry in entries:
        pid = entry.name[len(prefix):].split(".", 1)[0].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def temporary_file(dest: Path) -> Path:
    """A new empty temporary file beside `dest`, named after it and this process (.NAME.PID.XXXX.tmp), after
    sweeping the ones that killed processes left for the same destination."""
    sweep_debris(dest.parent, f".{dest.name}.")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary file next to `path` to write; moved into place, with the permissions of a plain open()
    (so that a serving account can read a model another one trained), when the block ends without an
    error, removed otherwise."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {str(path.parent)!r} does not exist; create it first")
    tmp = temporary_file(path)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(dest: Path, write) -> None:
    """Write `dest` through `write(tmp_path)` (atomic_path)."""
    with atomic_path(dest) as tmp:
        write(tmp)


def write_json(path, obj, *, compact: bool = False) -> None:
    """A JSON file (a report, metrics, a benchmark cell), written atomically. Indented for reading, or
    compact (`compact=True`: benchmark cells, whose per-user lists would take a line per number)."""
    text = json.dumps(obj, default=str, **({"separators": (",", ":")} if compact else {"indent": 2}))
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
