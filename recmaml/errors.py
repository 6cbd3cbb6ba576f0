"""Exceptions raised by recmaml. Every error a user can cause is a RecMamlError whose message names
the source (file, column, row, flag) and the fix; the CLI turns them into exit code 2.

A fix is spelled for the surface the user is on: `spelled("user_col='movie'", "--user-col movie")` gives
the Python keyword to API callers and the flag to the command line (which runs inside `cli_surface()`),
so that neither reads the other's spelling first."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import warnings
from pathlib import Path

_surface = "api"  # "cli" while a command of recmaml.cli runs; module state: a message is built where it is raised


class RecMamlError(Exception):
    """Base class of every error recmaml raises on purpose."""


class DataError(RecMamlError, ValueError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(RecMamlError, ValueError):
    """A configuration file or flag is invalid."""


class CheckpointError(RecMamlError):
    """A model directory is missing, corrupt or of an incompatible format."""


def spelled(api: str, cli: str) -> str:
    """The same advice as the Python API spells it (`api`, e.g. "user_col='movie'") or as the command
    line does (`cli`, e.g. "--user-col movie"), for the surface that is running."""
    return cli if _surface == "cli" else api


def on_cli() -> bool:
    return _surface == "cli"


@contextlib.contextmanager
def cli_surface():
    """Messages built inside this block give the command line's spelling (recmaml.cli runs every command in it)."""
    global _surface
    before, _surface = _surface, "cli"
    try:
        yield
    finally:
        _surface = before


MESSAGE_LIMIT = 1000  # characters of a message the CLI prints: a library may quote a 1 MB field whole


def cut(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters cut)"


def shown(value, limit: int = 60) -> str:
    """A value from the user's data as an error message quotes it: its repr, cut to `limit` characters
    (a 5 MB field must not make a 5 MB message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# recmaml's own files, which a warning skips: the package, and its connectors, which an editable install of a
# checkout maps to the checkout's top-level connectors/ (a checkout: pyproject.toml beside the package; in
# site-packages a folder of that name beside recmaml would be another project's)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_PACKAGE)
_OWN_FOLDERS = tuple(dict.fromkeys(folder + os.sep for folder in (
    _PACKAGE, os.path.realpath(_PACKAGE), os.path.realpath(os.path.join(_PACKAGE, "connectors")),
    *((os.path.realpath(os.path.join(_CHECKOUT, "connectors")),)
      if os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")) else ()))))


def outside_stacklevel(skip: int = 1) -> int:
    """The stacklevel that makes warnings.warn, in the function `skip` frames up from here (1: the one calling
    this), point at the first line outside recmaml: the user's call, however deep inside the package (and
    through whichever path) the warning arises. As Python 3.12's skip_file_prefixes does, on 3.11 too."""
    frame, level = sys._getframe(skip), 1  # level 1: the warning function's own line
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_OWN_FOLDERS):
        frame, level = frame.f_back, level + 1
    return level


def warn_caller(warning: Warning | str, category: type[Warning] | None = None) -> None:
    """warnings.warn pointing at the caller's line: the first frame outside recmaml (a fixed stacklevel
    named recmaml's own lines, or sys:1 past the top)."""
    warnings.warn(warning, category, stacklevel=outside_stacklevel(2) + 1)  # + 1: this function's own frame


def install_extra(extra: str, package_dir: Path = Path(__file__).resolve().parent) -> str:
    """The command that installs recmaml's optional `extra` into the Python running it. recmaml is on no
    package index (`pip install 'recmaml[serve]'` finds nothing), so from a checkout (a pyproject.toml
    beside the package) it is an editable install of that checkout with the extra; an installed wheel gets
    the extra's own packages, which are on the index, by name."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    if (package_dir.parent / "pyproject.toml").is_file():
        return f"{pip} -e {shlex.quote(f'{package_dir.parent}[{extra}]')}"
    from importlib import metadata

    try:
        requires = metadata.requires("recmaml") or []
    except metadata.PackageNotFoundError:
        requires = []
    needs = [r.split(";")[0].strip() for r in requires if f'extra == "{extra}"' in r.replace("'", '"')]
    return f"{pip} {' '.join(map(shlex.quote, needs))}" if needs else f"{pip} -e '.[{extra}]' (in a recmaml checkout)"
