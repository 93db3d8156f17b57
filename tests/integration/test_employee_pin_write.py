"""A refund or cancel whose employee PIN try cannot be made durable is declined 96, not failed.

Another connection holds the lock the try's write needs (SQLite: the database; PostgreSQL: the
employee's row), so the journal cannot commit the try within the switch's reply time-out.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.integration.harness import EMPLOYEE, World, new_txn, world_fixture

REPLY_TIMEOUT_S = 1.0


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=REPLY_TIMEOUT_S)


@contextmanager
def employee_locked(world: World) -> Iterator[None]:
    url = world.server.settings.effective_database_url
    if url.startswith("sqlite"):
        database = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0)
        database.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            database.rollback()
            database.close()
        return
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("SELECT employee_id FROM employees WHERE employee_number = :number FOR UPDATE"),
                {"number": EMPLOYEE.employee_number},
            )
            yield
    finally:
        engine.dispose()


def test_a_wrong_pin_whose_try_cannot_be_stored_is_declined_96_and_changes_nothing(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    redemption, cancel = new_txn(), new_txn()
    assert terminal.redeem(card, 300, redemption).response_code == "00"
    with employee_locked(world):
        started = time.monotonic()
        answer = terminal.cancel(redemption, pin="0000", txn=cancel)
        waited_s = time.monotonic() - started
    assert answer.response_code == "96"
    assert "employee PIN try not stored" in answer.message and "send it again" in answer.message
    assert waited_s < REPLY_TIMEOUT_S * 5  # answered once the write timed out, not at the RPC deadline
    assert terminal.balance(card) == 700  # the redemption stands
    # Nothing was remembered for the id: sent again with the right PIN, it is judged afresh.
    assert terminal.cancel(redemption, txn=cancel).response_code == "00"
    assert terminal.balance(card) == 1_000
    assert world.ledger().balance_mismatches == 0 and world.ledger().unbalanced_entries == 0
