"""Finished top-ups are purged once older than top_ups_kept_days, a bounded number a sweep, by the
top-up sweep: loaded ones, refunded ones and pending ones that expired. A confirming top-up (its
load may still move money) and a refund_due one (the holder not paid back yet) are never purged.
Before session 24's audit nothing was ever purged: the table grew for ever.

Real gRPC on loopback, the SQLite file and PostgreSQL; the sweep on its own thread, as served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from switch.store.schema import top_ups
from tests.integration.harness import World, world_fixture
from tests.integration.test_receipts import wait_until
from tests.integration.test_top_up_sweep import statuses
from tests.integration.test_top_ups import confirm, start

KEPT_DAYS = 400
PURGED_MAX = 2


@pytest.fixture(params=["sqlite", "postgres"])
def idle_sweeps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The sweep runs at start only; the test purges by hand."""
    yield from world_fixture(
        request,
        tmp_path,
        terminals=1,
        top_up_sweep_interval_s=3600.0,
        top_ups_kept_days=KEPT_DAYS,
        top_ups_purged_max=PURGED_MAX,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, top_up_sweep_interval_s=0.2)


def days_ago(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


def aged(world: World, top_up_id: str, status: str, started_days: float, finished_days: float | None) -> None:
    """The top-up as the database holds it that many days after it started (and finished)."""
    started = days_ago(started_days)
    values: dict[str, object] = {
        "status": status,
        "created_at": started,
        "expires_at": started + dt.timedelta(minutes=30),
    }
    if status != "pending":
        values["confirmed_at"] = started + dt.timedelta(minutes=5)
    if finished_days is not None:
        values["finished_at"] = days_ago(finished_days)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(update(top_ups).where(top_ups.c.top_up_id == top_up_id).values(**values))


# (name, status, started days ago, finished days ago (None: as a row from before finished_at), purged)
CASES = [
    ("loaded long ago", "loaded", KEPT_DAYS + 1, KEPT_DAYS + 1, True),
    ("loaded, a row from before finished_at", "loaded", KEPT_DAYS + 1, None, True),
    ("loaded within the days kept", "loaded", KEPT_DAYS - 1, KEPT_DAYS - 1, False),
    ("started long ago, loaded lately", "loaded", KEPT_DAYS + 100, 10, False),
    ("refunded long ago", "refunded", KEPT_DAYS + 1, KEPT_DAYS + 1, True),
    ("refunded lately", "refunded", KEPT_DAYS + 100, 1, False),
    ("expired long ago", "pending", KEPT_DAYS + 1, None, True),
    ("expired within the days kept", "pending", KEPT_DAYS - 1, None, False),
    ("refund_due for ever: the holder is owed", "refund_due", KEPT_DAYS + 100, KEPT_DAYS + 100, False),
    ("confirming for ever: its load may move money", "confirming", KEPT_DAYS + 100, None, False),
]


def test_finished_top_ups_older_than_the_days_kept_are_purged_a_bounded_number_at_a_time(
    idle_sweeps: World,
) -> None:
    world = idle_sweeps
    ids = {}
    for name, status, started_days, finished_days, _ in CASES:
        top_up = start(world, world.issue(0, world.benefit_programme), 500)
        aged(world, top_up.top_up_id, status, started_days, finished_days)
        ids[name] = top_up.top_up_id
    purge = world.server.core.top_ups.purge_finished
    purgeable = sum(1 for *_, purged in CASES if purged)
    counts = [purge() for _ in range(purgeable // PURGED_MAX + 2)]
    assert counts == [PURGED_MAX] * (purgeable // PURGED_MAX) + [purgeable % PURGED_MAX, 0], counts
    kept = {name for name, *_, purged in CASES if not purged}
    left = statuses(world)
    assert {name for name, top_up_id in ids.items() if top_up_id in left} == kept


def test_the_sweep_purges_and_a_top_up_finished_today_is_kept(world: World) -> None:
    old, new = (start(world, world.issue(0, world.benefit_programme), 500) for _ in range(2))
    assert confirm(world, new.top_up_id, f"p-{new.top_up_id}", 180).status == "loaded"
    aged(world, old.top_up_id, "loaded", 401, 401)
    aged(world, new.top_up_id, "loaded", 401, None)  # created_at only: its finished_at is today's
    wait_until(lambda: old.top_up_id not in statuses(world))
    assert statuses(world)[new.top_up_id] == "loaded"
