"""Starting on a database from an earlier version: additive columns are added, others refused."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

import switch.server
from switch.admin import SWITCH_DEVICE_NAMES
from switch.programme_settings import programme_cards_after
from switch.store.engine import SchemaMismatchError, create_schema, make_engine
from switch.store.journal import TransactionRecord, Write, commit_batch
from switch.store.saf import REVERSAL_STAN_HOLD_AFTER_ACK, NewReversal, SafStore, StanInUseError
from switch.store.schema import employees, inbound_repeat_keys, merchants, transactions
from tests.integration.harness import schema_template, start_world, statements_run
from tests.integration.test_top_up_request_id_upgrade import as_session_23_made_it, unique_request_ids
from tests.pg import postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        engine = make_engine(url or f"sqlite:///{tmp_path / 'old.sqlite'}")
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(merchants),
                {
                    "merchant_id": "mer_1",
                    "name": "Shop",
                    "email": "shop@example.test",
                    "password_hash": "x",
                    "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            )
            conn.execute(
                insert(employees),
                {
                    "employee_id": "emp_1",
                    "merchant_id": "mer_1",
                    "employee_number": "7",
                    "name": "Ann",
                    "role": "manager",
                    "pin_hash": "y",
                    "failed_tries": 0,
                },
            )
        try:
            yield engine
        finally:
            engine.dispose()


def as_an_older_release_had_it(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_a_column_added_since_is_created_and_existing_rows_get_its_default(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE employees DROP COLUMN active"))  # as the first release had it
    assert "active" not in {c["name"] for c in inspect(engine).get_columns("employees")}
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(select(employees.c.employee_id, employees.c.active)).all() == [("emp_1", True)]
    create_schema(engine)  # a second start changes nothing


def test_the_employees_pin_attempts_are_added_to_an_older_database_at_zero(engine: Engine) -> None:
    as_an_older_release_had_it(engine, "ALTER TABLE employees DROP COLUMN pin_attempts")  # before session 20
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(select(employees.c.employee_id, employees.c.pin_attempts)).all() == [("emp_1", 0)]


def test_a_missing_column_without_a_default_is_refused_by_name(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE employees DROP COLUMN role"))
    with pytest.raises(SchemaMismatchError, match=r"employees\.role is missing and has no default"):
        create_schema(engine)


def test_nodes_starting_together_on_an_older_postgres_database_all_start() -> None:
    """Each node runs create_schema at start; on one old database they must not race each other."""
    nodes = 4
    with postgres_schema() as url:
        engines = [make_engine(url) for _ in range(nodes)]
        try:
            create_schema(engines[0])
            with engines[0].begin() as conn:
                conn.execute(text("ALTER TABLE employees DROP COLUMN active"))  # added since
                conn.execute(text("DROP TABLE receipts"))  # a table added since
            for engine in engines:  # connected before the start, so the nodes meet at the same statement
                with engine.connect():
                    pass
            together = threading.Barrier(nodes)
            failures: list[BaseException] = []

            def start(engine: Engine) -> None:
                together.wait()
                try:
                    create_schema(engine)
                except Exception as error:  # collected, so every node's failure is reported
                    failures.append(error)

            threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert failures == []
            inspector = inspect(engines[0])
            assert "active" in {c["name"] for c in inspector.get_columns("employees")}
            assert inspector.has_table("receipts")
        finally:
            for engine in engines:
                engine.dispose()


def test_portal_logins_of_users_are_added_to_an_older_database_with_their_unique_index(
    engine: Engine,
) -> None:
    as_an_older_release_had_it(  # before session 8
        engine,
        "DROP INDEX ix_employees_email",
        "ALTER TABLE employees DROP COLUMN email",
        "ALTER TABLE employees DROP COLUMN password_hash",
        "DROP INDEX ix_portal_sessions_employee_id",
        "ALTER TABLE portal_sessions DROP COLUMN employee_id",
    )
    create_schema(engine)
    inspector = inspect(engine)
    assert {"email", "password_hash"} <= {c["name"] for c in inspector.get_columns("employees")}
    assert "employee_id" in {c["name"] for c in inspector.get_columns("portal_sessions")}
    with engine.begin() as conn:
        rows = conn.execute(
            select(employees.c.employee_id, employees.c.email, employees.c.password_hash)
        ).all()
        assert rows == [("emp_1", None, None)]
        conn.execute(employees.update().values(email="ann@example.test"))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the address is one login's only
        conn.execute(
            insert(employees),
            {
                "employee_id": "emp_2",
                "merchant_id": "mer_1",
                "employee_number": "8",
                "name": "Bo",
                "role": "cashier",
                "pin_hash": "z",
                "failed_tries": 0,
                "email": "ann@example.test",
            },
        )


def test_the_request_id_that_issued_a_card_is_added_to_an_older_database_as_a_unique_index(
    engine: Engine,
) -> None:
    as_an_older_release_had_it(  # before session 20
        engine, "DROP INDEX ix_cards_issue_key", "ALTER TABLE cards DROP COLUMN issue_key"
    )
    create_schema(engine)
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("cards")}
    assert indexes["ix_cards_issue_key"]["column_names"] == ["issue_key"]
    assert indexes["ix_cards_issue_key"]["unique"]


def test_the_index_of_replaced_cards_is_added_to_an_older_database(engine: Engine) -> None:
    """Each start looks for money left on replaced cards by it (Store.money_on_replaced_cards)."""
    as_an_older_release_had_it(engine, "DROP INDEX ix_cards_replaced")  # before session 24
    create_schema(engine)
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("cards")}
    assert indexes["ix_cards_replaced"]["column_names"] == ["replaced_by"]
    assert not indexes["ix_cards_replaced"]["unique"]


def test_the_index_of_a_programmes_cards_is_made_at_start_and_reads_them(engine: Engine) -> None:
    """set-load-step reads a programme's cards (programme_cards_after); with no index on
    cards.programme_id it scanned every card of every programme. A non-unique index is made at
    every start (create_schema), on a database from before it too, so none is ever left out."""
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("cards")}
    assert indexes["ix_cards_programme"]["column_names"] == ["programme_id", "card_id"]
    assert not indexes["ix_cards_programme"]["unique"]
    as_an_older_release_had_it(engine, "DROP INDEX ix_cards_programme")  # before session 25
    assert create_schema(engine) == ()
    assert "ix_cards_programme" in {index["name"] for index in inspect(engine).get_indexes("cards")}
    if engine.dialect.name == "sqlite":  # PostgreSQL's planner scans a table this small
        query = programme_cards_after("prg_1", "").compile(engine, compile_kwargs={"literal_binds": True})
        with engine.connect() as conn:
            plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
        searched = "SEARCH cards USING COVERING INDEX ix_cards_programme (programme_id=? AND card_id>?)"
        assert searched in plan, plan


def inbound_sale_stored(engine: Engine) -> None:
    """An approved inbound sale (THIRD001:000001:1121120000), stored before the database is taken back."""
    with engine.begin() as conn:
        conn.execute(
            insert(transactions),
            {
                "source": "iso:4711",
                "transaction_id": "THIRD001:000001:1121120000",
                "transaction_type": "redemption",
                "fingerprint": "f",
                "currency": "EUR",
                "result": "approved",
                "status": "approved",
                "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            },
        )


def test_the_inbound_mti_of_a_transaction_is_added_to_an_older_database_as_unknown(engine: Engine) -> None:
    """Rows from before it hold "": a completion of such an 0100 is taken as before (iso_inbound)."""
    inbound_sale_stored(engine)
    as_an_older_release_had_it(engine, "ALTER TABLE transactions DROP COLUMN mti")  # as before
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(select(transactions.c.transaction_id, transactions.c.mti)).all() == [
            ("THIRD001:000001:1121120000", "")
        ]


def test_the_inbound_retrieval_reference_is_added_to_an_older_database_with_its_index(engine: Engine) -> None:
    """Rows from before it hold "", which no resend's field 37 matches (iso_inbound.REPEAT_WINDOW)."""
    inbound_sale_stored(engine)
    as_an_older_release_had_it(
        engine,
        "DROP INDEX ix_transactions_retrieval_reference",
        "ALTER TABLE transactions DROP COLUMN retrieval_reference",
    )
    create_schema(engine)
    with engine.connect() as conn:
        found = conn.execute(select(transactions.c.transaction_id, transactions.c.retrieval_reference)).all()
    assert found == [("THIRD001:000001:1121120000", "")]
    indexes = {index["name"] for index in inspect(engine).get_indexes("transactions")}
    assert "ix_transactions_retrieval_reference" in indexes


def test_the_inbound_repeat_keys_and_resends_are_added_to_an_older_database(engine: Engine) -> None:
    """A sale stored before the table came is still found by its field 37 (iso_inbound._repeated);
    from the start on, each new inbound sale holds its key (journal._hold_repeat_keys)."""
    as_an_older_release_had_it(engine, "DROP TABLE inbound_repeat_keys", "DROP TABLE inbound_resends")
    create_schema(engine)
    create_schema(engine)  # a second start changes nothing
    assert {"inbound_repeat_keys", "inbound_resends"} <= set(inspect(engine).get_table_names())
    record = TransactionRecord(
        source="iso:4711",
        transaction_id="THIRD001:000001:1121120000",
        transaction_type="redemption",
        fingerprint="f",
        currency="EUR",
        result="insufficient_funds",
        status="declined",
        retrieval_reference="000000500001",
    )
    assert commit_batch(engine, [Write(record=record)]).results[0].ok
    with engine.connect() as conn:
        held = conn.execute(
            select(inbound_repeat_keys.c.id_prefix, inbound_repeat_keys.c.transaction_id)
        ).all()
    assert held == [("THIRD001:000001", "THIRD001:000001:1121120000")]


OLDER_ADVICE_NAMES = {
    "before session 23": (),  # no name reserved
    "session 23": (  # every advice's name reserved for ever, acknowledged or not
        "CREATE UNIQUE INDEX uq_acquirer_saf_reversal ON acquirer_saf (acquirer, terminal_id, reversal_stan)",
    ),
}


@pytest.mark.parametrize("release", OLDER_ADVICE_NAMES)
def test_the_reversal_advices_names_held_until_a_while_after_acknowledgement_come_to_an_older_database(
    engine: Engine, release: str
) -> None:
    now = dt.datetime(2026, 11, 22, 6, 30, tzinfo=dt.UTC)
    long_ago = now - 2 * REVERSAL_STAN_HOLD_AFTER_ACK
    saf = SafStore(engine)
    assert saf.enqueue(advice("000001", "000900"), long_ago)
    assert saf.enqueue(advice("000002", "000901"), long_ago)
    first, _ = saf.pending()
    assert saf.acknowledge(first.saf_id, long_ago)
    as_an_older_release_had_it(
        engine,
        "DROP INDEX uq_acquirer_saf_reversal_held",
        "ALTER TABLE acquirer_saf DROP COLUMN reversal_stan_released_at",
        *OLDER_ADVICE_NAMES[release],
    )
    assert create_schema(engine) == ()
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("acquirer_saf")}
    assert "uq_acquirer_saf_reversal" not in indexes
    held = indexes["uq_acquirer_saf_reversal_held"]
    assert held["column_names"] == ["acquirer", "terminal_id", "reversal_stan"] and held["unique"]
    assert saf.enqueue(advice("000003", "000900"), now)  # acknowledged long ago: given back
    with pytest.raises(StanInUseError):
        saf.enqueue(advice("000004", "000901"), now)  # still pending: held
    assert [entry.original_stan for entry in saf.pending()] == ["000002", "000003"]


def advice(original_stan: str, reversal_stan: str) -> NewReversal:
    return NewReversal(
        "acq-a", "TERM0001", "MERCHANT0000001", f"t-{original_stan}", "0200", original_stan, "1120063000",
        reversal_stan, "000000", 500, "978", "timeout",
    )  # fmt: skip


def test_the_web_day_pass_finds_the_web_terminals_by_an_index_an_older_database_gets_too(
    engine: Engine,
) -> None:
    """The pass (switch/web_days.py) looks the web terminals up by device name, every interval and
    just after midnight: without an index it read every terminal row (session 23 audit)."""
    as_an_older_release_had_it(engine, "DROP INDEX IF EXISTS ix_terminals_device_name")  # before it
    create_schema(engine)
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("terminals")}
    assert indexes["ix_terminals_device_name"]["column_names"] == ["device_name"]
    assert not indexes["ix_terminals_device_name"]["unique"]
    if engine.dialect.name == "sqlite":  # PostgreSQL's planner reads a table this small whole anyway
        names = ", ".join(f"'{name}'" for name in SWITCH_DEVICE_NAMES)
        with engine.connect() as conn:
            plan = conn.execute(
                text(f"EXPLAIN QUERY PLAN SELECT terminal_id FROM terminals WHERE device_name IN ({names})")
            ).all()
        assert any("USING INDEX ix_terminals_device_name" in str(step[-1]) for step in plan), plan


def test_a_database_error_names_the_statement_but_never_the_rows_values(engine: Engine) -> None:
    secret_hash = "pbkdf2$a-pin-hash-that-must-not-travel"
    row = {"employee_id": "emp_2", "merchant_id": "mer_1", "employee_number": "7", "name": "Bo"}
    with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
        conn.execute(
            insert(employees), {**row, "role": "cashier", "pin_hash": secret_hash, "failed_tries": 0}
        )
    assert "INSERT INTO employees" in str(raised.value)
    assert secret_hash not in str(raised.value)
    assert "emp_2" not in str(raised.value)


def test_a_programmes_load_step_is_added_to_an_older_database_empty(engine: Engine) -> None:
    """Empty: such a programme loads as domain.programmes.stored_load_step_minor says (test_load_step)."""
    as_an_older_release_had_it(engine, "ALTER TABLE programmes DROP COLUMN load_step_minor")  # session 23
    create_schema(engine)
    columns = {column["name"]: column for column in inspect(engine).get_columns("programmes")}
    assert columns["load_step_minor"]["nullable"]


def test_a_programmes_creation_time_is_added_to_an_older_database_empty(engine: Engine) -> None:
    """Empty (unknown): a past payout cycle then cannot tell whether the programme existed in it."""
    as_an_older_release_had_it(engine, "ALTER TABLE programmes DROP COLUMN created_at")  # session 25
    create_schema(engine)
    columns = {column["name"]: column for column in inspect(engine).get_columns("programmes")}
    assert columns["created_at"]["nullable"]


def test_a_top_ups_request_id_per_card_is_added_to_an_older_database_as_a_unique_index(
    engine: Engine,
) -> None:
    as_an_older_release_had_it(engine, "DROP INDEX uq_top_ups_card_request")  # session 23
    create_schema(engine)
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("top_ups")}
    assert indexes["uq_top_ups_card_request"]["column_names"] == ["card_id", "request_id"]
    assert indexes["uq_top_ups_card_request"]["unique"]


def test_a_current_top_ups_table_is_left_as_it_is_at_start(engine: Engine) -> None:
    """Only a table holding session 23's unique request_id is made again (SQLite) or altered
    (PostgreSQL): a start on a current database renames, drops and alters nothing."""
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        create_schema(engine)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    changed = [each for each in statements if each.lstrip().upper().startswith(("ALTER", "DROP TABLE"))]
    assert changed == []


def test_an_old_top_ups_table_with_a_column_unknown_here_is_refused_by_name_and_kept(tmp_path: Path) -> None:
    """SQLite: making top_ups again without session 23's unique request_id would lose a column this
    version does not know (added by hand, or by a later version): refused by name, nothing changed."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE top_ups ADD COLUMN kept_by_hand VARCHAR(8)"))
            as_session_23_made_it(conn)
        refused = r"top_ups has columns this version does not know \(kept_by_hand\)"
        with pytest.raises(SchemaMismatchError, match=refused):
            create_schema(engine)
        assert "kept_by_hand" in {column["name"] for column in inspect(engine).get_columns("top_ups")}
        assert ("request_id",) in unique_request_ids(engine)
    finally:
        engine.dispose()


def test_a_new_sqlite_schema_is_made_in_one_transaction(tmp_path: Path) -> None:
    """Each CREATE was a transaction of its own (pysqlite begins none for DDL): about 90 commits,
    each synced to disk, some 0.1 to 0.5 s of every start on a new file. One write transaction
    (BEGIN IMMEDIATE, as `writing` takes) makes it all or nothing, and nodes starting together on
    one file take turns."""
    engine = make_engine(f"sqlite:///{tmp_path / 'new.sqlite'}")
    run: list[str] = []

    @event.listens_for(engine, "connect")
    def traced(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(lambda statement: run.append(statement.split(None, 2)[:2]))

    try:
        create_schema(engine)
    finally:
        engine.dispose()
    words = [" ".join(statement).upper() for statement in run]
    creates = [index for index, statement in enumerate(words) if statement.startswith("CREATE")]
    begins = [index for index, statement in enumerate(words) if statement.startswith("BEGIN")]
    commits = [index for index, statement in enumerate(words) if statement.startswith("COMMIT")]
    assert len(creates) > 50, words
    assert begins and words[begins[0]] == "BEGIN IMMEDIATE", words
    assert len(begins) == 1 and len(commits) == 1, (begins, commits)
    assert begins[0] < creates[0] and creates[-1] < commits[0]


def _sqlite_schema(path: Path) -> tuple[str, list[tuple[str, str, str, str | None]]]:
    with closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode, sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())


def test_a_world_starts_on_a_copy_of_a_new_schema_equal_to_one_create_schema_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness copies its process's schema template into a new World's data directory; the
    switch's create_schema then finds every table and index there and creates none."""
    fresh = tmp_path / "fresh.sqlite"
    engine = make_engine(f"sqlite:///{fresh}")
    create_schema(engine)
    engine.dispose()
    created: list[str] = []

    def observed(engine: Engine) -> tuple[str, ...]:
        with statements_run(engine, "CREATE") as seen:
            left_out = create_schema(engine)
        created.extend(seen)
        return left_out

    monkeypatch.setattr(switch.server, "create_schema", observed)
    world = start_world(tmp_path / "world", "", terminals=1)
    try:
        assert created == []
        assert world.terminals[0].balance(world.issue(500)) == 500
        assert _sqlite_schema(tmp_path / "world" / "txswitch.sqlite") == _sqlite_schema(fresh)
    finally:
        world.channel.close()
        world.server.stop()
    assert _sqlite_schema(schema_template()) == _sqlite_schema(fresh)


def test_create_schema_on_a_current_sqlite_schema_reads_it_in_a_few_statements(tmp_path: Path) -> None:
    """Every start on an existing file (and every test World, on its copied file) reflected each
    table and index one by one: about 200 statements. One missing index still takes the full path."""
    engine = make_engine(f"sqlite:///{tmp_path / 'current.sqlite'}")
    try:
        create_schema(engine)
        with statements_run(engine) as current:
            assert create_schema(engine) == ()
        assert len(current) <= 5, current
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_terminals_device_name"))
        with statements_run(engine) as repaired:
            create_schema(engine)
        assert any("CREATE INDEX ix_terminals_device_name" in statement for statement in repaired)
        assert "ix_terminals_device_name" in {
            found["name"] for found in inspect(engine).get_indexes("terminals")
        }
    finally:
        engine.dispose()
