"""A top-up left confirming is finished by the switch's own sweep, once: the PSP that gave up after
an UNAVAILABLE (its load's outcome not known in time) or a switch stopped mid-load left it there,
and before session 24 it waited for the operator to confirm it again by hand.

Real gRPC on loopback, the SQLite file and PostgreSQL; the sweep on its own thread, as served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from switch.store.schema import top_ups, transactions
from tests.integration.harness import World, world_fixture
from tests.integration.test_receipts import wait_until
from tests.integration.test_top_ups import balance, confirm, start

SWEEP_INTERVAL_S = 0.2
GRACE_S = 600.0


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request,
        tmp_path,
        terminals=1,
        top_up_sweep_interval_s=SWEEP_INTERVAL_S,
        top_up_confirming_grace_s=GRACE_S,
    )


def left_confirming(world: World, top_up_id: str, paid_minor: int, minutes_ago: float) -> None:
    """As a confirmation that took the top-up and never finished leaves it."""
    confirmed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(top_ups)
            .where(top_ups.c.top_up_id == top_up_id)
            .values(
                status="confirming",
                psp_reference=f"p-{top_up_id}",
                amount_paid_minor=paid_minor,
                amount_paid_currency="EUR",
                confirmed_at=confirmed_at,
                reason="",
            )
        )


def statuses(world: World) -> dict[str, str]:
    with world.server.core.store.engine.connect() as conn:
        return dict(conn.execute(select(top_ups.c.top_up_id, top_ups.c.status)).all())


def loads_of(world: World, top_up_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        found = select(transactions.c.transaction_id).where(transactions.c.transaction_id == top_up_id)
        return len(conn.execute(found).all())


def test_a_top_up_left_confirming_is_finished_by_the_sweep_and_loads_once(world: World) -> None:
    not_loaded, loaded, wrong, young = (world.issue(0, world.benefit_programme) for _ in range(4))
    unloaded = start(world, not_loaded, 1_000)  # the switch stopped before its load
    made = start(world, loaded, 500)  # loaded, but the answer never stored as loaded
    assert confirm(world, made.top_up_id, f"p-{made.top_up_id}", 180).status == "loaded"
    short = start(world, wrong, 500)  # the PSP told 1.00 of 1.80: refund_due
    recent = start(world, young, 500)  # a live confirmation's load may still be under way
    left_confirming(world, unloaded.top_up_id, 360, 30)
    left_confirming(world, made.top_up_id, 180, 30)
    left_confirming(world, short.top_up_id, 100, 30)
    left_confirming(world, recent.top_up_id, 180, 1)
    expected = {
        unloaded.top_up_id: "loaded",
        made.top_up_id: "loaded",
        short.top_up_id: "refund_due",
        recent.top_up_id: "confirming",
    }
    wait_until(lambda: statuses(world) == expected)
    # Swept again, and by hand at once: nothing more moves.
    assert world.server.core.top_ups.finish_confirming() == 0
    assert [balance(world, card) for card in (not_loaded, loaded, wrong, young)] == [1_000, 500, 0, 0]
    assert (loads_of(world, unloaded.top_up_id), loads_of(world, made.top_up_id)) == (1, 1)
    assert statuses(world)[recent.top_up_id] == "confirming"
    # The PSP's own confirmation sent again later gets the sweep's answer.
    assert confirm(world, unloaded.top_up_id, f"p-{unloaded.top_up_id}", 360).status == "loaded"
    assert balance(world, not_loaded) == 1_000
    assert world.ledger().unbalanced_entries == 0
