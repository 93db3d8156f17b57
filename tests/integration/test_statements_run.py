"""The statements_run helper (tests/integration/harness.py) records statements on a running switch's
engine. Audit session 25: it added and removed a listener on the engine while the switch's threads
ran statements; SQLAlchemy keeps an engine's listeners in a deque each statement iterates, so a
statement in flight then failed ("deque mutated during iteration", as `make profile` did)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from switch.store.engine import make_engine
from tests.integration.harness import statements_run

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
        with engine.connect() as conn:
            results.append(conn.execute(text("SELECT 1")).scalar())
    except Exception as error:  # what the test looks at
        results.append(error)


@pytest.mark.parametrize("window_while_in_flight", ["opened", "closed"])
def test_a_window_opened_or_closed_while_a_statement_is_in_flight_fails_nothing(
    engine: Engine, window_while_in_flight: str
) -> None:
    inside, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:  # a switch thread paused among the engine's listeners
        if threading.current_thread().name == IN_FLIGHT:
            inside.set()
            release.wait(WAIT_S)

    event.listen(engine, "before_cursor_execute", hold)  # before any thread runs a statement
    results: list[object] = []
    statement = threading.Thread(target=run_one, args=(engine, results), name=IN_FLIGHT)
    try:
        if window_while_in_flight == "opened":
            statement.start()
            assert inside.wait(WAIT_S)
            with statements_run(engine):
                release.set()
                statement.join(WAIT_S)
        else:
            with statements_run(engine):
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
