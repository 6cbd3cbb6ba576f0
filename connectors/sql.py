"""SQL databases (SQLite, PostgreSQL) <-> polars frames, through ADBC drivers.

ADBC moves Arrow data in and out of the database without a per-row Python loop, and its drivers are
small wheels. They are an optional extra (`pip install recmaml[sql]`), so they are imported only when a
database is actually used.

URIs:
    sqlite:///relative/path.db   sqlite:////absolute/path.db   (SQLAlchemy's convention)
    path/to/file.db | .sqlite | .sqlite3                        (a plain path is an SQLite file)
    postgresql://user:password@host:port/dbname                 (also postgres://, postgresql+driver://)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import polars as pl

from recmaml.errors import DataError, install_extra, spelled

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
IF_EXISTS = ("replace", "append", "fail")
_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+")

# ADBC ingest modes for each if_exists value.
_INGEST_MODE = {"replace": "replace", "append": "create_append", "fail": "create"}

# Table names are identifiers, optionally schema-qualified; anything else is refused rather than escaped,
# so a table name can never carry SQL.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_sql_uri(source) -> bool:
    """True for sqlite:// and postgres(ql):// URIs and for paths ending .db/.sqlite/.sqlite3."""
    if isinstance(source, str) and source.lower().startswith(("sqlite://", *_POSTGRES_PREFIXES)):
        return True
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() in SQLITE_SUFFIXES
    return False


def read_sql_frame(uri: str, *, table: str | None = None, query: str | None = None) -> pl.DataFrame:
    """All rows of `table`, or the result of `query`, as a polars frame."""
    if (table is None) == (query is None):
        raise DataError(f"{display_uri(uri)}: pass exactly one of {spelled('table= or query=', '--data-table or a query')}")
    sql = f"SELECT * FROM {_quote_table(table)}" if table is not None else query
    what = f"table {table!r}" if table is not None else f"query {_shorten(query)!r}"
    with _connect(uri, what, for_write=False) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                arrow = cur.fetch_arrow_table()
        except _dbapi_error() as exc:
            raise _sql_error(uri, what, exc) from exc
    return pl.from_arrow(arrow)


def write_sql_table(frame: pl.DataFrame, uri: str, table: str, *, if_exists: str = "replace") -> None:
    """Write `frame` to `table` in one transaction: either the whole table is written or nothing changes.

    if_exists: "replace" (drop the old table and create it anew), "append" (create it when missing) or
    "fail" (error when the table exists).
    """
    with SqlTableSink(uri, table, if_exists=if_exists) as sink:
        sink.write(frame)


class SqlTableSink:
    """A table written chunk by chunk in ONE transaction, so that memory holds one chunk while readers
    see either the old table or the whole new one (an error rolls everything back):

        with SqlTableSink("sqlite:///recs.db", "recs") as sink:
            for frame in frames:
                sink.write(frame)

    if_exists applies to the first chunk (see write_sql_table); later chunks are appended. A sink that
    wrote nothing still replaces the table with `empty` (a frame giving the columns), when given."""

    def __init__(self, uri: str, table: str, *, if_exists: str = "replace", empty: pl.DataFrame | None = None):
        if if_exists not in IF_EXISTS:
            raise DataError(f"if_exists must be one of {list(IF_EXISTS)}, got {if_exists!r}")
        self.uri, self.if_exists, self.empty = uri, if_exists, empty
        self.schema, self.name = _split_table(table)
        self.what = f"table {table!r}"
        self.conn = None
        self.chunks = 0

    def __enter__(self) -> SqlTableSink:
        self.conn = _connect(self.uri, self.what, for_write=True)
        return self

    def write(self, frame: pl.DataFrame) -> None:
        mode = _INGEST_MODE[self.if_exists] if self.chunks == 0 else "append"
        try:
            with self.conn.cursor() as cur:
                # ADBC connections run with autocommit off: the drop, create and every insert belong to
                # one transaction, which commit() makes visible at once.
                cur.adbc_ingest(self.name, _arrow_stream(frame), mode=mode, db_schema_name=self.schema)
        except _dbapi_error() as exc:
            raise _sql_error(self.uri, self.what, exc, if_exists=self.if_exists) from exc
        self.chunks += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.chunks == 0 and self.empty is not None:
                    self.write(self.empty)
                try:
                    self.conn.commit()
                except _dbapi_error() as err:
                    raise _sql_error(self.uri, self.what, err, if_exists=self.if_exists) from err
        except BaseException:
            _rollback(self.conn)
            raise
        finally:
            if exc_type is not None:
                _rollback(self.conn)  # whatever failed mid-write, the old table stays as it was
            self.conn.close()


def _rollback(conn) -> None:
    """Undo the open transaction. A rollback that fails (the connection is gone) is ignored: the error
    being raised is the one that matters, and the server discards an uncommitted transaction anyway."""
    try:
        conn.rollback()
    except _dbapi_error():
        pass


def _arrow_stream(frame: pl.DataFrame):
    """The frame as an Arrow stream of record batches, what ADBC ingests. (Tests replace it with a stream
    that fails halfway, to prove that a failed write leaves the old table intact.)"""
    return frame.to_arrow().to_reader()


# --- connections ---------------------------------------------------------------------------------------


def _import_dbapi(module: str):
    try:
        return __import__(module, fromlist=["dbapi"])
    except ImportError as exc:
        raise DataError(
            f"reading or writing SQL databases needs the ADBC drivers ({exc.name} is missing); "
            f"install them with: {install_extra('sql')}"
        ) from exc


def _dbapi_error():
    """The base class of every error an ADBC driver raises."""
    return _import_dbapi("adbc_driver_manager.dbapi").Error


def _connect(uri: str, what: str, *, for_write: bool):
    if not isinstance(uri, (str, os.PathLike)) or not is_sql_uri(uri):
        raise DataError(
            f"{uri!r} is not a database URI; use sqlite:///path.db, a path ending {'/'.join(SQLITE_SUFFIXES)}, "
            "or postgresql://user:password@host:port/dbname"
        )
    uri = os.fspath(uri)
    if uri.lower().startswith(_POSTGRES_PREFIXES):
        dbapi = _import_dbapi("adbc_driver_postgresql.dbapi")
        # SQLAlchemy-style URIs name a Python driver (postgresql+psycopg://); libpq wants the plain scheme.
        target = re.sub(r"^postgresql\+[^:/]*://", "postgresql://", uri, flags=re.IGNORECASE)
    else:
        dbapi = _import_dbapi("adbc_driver_sqlite.dbapi")
        target = _sqlite_path(uri, what, for_write=for_write)
    try:
        return dbapi.connect(target)
    except _dbapi_error() as exc:
        raise _sql_error(uri, what, exc) from exc


def _sqlite_path(uri: str, what: str, *, for_write: bool) -> str:
    if uri.lower().startswith("sqlite://"):
        # sqlite:///rel.db -> "rel.db", sqlite:////abs.db -> "/abs.db"
        path = Path(uri[len("sqlite:///"):]) if uri.lower().startswith("sqlite:///") else Path("")
    else:
        path = Path(uri)
    if not path.name:
        raise DataError(f"{uri!r}: no database file in the URI; use sqlite:///relative.db or sqlite:////abs/path.db")
    if for_write and not path.parent.is_dir():
        raise DataError(f"{uri}: folder {str(path.parent)!r} does not exist; create it first")
    if not for_write and not path.is_file():
        # SQLite would silently create an empty database; a typo must be an error instead.
        raise DataError(f"{uri}: database file {str(path)!r} not found (reading {what}); check the path")
    return str(path)


# --- names and messages --------------------------------------------------------------------------------


def _split_table(table: str) -> tuple[str | None, str]:
    parts = table.split(".") if isinstance(table, str) else [None]
    if len(parts) > 2 or not all(isinstance(p, str) and _IDENTIFIER.fullmatch(p) for p in parts):
        raise DataError(
            f"invalid table name {table!r}: use letters, digits and underscores (optionally schema.table), "
            "or read it with query="
        )
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _quote_table(table: str) -> str:
    schema, name = _split_table(table)
    return f'"{name}"' if schema is None else f'"{schema}"."{name}"'


def display_uri(uri) -> str:
    """The URI with its password masked, fit for messages and logs."""
    uri = os.fspath(uri) if isinstance(uri, os.PathLike) else str(uri)
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sql_error(uri, what: str, exc: Exception, *, if_exists: str | None = None) -> DataError:
    detail = _shorten(str(exc).replace(str(uri), display_uri(uri)), 300)
    low = detail.lower()
    if "no such table" in low or ("relation" in low and "does not exist" in low):
        fix = "check the table name, or pass query="
    elif if_exists == "fail" and "exist" in low:
        fix = "pass if_exists='replace' or if_exists='append'"
    elif "syntax" in low:
        fix = "fix the SQL query"
    elif "connect" in low or "authentication" in low or "password" in low:
        fix = "check that the server is running and the host, port, user and password in the URI"
    else:
        fix = "check the URI, the table and the query"
    return DataError(f"{display_uri(uri)}: {what}: {detail}; {fix}")
