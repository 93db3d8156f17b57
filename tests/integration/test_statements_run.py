"""The statements_run and on_statement helpers (tests/integration/harness.py) record statements on,
or hold a thread of, a running switch's engine. Audit session 25: statements_run added and removed a
listener on the engine while the switch's threads ran statements; SQLAlchemy keeps an engine's
listeners in a deque each statement iterates, so a statement in flight then failed ("deque mutated
during iteration", as `make profile` did). Five tests did the same with listeners of their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, event, text

from switch.store.engine import make_engine
from tests.integration.harness import StatementCall, on_statement, on_transaction, statements_run

WAIT_S = 10.0
IN_FLIGHT = "statement-in-flight"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'statements.sqlite'}")
    try:
        yield engine
    finally:
        engine.dispose()


def run_one(engine: Engine, results: list[object]) -> None:
    try:
        with engine.begin() as conn:  # a transaction begun and committed, a statement between
            results.append(conn.execute(text("SELECT 1")).scalar())
    except Exception as error:  # what the test looks at
        results.append(error)


# The engine event each helper's hook is on: a thread held among its listeners is in flight there.
HELD_IN = {
    "statements_run": "before_cursor_execute",
    "on_statement before": "before_cursor_execute",
    "on_statement after": "after_cursor_execute",
    "on_transaction begin": "begin",
    "on_transaction commit": "commit",
}


def window(engine: Engine, helper: str) -> AbstractContextManager[object]:
    """A recording window, a statement hook (before or after) or a transaction hook (begin or
    commit) on engine, doing nothing."""
    if helper == "statements_run":
        return statements_run(engine)
    if helper.startswith("on_transaction"):
        when: Literal["begin", "commit"] = "begin" if helper == "on_transaction begin" else "commit"
        return on_transaction(engine, when, lambda: None)
    moment: Literal["before", "after"] = "before" if helper == "on_statement before" else "after"
    return on_statement(engine, moment, lambda _cursor, _statement, _parameters: None)


# Each helper, opened or closed while another thread's statement is among the engine's listeners.
# Before, five tests added and removed their own listener instead of on_statement, and three more
# (two on begin or commit) instead of on_transaction.
IN_FLIGHT_CASES = [
    (helper, opened_or_closed) for helper in HELD_IN for opened_or_closed in ("opened", "closed")
]


@pytest.mark.parametrize(("helper", "window_while_in_flight"), IN_FLIGHT_CASES)
def test_a_window_opened_or_closed_while_a_statement_is_in_flight_fails_nothing(
    engine: Engine, helper: str, window_while_in_flight: str
) -> None:
    inside, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:  # a switch thread paused among the engine's listeners
        if threading.current_thread().name == IN_FLIGHT:
            inside.set()
            release.wait(WAIT_S)

    # Held among the listeners of the event the helper's hook is on, before any thread runs a statement.
    event.listen(engine, HELD_IN[helper], hold)
    results: list[object] = []
    statement = threading.Thread(target=run_one, args=(engine, results), name=IN_FLIGHT)
    try:
        if window_while_in_flight == "opened":
            statement.start()
            assert inside.wait(WAIT_S)
            with window(engine, helper):
                release.set()
                statement.join(WAIT_S)
        else:
            with window(engine, helper):
                statement.start()
                assert inside.wait(WAIT_S)
            release.set()
            statement.join(WAIT_S)
    finally:
        release.set()
    assert results == [1]


def test_a_window_records_its_own_engines_statements_containing_its_text_while_open(
    engine: Engine, tmp_path: Path
) -> None:
    other = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        with engine.connect() as conn, other.connect() as other_conn:
            conn.execute(text("SELECT 'before'"))
            with statements_run(engine, containing="'wanted") as seen, statements_run(other) as other_seen:
                for statement in ("SELECT 'wanted 1'", "SELECT 'unwanted'", "SELECT 'wanted 2'"):
                    conn.execute(text(statement))
                other_conn.execute(text("SELECT 'wanted on the other engine'"))
            conn.execute(text("SELECT 'wanted after'"))
    finally:
        other.dispose()
    assert seen == ["SELECT 'wanted 1'", "SELECT 'wanted 2'"]
    assert other_seen == ["SELECT 'wanted on the other engine'"]


def test_a_hook_is_called_before_or_after_its_own_engines_statements_while_open(
    engine: Engine, tmp_path: Path
) -> None:
    calls: list[tuple[str, str, object]] = []
    other = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")

    def seen_at(moment: str) -> StatementCall:
        def call(cursor: Any, statement: str, parameters: Any) -> None:
            # after: the statement has run, so its cursor holds its row
            ran = cursor.fetchone() if moment == "after" else None
            calls.append((moment, statement, ran if ran is None else tuple(ran)))

        return call

    try:
        with engine.connect() as conn, other.connect() as other_conn:
            conn.execute(text("SELECT 'before'"))
            with (
                on_statement(engine, "before", seen_at("before")),
                on_statement(engine, "after", seen_at("after")),
            ):
                conn.execute(text("SELECT 'wanted'"))
                other_conn.execute(text("SELECT 'on the other engine'"))
            conn.execute(text("SELECT 'after'"))
    finally:
        other.dispose()
    assert calls == [("before", "SELECT 'wanted'", None), ("after", "SELECT 'wanted'", ("wanted",))]


def test_a_transaction_hook_is_called_as_its_own_engines_transactions_begin_or_commit_while_open(
    engine: Engine, tmp_path: Path
) -> None:
    calls: list[str] = []
    other = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 'before'"))
        with (
            on_transaction(engine, "begin", lambda: calls.append("begin")),
            on_transaction(engine, "commit", lambda: calls.append("commit")),
        ):
            with engine.begin() as conn:
                conn.execute(text("SELECT 'committed'"))
            with engine.connect() as conn:  # begun, rolled back: no commit
                conn.execute(text("SELECT 'rolled back'"))
            with other.begin() as other_conn:
                other_conn.execute(text("SELECT 'on the other engine'"))
        with engine.begin() as conn:
            conn.execute(text("SELECT 'after'"))
    finally:
        other.dispose()
    assert calls == ["begin", "commit", "begin"]
