"""The inbound repeat tables are purged by the top-up sweep: repeat keys past INBOUND_REPEAT_WINDOW
and its margin, resends past inbound_resends_kept_days, in bounded batches. Before, neither table
was ever cleaned up: both grew with every inbound sale for ever.

The purge on the SQLite file and PostgreSQL; then a resend and a reversal over real TCP after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, event, insert, select, update

from switch.config import Settings
from switch.store.inbound_purge import InboundRepeatPurge
from switch.store.schema import (
    INBOUND_REPEAT_KEY_PURGE_MARGIN,
    INBOUND_REPEAT_WINDOW,
    inbound_repeat_keys,
    inbound_resends,
)
from tests.integration.harness import World
from tests.integration.test_inbound_iso import IsoClient, balance, inbound_world, ledger_clean, reversal_of
from tests.integration.test_inbound_repeats import RESENT_WHEN, sale
from tests.integration.test_receipts import wait_until
from tests.pg import postgres_schema

KEPT_DAYS = 40
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
KEYS_KEPT = INBOUND_REPEAT_WINDOW + INBOUND_REPEAT_KEY_PURGE_MARGIN
RESENDS_KEPT = dt.timedelta(days=KEPT_DAYS)
MINUTE = dt.timedelta(minutes=1)
KEYS, RESENDS = inbound_repeat_keys, inbound_resends


@pytest.fixture
def engine(schema_engine: Engine) -> Engine:
    return schema_engine


@pytest.fixture(params=["sqlite", "postgres"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        yield from inbound_world(tmp_path, url, inbound_resends_kept_days=KEPT_DAYS)


def purge_of(engine: Engine, rows_max: int = 1_000, batches_max: int = 100) -> InboundRepeatPurge:
    settings = Settings(
        inbound_resends_kept_days=KEPT_DAYS,
        inbound_repeat_rows_purged_max=rows_max,
        inbound_repeat_purge_batches_max=batches_max,
    )
    return InboundRepeatPurge(engine, settings, lambda: NOW)


def key_row(name: str, age: dt.timedelta, now: dt.datetime = NOW) -> dict[str, object]:
    return {
        "source": "iso:4711",
        "id_prefix": f"{name}:000001",
        "retrieval_reference": "000000500001",
        "transaction_id": f"{name}:000001:1207110000",
        "created_at": now - age,
    }


def resend_row(name: str, age: dt.timedelta) -> dict[str, object]:
    return {
        "source": "iso:4711",
        "transaction_id": f"{name}:000001:1207110005",
        "first_transaction_id": f"{name}:000001:1207110000",
        "created_at": NOW - age,
    }


def names_in(engine: Engine, table: Table) -> list[str]:
    with engine.connect() as conn:
        ids = conn.execute(select(table.c.transaction_id)).scalars()
        return sorted(transaction_id.partition(":")[0] for transaction_id in ids)


# (case, table, row, age, purged)
CASES = [
    ("key just stored", KEYS, key_row, MINUTE, False),
    ("key inside the window", KEYS, key_row, INBOUND_REPEAT_WINDOW - MINUTE, False),
    ("key past the window, inside the margin", KEYS, key_row, INBOUND_REPEAT_WINDOW + MINUTE, False),
    ("key past the window and the margin", KEYS, key_row, KEYS_KEPT + MINUTE, True),
    ("resend of a day ago", RESENDS, resend_row, INBOUND_REPEAT_WINDOW + MINUTE, False),
    ("resend inside the days kept", RESENDS, resend_row, RESENDS_KEPT - MINUTE, False),
    ("resend past the days kept", RESENDS, resend_row, RESENDS_KEPT + MINUTE, True),
]


def test_old_rows_are_purged_and_rows_inside_their_time_are_kept(engine: Engine) -> None:
    with engine.begin() as conn:
        for number, (_, table, row_of, age, _) in enumerate(CASES):
            conn.execute(insert(table), row_of(f"T{number:07d}", age))
    assert purge_of(engine).purge() == sum(purged for *_, purged in CASES)
    for number, (case, table, _, _, purged) in enumerate(CASES):
        assert (f"T{number:07d}" not in names_in(engine, table)) == purged, case


def test_a_purge_deletes_in_bounded_batches_and_leaves_the_rest_to_the_next(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(inbound_repeat_keys), [key_row(f"T{n:07d}", KEYS_KEPT + n * MINUTE) for n in range(1, 6)]
        )
        conn.execute(insert(inbound_repeat_keys), key_row("KEPT0001", MINUTE))
    transactions_begun: list[object] = []
    count = transactions_begun.append
    event.listen(engine, "begin", count)
    try:
        purged = purge_of(engine, rows_max=2, batches_max=2).purge()
    finally:
        event.remove(engine, "begin", count)
    assert purged == 4  # two transactions of two rows each (the resends' found none: one more)
    assert len(transactions_begun) == 3
    assert names_in(engine, inbound_repeat_keys) == ["KEPT0001", "T0000001"]  # the oldest went first
    assert purge_of(engine, rows_max=2, batches_max=2).purge() == 1
    assert names_in(engine, inbound_repeat_keys) == ["KEPT0001"]


def aged(world: World, table: Table, age: dt.timedelta) -> None:
    with world.server.core.store.engine.begin() as conn:
        conn.execute(update(table).values(created_at=dt.datetime.now(dt.UTC) - age))


def test_a_resend_inside_the_window_gets_the_first_answer_after_a_purge(any_world: World) -> None:
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    first = client.ask(first_sent)
    aged(world, inbound_repeat_keys, INBOUND_REPEAT_WINDOW - MINUTE)
    assert world.server.core.inbound_repeat_purge.purge() == 0
    again = client.ask({**first_sent, "7": RESENT_WHEN})
    client.close()
    assert first["39"] == "00"
    assert (again["39"], again["38"]) == (first["39"], first["38"])
    assert balance(world, card) == 700  # charged once
    ledger_clean(world)


def test_a_reversal_naming_a_kept_resend_finds_its_first_after_a_purge(any_world: World) -> None:
    """The purge took the sale's repeat key (past the window) and kept the resend's row: a reversal
    without field 37 naming the resend's field 7 still gives the sale back."""
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    resent = {**first_sent, "7": RESENT_WHEN}
    assert client.ask(first_sent)["39"] == client.ask(resent)["39"] == "00"
    aged(world, inbound_repeat_keys, KEYS_KEPT + MINUTE)
    aged(world, inbound_resends, RESENDS_KEPT - MINUTE)
    assert world.server.core.inbound_repeat_purge.purge() == 1  # the key
    assert client.ask(reversal_of(resent, kind="0400"))["39"] == "00"  # no field 37
    client.close()
    assert balance(world, card) == 1_000
    ledger_clean(world)


@pytest.fixture
def swept(tmp_path: Path) -> Iterator[World]:
    """A world whose top-up sweep runs every 0.2 s."""
    yield from inbound_world(tmp_path, top_up_sweep_interval_s=0.2)


def test_the_top_up_sweep_purges_the_inbound_repeat_tables(swept: World) -> None:
    engine = swept.server.core.store.engine
    with engine.begin() as conn:
        now = dt.datetime.now(dt.UTC)
        conn.execute(insert(KEYS), key_row("OLD00001", KEYS_KEPT + MINUTE, now))
        conn.execute(insert(KEYS), key_row("NEW00001", MINUTE, now))
    wait_until(lambda: names_in(engine, KEYS) == ["NEW00001"])
