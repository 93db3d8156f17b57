"""Database engines: SQLite (WAL, synchronous=FULL) by default, PostgreSQL for several nodes."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import Connection, Engine, Index, Table, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.schema import CreateColumn, CreateTable

from switch.store.schema import metadata

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# How often a writer asks again for SQLite's write lock while another connection holds it.
WRITE_LOCK_POLL_S = 0.0002
# Called with no argument on a writer's thread each time it finds SQLite's write lock taken, before it
# asks again: tests set it to learn that a writer waits for another's lock instead of waiting a while
# (tests.integration.harness.sqlite_lock_waits). None in the switch.
on_write_lock_taken: Callable[[], None] | None = None
POOL_SIZE = 16


def shown_url(url: str) -> str:
    """The database URL as an operator may read it: its password hidden, whether given before the
    host or as a query parameter (libpq's password=); a URL that does not parse is not shown."""
    try:
        parsed = make_url(url)
    except (ValueError, ArgumentError):
        return "(a database URL that does not parse)"
    secret = [name for name in parsed.query if name.lower() == "password"]
    return parsed.difference_update_query(secret).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine whose commits are durable when they return."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=POOL_SIZE,
            max_overflow=POOL_SIZE,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Options given in the URL (a search_path, say) are kept beside the durability setting.
    parsed = make_url(url)
    url_options = parsed.query.get("options", "")
    given = url_options if isinstance(url_options, str) else " ".join(url_options)
    return create_engine(
        parsed.difference_update_query(["options"]),
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
        hide_parameters=True,
        connect_args={"options": f"-c synchronous_commit=on {given}".strip()},
    )


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


@contextmanager
def writing(
    engine: Engine | Connection, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000
) -> Iterator[Connection]:
    """`engine.begin()` for a transaction that writes; on SQLite it holds the write lock from its start.

    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms and so on between tries, so a writer
    that found the lock taken for a millisecond (an admin's card issue, a bank-card payment's row)
    slept 3 to 80 ms (session 18: journal batches of exactly 55 and 80 ms with 1 ms of work).
    Here the lock is taken with `BEGIN IMMEDIATE` and, while another connection holds it, asked
    for again every WRITE_LOCK_POLL_S, so the wait ends within that of the lock's release. The
    transaction also cannot fail halfway on a snapshot that another writer made stale. PostgreSQL
    transactions begin as usual. Raises sqlalchemy's OperationalError after timeout_s of waiting.

    Every writing transaction of the switch uses it, the journal's and the rest: one writer left on
    the busy handler waits out hundreds of the journal's batches, which ask every 0.2 ms. A
    transaction that holds the lock must not wait for another writing transaction of its own.

    Given a Connection rather than an engine, the transaction is begun on it: a process that only
    ever writes one transaction at a time keeps its connection instead of taking one from the pool
    and giving it back for each (the journal process: about 25 us of CPU a batch).
    """
    if isinstance(engine, Connection):  # one its owner keeps (the journal process's)
        with engine.begin():
            if engine.dialect.name == "sqlite":
                _take_write_lock(engine, timeout_s)
            yield engine
        return
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            _take_write_lock(conn, timeout_s)
        yield conn


def _take_write_lock(conn: Connection, timeout_s: float) -> None:
    dbapi = conn.connection.dbapi_connection
    assert isinstance(dbapi, sqlite3.Connection), "an SQLite engine's connections are sqlite3's"
    if dbapi.in_transaction:
        return  # it has begun already, on this connection
    deadline_s = time.monotonic() + timeout_s
    dbapi.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline_s:
                    raise OperationalError("BEGIN IMMEDIATE", None, error) from error
            if on_write_lock_taken is not None:
                on_write_lock_taken()
            time.sleep(WRITE_LOCK_POLL_S)
    finally:
        dbapi.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


class SchemaMismatchError(RuntimeError):
    """The database lacks a column this version needs and cannot add by itself."""


# Taken by every node around its schema changes on one PostgreSQL database; any constant will do,
# as long as all versions use the same one.
SCHEMA_LOCK_KEY = 0x74787377  # "txsw"

# Indexes an earlier version made that another has replaced, dropped at start (before the indexes
# are made): session 23's `uq_acquirer_saf_reversal` held a reversal advice's STAN for ever, where
# `uq_acquirer_saf_reversal_held` holds it only until a while after its acknowledgement.
SUPERSEDED_INDEXES: Final = ("uq_acquirer_saf_reversal",)
# Unique constraints an earlier version made that another has replaced, (table, columns), taken away
# at start: session 23's `top_ups.request_id` was unique over all top-ups, where since session 24 a
# request id is the card's own (`uq_top_ups_card_request`), so two cards could not use one id.
SUPERSEDED_UNIQUE_CONSTRAINTS: Final = (("top_ups", ("request_id",)),)


def create_schema(engine: Engine) -> tuple[str, ...]:
    """Create what is missing: tables, columns and indexes added to tables that exist already.
    Returns the names of the unique indexes left out because rows break them (`_create_unique_index`).

    Only additive changes are made: a new column must be nullable or have a server default, so
    the rows already there get a value; anything else is refused with the column's name. The
    removals are of an index or a unique constraint another replaces (`SUPERSEDED_INDEXES`,
    `SUPERSEDED_UNIQUE_CONSTRAINTS`).
    On PostgreSQL all of it is one transaction under an advisory lock: nodes starting together
    take turns, and each after the first finds everything there (DDL there is transactional).
    On SQLite it is one write transaction too (`writing`: BEGIN IMMEDIATE), where pysqlite began
    none for DDL: each CREATE was committed, and synced, on its own (about 90 on a new file).
    """
    left_out: list[str] = []
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        elif _sqlite_schema_current(conn):
            return ()
        metadata.create_all(conn)
        _add_missing_columns(conn)
        _drop_superseded_unique_constraints(conn)
        for name in SUPERSEDED_INDEXES:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        for table in metadata.sorted_tables:
            for index in table.indexes:
                if not index.unique:
                    index.create(conn, checkfirst=True)
                elif not _create_unique_index(conn, index):
                    left_out.append(str(index.name))
    return tuple(left_out)


def _sqlite_schema_current(conn: Connection) -> bool:
    """Whether the SQLite database holds every table, column and index this version declares (by
    name, as create_all's and Index.create's checkfirst look) and nothing superseded: then
    create_schema has nothing to do. Read in three statements, where the reflection that finds
    the same took about 200 (some 10 ms of a quiet core at every start on an existing file)."""
    found = conn.execute(
        text(
            "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table'"
        )
    ).all()
    columns: dict[str, set[str]] = {}
    for table_name, column_name in found:
        columns.setdefault(str(table_name), set()).add(str(column_name))
    indexes = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
    for table in metadata.sorted_tables:
        if not {column.name for column in table.columns} <= columns.get(table.name, set()):
            return False
        if any(index.name not in indexes for index in table.indexes):
            return False
    if any(name in indexes for name in SUPERSEDED_INDEXES):
        return False
    return not any(
        _sqlite_unique_constraint(conn, name, cols) for name, cols in SUPERSEDED_UNIQUE_CONSTRAINTS
    )


def _create_unique_index(conn: Connection, index: Index) -> bool:
    """A unique index added to a table that already holds rows breaking it (two payments under one
    acquirer name, from before `uq_card_payments_original`) is left out with an error in the log
    (False): the switch starts and runs as before it, and a start after the rows are resolved
    creates it. Operators see it as `txswitch_schema_index_missing` and in the console's `status`."""
    try:
        if conn.dialect.name == "postgresql":  # a failed statement would end the whole transaction
            with conn.begin_nested():
                index.create(conn, checkfirst=True)
        else:
            index.create(conn, checkfirst=True)
    except IntegrityError as error:
        log.error("index %s not created: rows of %s break it (%s)", index.name, index.table, error.orig)
        return False
    return True


class MissingIndexes:
    """The unique indexes `create_schema` left out at this node's start, asked about again on demand:
    a later start of any node sharing the database creates one once its rows are resolved. Only the
    ones left out are looked up, so a database that has them all costs nothing to ask."""

    def __init__(self, engine: Engine, left_out: tuple[str, ...]) -> None:
        self._engine = engine
        self._left_out = left_out
        self._missing = left_out

    @property
    def left_out(self) -> tuple[str, ...]:
        """Every index left out at start, missing or created since (its gauge then reads 0)."""
        return self._left_out

    def missing(self) -> tuple[str, ...]:
        """Of those left out, the ones still missing now (one catalogue query per table holding one)."""
        missing = self._missing
        if not missing:
            return ()
        tables = {
            table.name
            for table in metadata.sorted_tables
            for index in table.indexes
            if index.unique and index.name in missing
        }
        with self._engine.connect() as conn:
            inspector = inspect(conn)
            present = {str(found["name"]) for table in tables for found in inspector.get_indexes(table)}
        self._missing = tuple(name for name in missing if name not in present)  # none comes back
        return self._missing


def _add_missing_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        for column in missing:
            if not column.nullable and column.server_default is None:
                raise SchemaMismatchError(
                    f"{table.name}.{column.name} is missing and has no default to fill existing rows; "
                    "this database needs a migration"
                )
            definition = CreateColumn(column).compile(dialect=conn.dialect)
            table_name = conn.dialect.identifier_preparer.format_table(table)
            conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {definition}"))


def _drop_superseded_unique_constraints(conn: Connection) -> None:
    """Each of SUPERSEDED_UNIQUE_CONSTRAINTS still found: dropped on PostgreSQL; on SQLite, which
    drops no constraint, its table is made again without it (`_make_sqlite_table_again`)."""
    for table_name, columns in SUPERSEDED_UNIQUE_CONSTRAINTS:
        if conn.dialect.name == "postgresql":
            for found in inspect(conn).get_unique_constraints(table_name):
                if tuple(found["column_names"]) == columns and found["name"]:
                    preparer = conn.dialect.identifier_preparer
                    named = f"{preparer.quote(table_name)} DROP CONSTRAINT {preparer.quote(found['name'])}"
                    conn.execute(text(f"ALTER TABLE {named}"))
                    log.info("unique constraint %s of %s taken away: superseded", found["name"], table_name)
        elif _sqlite_unique_constraint(conn, table_name, columns):
            _make_sqlite_table_again(conn, metadata.tables[table_name])
            log.info("table %s made again without its superseded unique %s", table_name, columns)


def _sqlite_unique_constraint(conn: Connection, table_name: str, columns: tuple[str, ...]) -> bool:
    """Whether the SQLite table has a UNIQUE constraint (inline or the table's) on exactly these
    columns: its automatic index, origin "u" (a CREATE UNIQUE INDEX is "c", dropped by name)."""
    for row in conn.execute(text(f'PRAGMA index_list("{table_name}")')).all():
        if row.origin == "u":
            found = conn.execute(text(f'PRAGMA index_info("{row.name}")')).all()
            if tuple(str(column.name) for column in found) == columns:
                return True
    return False


def _make_sqlite_table_again(conn: Connection, table: Table) -> None:
    """The table made as this version declares it, in one transaction (BEGIN IMMEDIATE): its rows
    copied, every column kept, its indexes made again as they were. A column this version does not
    know is never dropped: SchemaMismatchError, nothing changed. No table may refer to it (a foreign
    key to it would follow the rename to the old table)."""
    referring = [
        other.name
        for other in metadata.sorted_tables
        if any(key.references(table) for key in other.foreign_keys)
    ]
    assert referring == [], f"{table.name} is referred to by {referring}: the rename would take them along"
    _take_write_lock(conn, SQLITE_BUSY_TIMEOUT_MS / 1000)
    present = [str(column["name"]) for column in inspect(conn).get_columns(table.name)]
    unknown = sorted(set(present) - set(table.columns.keys()))
    if unknown:
        raise SchemaMismatchError(
            f"{table.name} has columns this version does not know ({', '.join(unknown)}): it is not "
            "made again without its superseded unique constraint; this database needs a migration"
        )
    made = "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :table AND sql IS NOT NULL"
    index_sqls = list(conn.execute(text(made), {"table": table.name}).scalars())  # before the rename
    old_name = f"{table.name}_superseded"
    listed = ", ".join(f'"{name}"' for name in present)
    conn.execute(text(f'ALTER TABLE "{table.name}" RENAME TO "{old_name}"'))  # its indexes follow it
    conn.execute(CreateTable(table))
    conn.execute(text(f'INSERT INTO "{table.name}" ({listed}) SELECT {listed} FROM "{old_name}"'))
    conn.execute(text(f'DROP TABLE "{old_name}"'))
    for index_sql in index_sqls:
        conn.execute(text(index_sql))
