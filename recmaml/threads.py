"""How many torch threads a serving call or a fit uses: its setting, or for 'auto' the cores no other
process is running on now; and torch's threads set for the duration of a block."""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch


def _own_running_threads() -> int:
    """This process's threads that are running now (torch's and polars' pools spin for a while after
    their work, and would otherwise count as someone else's load)."""
    running = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", encoding="ascii") as f:
                running += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue  # a thread that ended while we looked
    return max(running, 1)


def _busy_cores() -> int:
    """Threads of OTHER processes running right now (Linux: /proc/loadavg's running count, which counts
    every thread, less this process's own), else the one-minute load average."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - _own_running_threads())
    except (OSError, ValueError, IndexError):
        return int(round(os.getloadavg()[0])) if hasattr(os, "getloadavg") else 0


def serving_threads(setting: int | str = "auto") -> int:
    """The torch threads a serving call (serve.threads) or a fit (meta.threads) uses: `setting`, or for
    'auto' the cores that no other process is running on now (at least 1, at most torch's default)."""
    if setting != "auto":
        return int(setting)
    now = time.monotonic()
    if now - _auto_threads[0] > AUTO_THREADS_SECONDS:
        # reading /proc costs about 0.5 ms, 5% of a 189-user call: calls that come in a stream share a look
        _auto_threads[:] = [now, max(1, min(_default_threads(), (os.cpu_count() or 1) - _busy_cores()))]
    return _auto_threads[1]


AUTO_THREADS_SECONDS = 1.0  # how long serving_threads('auto') keeps its count of free cores
_auto_threads = [-float("inf"), 1]  # [when measured (time.monotonic), the count]


@functools.cache
def _default_threads() -> int:
    return torch.get_num_threads()  # torch's own choice, read once before any call changes it


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` for the duration of a block, then restored."""
    _default_threads()
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
