"""Progress bars on stderr: tqdm's redrawn line on a terminal; on a file or a CI log, where every redraw
would pile up on one line, a plain line every LOG_INTERVAL_SECONDS at most."""

from __future__ import annotations

import contextlib
import functools
import sys

LOG_INTERVAL_SECONDS = 10.0


class _Lines:
    """A stream for tqdm that writes each frame as its own line (tqdm starts a frame with a carriage return,
    which only a terminal turns into a redraw)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*, disable: bool = False, **kwargs):
    """A tqdm bar on stderr (kwargs: total, unit, desc, ...)."""
    from tqdm.auto import tqdm

    stream = sys.stderr
    if disable or _is_terminal(stream) or in_notebook():  # a notebook redraws a line as a terminal does
        return tqdm(file=stream, dynamic_ncols=True, disable=disable, **kwargs)
    bar = tqdm(file=_Lines(stream), mininterval=LOG_INTERVAL_SECONDS, **kwargs)  # no width: nothing is cut
    # a new postfix or description redraws at once by default: in a log, a line per epoch
    bar.set_postfix = functools.partial(bar.set_postfix, refresh=False)
    bar.set_description = functools.partial(bar.set_description, refresh=False)
    return bar


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def in_notebook() -> bool:
    """Running in a Jupyter (IPython) kernel, as tqdm.auto tells it: its output cell shows a bar, though
    its stderr is no terminal."""
    ipython = sys.modules.get("IPython")  # imported by every kernel; never imported here
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def watched(progress):
    """The API's progress=None ('auto'): True (a bar) where someone watches, stderr being a terminal or the
    process a notebook's kernel; False in a script's log, a pipe or a batch job. Any other value as is."""
    if progress is not None:
        return progress
    return _is_terminal(sys.stderr) or in_notebook()


def optional_bar(progress, total: int, unit: str, desc: str):
    """The Python API's `progress` argument as a context: True gives a progress_bar that is closed at the
    end; anything else (False, None, the caller's own callable) yields None."""
    if progress is not True:
        return contextlib.nullcontext()
    return progress_bar(total=total, unit=unit, desc=desc)
