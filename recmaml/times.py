"""Times are Unix seconds inside recmaml. Logs also store milliseconds, microseconds or nanoseconds since
1970 (Java, JavaScript, pandas' datetime64 integers); read as seconds, 880000000000 ms (1997) would be a
date thousands of years from now. The unit is told by magnitude: seconds of any date before the year 5138
are below 1e11, and a unit 1,000 times finer puts every date after 1973 above it. Such times are converted
to seconds (whole seconds, rounded down) with a TimestampUnitWarning that says what was read and how."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np

from recmaml.errors import outside_stacklevel

SECONDS_BELOW = 1e11
"""Unix seconds of every date before the year 5138 are below this; a finer unit's dates after 1973 are not."""

SECONDS_PER_YEAR = 31_556_952  # a Gregorian year

FINER_UNITS = (("milliseconds", 1_000), ("microseconds", 1_000_000), ("nanoseconds", 1_000_000_000))


class TimestampUnitWarning(UserWarning):
    """Times given in a unit finer than seconds were converted to Unix seconds. `what` names the input
    (a file's column, users[i].timestamps, at=), `unit` the unit they were read in."""

    def __init__(self, message: str, what: str = "", unit: str = ""):
        super().__init__(message)
        self.what, self.unit = what, unit


def unit_of(typical: float) -> tuple[str, int]:
    """(unit, how many of it make a second) of times whose typical magnitude is `typical`."""
    for unit, per_second in (("seconds", 1), *FINER_UNITS):
        if typical / per_second < SECONDS_BELOW:
            return unit, per_second
    return FINER_UNITS[-1]


def date_of(seconds: float) -> str:
    """The UTC date of Unix `seconds`, or a plain number where no calendar date exists."""
    try:
        return dt.datetime.fromtimestamp(float(seconds), dt.timezone.utc).date().isoformat()
    except (OverflowError, OSError, ValueError):  # past the year 9999
        return f"the year {1970 + float(seconds) / SECONDS_PER_YEAR:,.0f}"


def converted_note(what: str, unit: str, example: float, per_second: int) -> TimestampUnitWarning:
    """The warning that `what` was read in `unit` and converted (`example`: one of its values)."""
    seconds = float(example) // per_second
    return TimestampUnitWarning(
        f"{what}: {unit} since 1970, not Unix seconds (e.g. {example:.0f}, which as seconds would be "
        f"{date_of(float(example))}); converted to Unix seconds ({example:.0f} -> {seconds:.0f}, {date_of(seconds)}). Store "
        "Unix seconds or ISO dates to silence this", what=what, unit=unit)


def in_seconds(times: np.ndarray, what: str) -> np.ndarray:
    """`times` as Unix seconds: as they are when they are seconds (typically below SECONDS_BELOW), else
    divided down from the finer unit they are in, with a TimestampUnitWarning naming `what` (at the user's
    line). NaN (no time) stays NaN; integers stay integers."""
    times = np.asarray(times)
    finite = times[np.isfinite(times)] if times.dtype.kind == "f" else times
    if finite.size == 0 or float(np.max(np.abs(finite))) < SECONDS_BELOW:  # the usual case, in one pass
        return times
    unit, per_second = unit_of(float(np.median(np.abs(finite))))
    if per_second == 1:
        return times
    warnings.warn(converted_note(what, unit, float(finite.flat[0]), per_second), stacklevel=outside_stacklevel())
    return times // per_second
