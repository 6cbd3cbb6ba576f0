"""HetRec 2011 Last.fm (hetrec2011-lastfm-2k, GroupLens/UAM): an implicit log of plays.

    interactions = read_lastfm("lastfm-hetrec2011")          # the folder, or its user_artists.dat

user_artists.dat is tab-separated with a header line, `userID  artistID  weight`, where weight is how
often the user played the artist. That count is read as the rating column: it holds counts, so recmaml
treats every row as a positive (data.is_count_column) and the benchmark leaves out what needs a rating
scale (the MeLU protocol, the item means). The plays carry no timestamps (the tag events of
user_taggedartists.dat have dates, but they are other events), so the temporal protocol does not apply.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recmaml.connectors.librec import number_column, text_fields
from recmaml.data import Interactions
from recmaml.errors import DataError
from recmaml.frames import Columns, frame_to_interactions

_PLAYS_FILE = "user_artists.dat"
_HEADER = ["userID", "artistID", "weight"]
_COLUMNS = Columns("user_id", "item_id", "rating", None, require_rating=True)


def detect_hetrec(path) -> str | None:
    """"lastfm" for a folder holding user_artists.dat (or that file), else None."""
    path = Path(path)
    if path.is_file():
        return "lastfm" if path.name == _PLAYS_FILE else None
    return "lastfm" if path.is_dir() and (path / _PLAYS_FILE).is_file() else None


def read_lastfm(path) -> Interactions:
    """Plays per (user, artist) of HetRec 2011 Last.fm: a folder holding user_artists.dat, or the file.
    The rating column is the play count (1 and up); there are no timestamps."""
    file = _plays_file(path)
    frame = text_fields(file, "\t", _HEADER)
    header = frame.row(0, named=True)
    if [header[name] for name in _HEADER] != _HEADER:
        raise DataError(f"{file}: line 1 should be the header {' '.join(_HEADER)!r} (tab-separated), got "
                        f"{' '.join(str(header[n]) for n in _HEADER)!r}; is it the original HetRec 2011 file?")
    frame = frame.slice(1)
    if frame.height == 0:
        raise DataError(f"{file}: no play rows under the header; expected lines of userID, artistID, weight")
    frame = frame.select(
        "line",
        number_column(frame, file, "userID", pl.Int64, "a user id").alias("user_id"),
        number_column(frame, file, "artistID", pl.Int64, "an artist id").alias("item_id"),
        number_column(frame, file, "weight", pl.Float64, "a play count").alias("rating"),
    )
    bad = frame["rating"] < 1
    if bad.any():
        raise DataError(f"{file}: line {frame['line'][int(bad.arg_true()[0])]}: a play count (weight) below 1 "
                        f"({int(bad.sum())} such lines); fix or delete those lines")
    return frame_to_interactions(frame.drop("line"), str(file), _COLUMNS, rating_range=None)


def _plays_file(path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder; check the path")
    file = path / _PLAYS_FILE
    if not file.is_file():
        found = sorted(p.name for p in path.iterdir())
        raise DataError(f"{path}: missing {_PLAYS_FILE} (the plays of HetRec 2011 Last.fm); the folder holds "
                        f"{found}; pass the hetrec2011-lastfm-2k folder or its {_PLAYS_FILE}")
    return file
