"""Times are Unix seconds inside recmaml. Logs also store milliseconds, microseconds or nanoseconds since
1970 (Java, JavaScript, pandas' datetime64 integers); read as seconds, 880000000000 ms (1997) would be a
date thousands of years from now. The unit is told by magnitude, value by value: seconds of any date before
the year 5138 are below 1e11, and a unit 1,000 times finer puts every date after 1973 above it. Such times
are converted to seconds (whole seconds, rounded down) with a TimestampUnitWarning that says what was read
and how. Value by value, so that a batch of users whose clients send different units is read right."""

from __future__ import annotations

import datetime as dt

import numpy as np

from recmaml.errors import warn_caller

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


def per_second_of(magnitude: np.ndarray) -> np.ndarray:
    """How many of its unit make a second, for each time of absolute value `magnitude` (NaN: 1)."""
    finer = sum((magnitude >= SECONDS_BELOW * 1000 ** k).astype(np.int64) for k in range(len(FINER_UNITS)))
    return 1000 ** finer


def unit_name(per_second: int) -> str:
    return dict((per, unit) for unit, per in FINER_UNITS).get(int(per_second), "seconds")


def date_of(seconds: float) -> str:
    """The UTC date of Unix `seconds`, or a plain number where no calendar date exists."""
    try:
        return dt.datetime.fromtimestamp(float(seconds), dt.timezone.utc).date().isoformat()
    except (OverflowError, OSError, ValueError):  # past the year 9999
        return f"the year {1970 + float(seconds) / SECONDS_PER_YEAR:,.0f}"


def converted_note(what: str, example: float, per_second: int, converted: int, total: int) -> TimestampUnitWarning:
    """The warning that `converted` of the `total` times of `what` were in a finer unit and were converted
    (`example`: the first of them, in `per_second` units to a second)."""
    unit, seconds = unit_name(per_second), float(example) // per_second
    which = "" if converted == total else f" ({converted:,} of its {total:,} times)"
    return TimestampUnitWarning(
        f"{what}: {unit} since 1970, not Unix seconds{which} (e.g. {example:.0f}, which as seconds would be "
        f"{date_of(float(example))}); converted to Unix seconds ({example:.0f} -> {seconds:.0f}, "
        f"{date_of(seconds)}). Store Unix seconds or ISO dates to silence this", what=what, unit=unit)


def in_seconds(times: np.ndarray, what: str) -> np.ndarray:
    """`times` as Unix seconds: each one below SECONDS_BELOW as it is, the others divided down from the
    finer unit their size says, with one TimestampUnitWarning naming `what` (at the user's line). NaN (no
    time) stays NaN; integers stay integers."""
    times = np.asarray(times)
    if times.size == 0:
        return times
    magnitude = np.abs(times.astype(np.float64))
    if not np.nanmax(magnitude, initial=0.0) >= SECONDS_BELOW:  # the usual case, in one pass
        return times
    per_second = per_second_of(magnitude)
    finer = np.flatnonzero(per_second > 1)
    first = finer[0]
    warn_caller(converted_note(what, float(times[first]), int(per_second[first]), len(finer),
                                 int(np.count_nonzero(~np.isnan(magnitude)))))
    return times // per_second.astype(times.dtype)
