"""Side-feature tables (one row per user or per item) -> SideFeatures, for `--user-features`/`--item-features`.

Column kinds follow the column's type: text or booleans are categorical (one level per value); text with
'|' between values, or a list column, is multi-hot (e.g. "Action|Comedy"); numbers are numeric, kept as
they are (MetaRecommender.fit standardizes them with the warm users' mean and standard deviation and
saves those, so that serving scales cold users' values the same way). Nulls are missing.
"""

from __future__ import annotations

import polars as pl

from recmaml.connectors.movielens import level_codes, multi_hot
from recmaml.connectors.readers import read_frame
from recmaml.data import SideFeatures, Vocabulary
from recmaml.errors import DataError, spelled
from recmaml.frames import ids_to_numpy

MULTI_SEPARATOR = "|"


def read_side_features(source, *, id_col: str, format: str | None = None, delimiter: str | None = None,
                       table: str | None = None) -> SideFeatures:
    """Side features from a CSV/TSV/Parquet/JSON Lines file, an SQL table or a frame, keyed by `id_col`;
    every other column is a feature."""
    frame = read_frame(source, format=format, delimiter=delimiter, table=table)
    frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    name = str(source) if not hasattr(source, "columns") else "the feature frame"
    if id_col not in frame.columns:
        raise DataError(f"{name}: no id column {id_col!r}; found {frame.columns}; the feature table needs the same "
                        f"id column as the interactions ({spelled('id_col=', '--user-col / --item-col')})")
    if frame.width < 2:
        raise DataError(f"{name}: no feature columns besides {id_col!r}")
    nulls = frame[id_col].is_null()
    if nulls.any():
        raise DataError(f"{name}: column {id_col!r} has a missing id at data row {int(nulls.arg_true()[0]) + 1}")
    duplicated = frame[id_col].is_duplicated()
    if duplicated.any():
        row = int(duplicated.arg_true()[0]) + 1
        raise DataError(f"{name}: id {frame[id_col][row - 1]!r} appears more than once (data row {row}); "
                        "give one row per id")
    frame = frame.sort(id_col)
    features = dict(ids=Vocabulary(ids_to_numpy(frame[id_col])), categorical={}, categorical_levels={},
                    multi_hot={}, multi_hot_levels={}, numeric={})
    for col in frame.columns:
        if col != id_col:
            _add_column(features, frame[col], name)
    return SideFeatures(**features)


def _add_column(features: dict, series: pl.Series, source: str) -> None:
    col = series.name
    if series.dtype.is_numeric():
        features["numeric"][col] = series.cast(pl.Float32).fill_null(float("nan")).to_numpy()
        return
    if series.dtype == pl.String and series.str.contains(MULTI_SEPARATOR, literal=True).any():
        series = series.str.split(MULTI_SEPARATOR)
    if isinstance(series.dtype, pl.List):
        series = series.cast(pl.List(pl.String))
        levels = sorted(series.explode().drop_nulls().unique().to_list())
        features["multi_hot"][col], features["multi_hot_levels"][col] = multi_hot(series, levels), levels
        return
    if series.dtype in (pl.String, pl.Boolean, pl.Categorical, pl.Enum):
        text = series.cast(pl.String)
        levels = sorted(text.drop_nulls().unique().to_list())
        features["categorical"][col], features["categorical_levels"][col] = level_codes(text, levels), levels
        return
    raise DataError(f"{source}: column {col!r} has type {series.dtype}, which is not a feature type; use text "
                    "(categorical), text with '|' (multi-hot) or numbers")
