"""SQL sources and destinations: SQLite files always; PostgreSQL when a server is reachable
(RECMAML_TEST_POSTGRES_URI; .ci/run starts a throwaway one)."""

from __future__ import annotations

import os
import sys
import uuid

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import recmaml.connectors.sql as sql
from recmaml.connectors.sql import is_sql_uri, read_sql_frame, write_sql_table
from recmaml.connectors.writers import read_ranked_lists, write_ranked_lists
from recmaml.data import RankedLists
from recmaml.errors import DataError

adbc_sqlite = pytest.importorskip("adbc_driver_sqlite.dbapi", reason="needs the sql extra: pip install -e '.[sql]'")

POSTGRES_URI = os.environ.get("RECMAML_TEST_POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/postgres")

# A planted log: user 1 rated items a and b, user 2 rated c; ids of two kinds, a rating and a timestamp.
INTERACTIONS = pl.DataFrame(
    {
        "user_id": [1, 1, 2],
        "item_id": ["a", "b", "c"],
        "rating": [4.0, 2.5, 5.0],
        "timestamp": [100, 200, 300],
    }
)
RANKED = RankedLists(
    np.array(["u1", "u1", "u2"]), np.array([10, 20, 10]), np.array([0.5, 0.25, 0.75], np.float32), np.array([1, 2, 1])
)


@pytest.fixture
def sqlite_uri(tmp_path) -> str:
    """An SQLite file holding INTERACTIONS in the table "ratings", written with polars through ADBC."""
    path = tmp_path / "log.db"
    with adbc_sqlite.connect(str(path)) as conn:
        INTERACTIONS.write_database("ratings", connection=conn, engine="adbc")
        conn.commit()
    return f"sqlite:///{path}"


def test_is_sql_uri():
    assert is_sql_uri("sqlite:///x.db") and is_sql_uri("postgresql://u@h/db") and is_sql_uri("postgres://h/db")
    assert is_sql_uri("postgresql+psycopg://u@h/db")
    assert is_sql_uri("data/log.sqlite3") and is_sql_uri("LOG.DB")
    assert not is_sql_uri("log.csv") and not is_sql_uri("postgresql.csv") and not is_sql_uri(None)


def test_sqlite_read_by_table_and_by_query(sqlite_uri):
    assert read_sql_frame(sqlite_uri, table="ratings").equals(INTERACTIONS)
    top = read_sql_frame(sqlite_uri, query="SELECT user_id, item_id FROM ratings WHERE rating >= 4 ORDER BY item_id")
    assert top.rows() == [(1, "a"), (2, "c")]


def test_sqlite_plain_path(sqlite_uri):
    path = sqlite_uri.removeprefix("sqlite:///")
    assert read_sql_frame(path, table="ratings").equals(INTERACTIONS)


def test_read_interactions_from_sqlite(sqlite_uri):
    readers = pytest.importorskip("recmaml.connectors.readers")
    if not callable(getattr(readers, "read_interactions", None)):
        pytest.skip("recmaml.connectors.readers.read_interactions is not written yet")
    got = readers.read_interactions(sqlite_uri, table="ratings")
    assert len(got) == 3
    assert got.users.ids.tolist() == [1, 2] and got.items.ids.tolist() == ["a", "b", "c"]
    assert got.rating.tolist() == [4.0, 2.5, 5.0] and got.timestamp.tolist() == [100, 200, 300]


def test_no_such_table_names_table_and_db(sqlite_uri):
    with pytest.raises(DataError, match=r"log\.db.*'ratingz'.*no such table.*check the table name"):
        read_sql_frame(sqlite_uri, table="ratingz")


def test_bad_query_is_a_data_error(sqlite_uri):
    with pytest.raises(DataError, match="syntax error.*fix the SQL query"):
        read_sql_frame(sqlite_uri, query="SELEC * FROM ratings")


def test_missing_database_file_is_not_created(tmp_path):
    with pytest.raises(DataError, match=r"nope\.db' not found"):
        read_sql_frame(f"sqlite:///{tmp_path}/nope.db", table="ratings")
    with pytest.raises(DataError, match="not found"):
        read_sql_frame(tmp_path / "nope.sqlite", table="ratings")
    assert list(tmp_path.iterdir()) == []


def test_exactly_one_of_table_or_query(sqlite_uri):
    with pytest.raises(DataError, match="exactly one of table= or query="):
        read_sql_frame(sqlite_uri)
    with pytest.raises(DataError, match="exactly one of table= or query="):
        read_sql_frame(sqlite_uri, table="ratings", query="SELECT 1")


@pytest.mark.parametrize("name", ['ratings"; DROP TABLE ratings; --', "a b", "1abc", "a.b.c", ""])
def test_table_names_cannot_carry_sql(sqlite_uri, name):
    with pytest.raises(DataError, match="invalid table name"):
        read_sql_frame(sqlite_uri, table=name)
    with pytest.raises(DataError, match="invalid table name"):
        write_sql_table(INTERACTIONS, sqlite_uri, name)
    assert read_sql_frame(sqlite_uri, table="ratings").height == 3


def test_if_exists_modes(sqlite_uri):
    write_sql_table(INTERACTIONS, sqlite_uri, "ratings", if_exists="append")
    assert read_sql_frame(sqlite_uri, table="ratings").height == 6
    with pytest.raises(DataError, match="already exists.*if_exists='replace'"):
        write_sql_table(INTERACTIONS, sqlite_uri, "ratings", if_exists="fail")
    write_sql_table(INTERACTIONS.head(1), sqlite_uri, "ratings")
    assert read_sql_frame(sqlite_uri, table="ratings").height == 1
    with pytest.raises(DataError, match="if_exists must be one of"):
        write_sql_table(INTERACTIONS, sqlite_uri, "ratings", if_exists="merge")


def _fail_after_first_batch(frame: pl.DataFrame) -> pa.RecordBatchReader:
    """An Arrow stream that delivers its first batch (so rows are inserted) and then fails."""
    table = frame.to_arrow()

    def batches():
        yield from table.slice(0, 1).to_batches()
        raise RuntimeError("connection lost (planted)")

    return pa.RecordBatchReader.from_batches(table.schema, batches())


def _assert_failed_replace_keeps_old_table(uri: str, table: str, monkeypatch) -> None:
    write_sql_table(INTERACTIONS, uri, table)
    monkeypatch.setattr(sql, "_arrow_stream", _fail_after_first_batch)
    with pytest.raises(DataError, match="planted"):
        write_sql_table(pl.concat([INTERACTIONS] * 5), uri, table)
    assert read_sql_frame(uri, table=table).equals(INTERACTIONS)


def test_sqlite_failed_replace_keeps_old_table(sqlite_uri, monkeypatch):
    _assert_failed_replace_keeps_old_table(sqlite_uri, "ratings", monkeypatch)


def test_sqlite_failed_first_write_creates_no_table(sqlite_uri, monkeypatch):
    monkeypatch.setattr(sql, "_arrow_stream", _fail_after_first_batch)
    with pytest.raises(DataError, match="planted"):
        write_sql_table(INTERACTIONS, sqlite_uri, "fresh")
    with pytest.raises(DataError, match="no such table"):
        read_sql_frame(sqlite_uri, table="fresh")


def test_not_a_database_uri():
    with pytest.raises(DataError, match="not a database URI"):
        read_sql_frame("log.csv", table="ratings")


# --- PostgreSQL ----------------------------------------------------------------------------------------


def _pg_execute(uri: str, statement: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(statement)
        conn.commit()


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    pytest.importorskip("adbc_driver_postgresql.dbapi", reason="needs the sql extra: pip install -e '.[sql]'")
    probe = POSTGRES_URI + ("&" if "?" in POSTGRES_URI else "?") + "connect_timeout=3"
    try:
        _pg_execute(probe, "SELECT 1")
    except Exception as exc:  # any failure to reach the server means: no server for these tests
        detail = " ".join(str(exc).split())[:200]
        reason = (
            f"no PostgreSQL server at {sql.display_uri(POSTGRES_URI)} ({type(exc).__name__}: {detail}); "
            "run bash .ci/run, or set RECMAML_TEST_POSTGRES_URI"
        )
        if os.environ.get("RECMAML_REQUIRE_POSTGRES"):  # .ci/run started a server: it must be reachable
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_URI


@pytest.fixture
def pg_table(postgres_uri):
    """A fresh table name, dropped after the test so that a shared server stays clean."""
    name = f"recmaml_test_{uuid.uuid4().hex[:12]}"
    yield name
    _pg_execute(postgres_uri, f'DROP TABLE IF EXISTS "{name}"')


@pytest.mark.postgres
def test_postgres_ranked_lists_round_trip(postgres_uri, pg_table):
    write_ranked_lists(RANKED, postgres_uri, table=pg_table)
    assert read_ranked_lists(postgres_uri, table=pg_table).equals(RANKED)
    write_ranked_lists(RANKED, postgres_uri, table=pg_table)  # replace, not append
    assert len(read_ranked_lists(postgres_uri, table=pg_table)) == len(RANKED)


@pytest.mark.postgres
def test_postgres_read_by_table_and_by_query(postgres_uri, pg_table):
    write_sql_table(INTERACTIONS, postgres_uri, pg_table)
    assert read_sql_frame(postgres_uri, table=pg_table).equals(INTERACTIONS)
    top = read_sql_frame(postgres_uri, query=f'SELECT user_id, item_id FROM "{pg_table}" WHERE rating >= 4 ORDER BY 2')
    assert top.rows() == [(1, "a"), (2, "c")]


@pytest.mark.postgres
def test_postgres_read_interactions(postgres_uri, pg_table):
    readers = pytest.importorskip("recmaml.connectors.readers")
    if not callable(getattr(readers, "read_interactions", None)):
        pytest.skip("recmaml.connectors.readers.read_interactions is not written yet")
    write_sql_table(INTERACTIONS, postgres_uri, pg_table)
    got = readers.read_interactions(postgres_uri, table=pg_table)
    assert got.users.ids.tolist() == [1, 2] and got.items.ids.tolist() == ["a", "b", "c"]
    assert got.rating.tolist() == [4.0, 2.5, 5.0]


@pytest.mark.postgres
def test_postgres_no_such_table(postgres_uri):
    with pytest.raises(DataError, match="'recmaml_no_such_table'.*does not exist.*check the table name"):
        read_sql_frame(postgres_uri, table="recmaml_no_such_table")


@pytest.mark.postgres
def test_postgres_failed_replace_keeps_old_table(postgres_uri, pg_table, monkeypatch):
    _assert_failed_replace_keeps_old_table(postgres_uri, pg_table, monkeypatch)


def test_postgres_password_is_masked():  # needs the driver, not a server
    with pytest.raises(DataError) as err:
        read_sql_frame("postgresql://someone:s3cret@127.0.0.1:1/db?connect_timeout=2", table="t")
    assert "s3cret" not in str(err.value) and "someone:***@127.0.0.1:1" in str(err.value)
    assert "server is running" in str(err.value)


@pytest.mark.postgres
def test_postgres_sqlalchemy_style_uri(postgres_uri, pg_table):
    uri = postgres_uri.replace("postgresql://", "postgresql+psycopg://", 1)
    write_sql_table(INTERACTIONS, uri, pg_table)
    assert read_sql_frame(postgres_uri, table=pg_table).equals(INTERACTIONS)


def test_missing_sql_extra_says_how_to_install(sqlite_uri, monkeypatch):
    monkeypatch.setitem(sys.modules, "adbc_driver_sqlite.dbapi", None)  # as if the driver were not installed
    with pytest.raises(DataError, match=r"-m pip install -e '.*\[sql\]'"):
        read_sql_frame(sqlite_uri, table="ratings")
