"""The top-up sweep's, the web day close pass's and the payment recovery sweep's stops wait for their
thread within a limit: a thread stuck in the database (here a SQLite lock the test holds) is left,
logged, and the switch's stop goes on. Each joined without a limit, so one stuck call hung
`SwitchCore.stop` for as long as it lasted.
In-process, on a SQLite file in rollback-journal mode, so the lock held keeps the readers out too."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest
from sqlalchemy import Engine, create_engine

from switch import acquiring, top_ups, web_days
from switch.acquiring import PaymentNode
from switch.config import Settings
from switch.core import utc_now
from switch.store.schema import metadata
from switch.top_ups import OnlineTopUps, TopUpSweeper
from switch.web_days import WebDays
from tests.integration.test_recovery_counts import node

if TYPE_CHECKING:
    from switch.core import SwitchCore

STUCK_S = 60.0  # the busy wait of the stuck call: far past the stop's limit, ended by the test
STOP_LIMIT_S = 0.2


@pytest.fixture
def lockable(tmp_path: Path) -> Iterator[tuple[Engine, sqlite3.Connection]]:
    """An engine on a file with the switch's tables, and a connection of the test's to that file: its
    `BEGIN EXCLUSIVE` makes every statement of the engine wait (up to STUCK_S) until the test lets go."""
    path = tmp_path / "stuck.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": STUCK_S})
    metadata.create_all(engine)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        yield engine, holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


@pytest.fixture
def locked(lockable: tuple[Engine, sqlite3.Connection]) -> tuple[Engine, sqlite3.Connection]:
    """As `lockable`, the lock held already."""
    lockable[1].execute("BEGIN EXCLUSIVE")
    return lockable


def clock_telling(reached: threading.Event, calls_before: int = 0) -> Callable[[], dt.datetime]:
    """utc_now, setting `reached` once called more than `calls_before` times: the thread is at the
    statement that follows (both loops read the clock just before their query)."""
    calls = [0]

    def now() -> dt.datetime:
        calls[0] += 1
        if calls[0] > calls_before:
            reached.set()
        return utc_now()

    return now


def stopped_while_stuck(
    stop: Callable[[], None], thread: threading.Thread, holder: sqlite3.Connection
) -> bool:
    """Stop (its limit STOP_LIMIT_S) from another thread while the lock is held; whether the stop
    returned with the thread still stuck. Then let go of the lock, and the thread ends."""
    stop_returned = threading.Event()

    def stopping() -> None:
        stop()
        stop_returned.set()

    stopper = threading.Thread(target=stopping, daemon=True)
    stopper.start()
    # Unbounded before the fix: it returned only once the thread had ended, after STUCK_S.
    returned = stop_returned.wait(STUCK_S / 4)
    still_stuck = thread.is_alive()
    holder.execute("ROLLBACK")
    thread.join(STUCK_S)
    stopper.join(STUCK_S)
    assert not thread.is_alive(), "the thread did not end once the lock was let go"
    return returned and still_stuck


def test_the_top_up_sweep_stop_returns_within_its_limit_with_a_sweep_stuck(
    locked: tuple[Engine, sqlite3.Connection],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, holder = locked
    monkeypatch.setattr(top_ups, "STOP_TIMEOUT_S", STOP_LIMIT_S, raising=False)
    reached = threading.Event()
    core = cast("SwitchCore", SimpleNamespace(settings=Settings()))  # OnlineTopUps reads its limits only
    sweeper = TopUpSweeper(OnlineTopUps(engine, core, clock_telling(reached)), 3600.0)
    caplog.set_level(logging.ERROR, logger="switch.top_ups")
    sweeper.start()
    assert reached.wait(STUCK_S / 4), "the sweep never reached its first query"
    thread = cast(threading.Thread, sweeper._thread)
    assert stopped_while_stuck(sweeper.stop, thread, holder)
    assert [record.getMessage() for record in caplog.records if record.name == "switch.top_ups"] == [
        f"the top-up sweep did not stop within {STOP_LIMIT_S} s; left to its thread"
    ]


def test_the_web_day_close_stop_returns_within_its_limit_with_a_pass_stuck(
    locked: tuple[Engine, sqlite3.Connection],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, holder = locked
    monkeypatch.setattr(web_days, "STOP_TIMEOUT_S", STOP_LIMIT_S, raising=False)
    reached = threading.Event()

    def close_day(*_: Any) -> Any:
        raise AssertionError("no web terminal is due: the pass is stuck before any close")

    # The clock is read once for the first wait, then by the pass's query of the terminals due.
    passes = WebDays(engine, zoneinfo.ZoneInfo("UTC"), clock_telling(reached, 1), close_day, 0.001)
    caplog.set_level(logging.ERROR, logger="switch.web_days")
    passes.start()
    assert reached.wait(STUCK_S / 4), "the pass never reached its query"
    thread = cast(threading.Thread, passes._thread)
    assert stopped_while_stuck(passes.stop, thread, holder)
    assert [record.getMessage() for record in caplog.records if record.name == "switch.web_days"] == [
        f"the web day close pass did not stop within {STOP_LIMIT_S} s; left to its thread"
    ]


def test_the_payment_recovery_sweep_stop_returns_within_its_limit_with_a_sweep_stuck(
    lockable: tuple[Engine, sqlite3.Connection],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, holder = lockable
    monkeypatch.setattr(acquiring, "STOP_TIMEOUT_S", STOP_LIMIT_S, raising=False)
    monkeypatch.setattr(acquiring, "SWEEP_INTERVAL_MAX_S", 0.001)  # its first sweep at once
    payments = node(engine, "node-a")  # its tables made before the lock is taken
    assert payments.node == PaymentNode("node-a", True)
    reached = threading.Event()
    payments._now = clock_telling(reached)  # read by the sweep just before its query of the pending
    holder.execute("BEGIN EXCLUSIVE")
    # The sweeper as `Acquiring.start` makes it on a shared node, without the start's recovery (which
    # would be stuck itself) and the gateway's links (its stop then has none to close).
    thread = threading.Thread(target=payments._sweep, name="payment-recovery", daemon=True)
    payments._sweeper = thread
    caplog.set_level(logging.ERROR, logger="switch.acquiring")
    thread.start()
    assert reached.wait(STUCK_S / 4), "the sweep never reached its query"
    assert stopped_while_stuck(payments.stop, thread, holder)
    assert [record.getMessage() for record in caplog.records if record.name == "switch.acquiring"] == [
        f"the payment recovery sweep did not stop within {STOP_LIMIT_S} s; left to its thread"
    ]
