"""Online top-ups are counted on /metrics by programme: started, loaded, refund_due; those waiting
(confirming, refund_due) are gauged with the age of the oldest; never the card."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from switch.store.schema import terminals, top_ups
from tests.integration.harness import World, start_world
from tests.integration.test_receipts import wait_until
from tests.integration.test_top_up_sweep import left_confirming
from tests.integration.test_top_ups import confirm, start
from tests.ops.test_replacement_follows import counted, scraped

TOP_UPS = "txswitch_top_ups_total"
WAITING = "txswitch_top_ups_waiting"
OLDEST_WAITING = "txswitch_top_up_oldest_waiting_seconds"
WAIT_S = 10.0
SWEEP_INTERVAL_S = 0.2


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(
        tmp_path, "", 1, metrics_port=0, psp_token="test-psp-token", top_up_sweep_interval_s=SWEEP_INTERVAL_S
    )
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


def test_top_ups_are_counted_by_programme_and_how_they_ended(world: World) -> None:
    url = world.server.ops.metrics_url
    assert url is not None
    cards = [world.issue(0, world.benefit_programme) for _ in range(3)]
    started = [start(world, card, 500, f"m-{index}") for index, card in enumerate(cards)]
    assert start(world, cards[0], 500, "m-0").top_up_id == started[0].top_up_id  # again: not counted
    assert confirm(world, started[0].top_up_id, "p-m-1", 180).status == "loaded"
    assert confirm(world, started[0].top_up_id, "p-m-1", 180).status == "loaded"  # again: counted once
    assert confirm(world, started[1].top_up_id, "p-m-2", 100).status == "refund_due"
    programme = world.benefit_programme
    expected = {
        (("event", "started"), ("programme", programme)): 3.0,
        (("event", "loaded"), ("programme", programme)): 1.0,
        (("event", "refund_due"), ("programme", programme)): 1.0,
    }
    deadline_s = time.monotonic() + WAIT_S
    text = scraped(url)
    while counted(text, TOP_UPS) != expected and time.monotonic() < deadline_s:
        time.sleep(0.05)
        text = scraped(url)
    assert counted(text, TOP_UPS) == expected
    assert not any(card in text for card in cards)


def waiting(text: str) -> tuple[dict[tuple[tuple[str, str], ...], float], dict[str, float]]:
    ages_s = {labels[0][1]: age_s for labels, age_s in counted(text, OLDEST_WAITING).items()}
    return counted(text, WAITING), ages_s


def sweep_attempts(world: World, top_up_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        tries = conn.execute(select(top_ups.c.sweep_attempts).where(top_ups.c.top_up_id == top_up_id))
        return int(tries.scalar_one())


def test_top_ups_waiting_are_gauged_with_the_oldest_ones_age(world: World) -> None:
    """Session 28: a top-up whose load is never known was tried by the sweep for ever, each try a
    warning in the log, and a refund_due one waited for the operator: no metric showed either. The
    sweep counts them now (txswitch_top_ups_waiting), and how long the oldest of each has waited."""
    url = world.server.ops.metrics_url
    assert url is not None
    core = world.server.core
    cards = [world.issue(0, world.benefit_programme) for _ in range(4)]
    owed, stuck, loaded, pending = (start(world, card, 500) for card in cards)
    assert confirm(world, owed.top_up_id, "p-owed", 100).status == "refund_due"
    assert confirm(world, loaded.top_up_id, "p-loaded", 180).status == "loaded"
    # The programme's top-up terminal off: its loads are refused unmade, never known (as in
    # test_top_ups_that_never_load_leave_the_sweep_to_newer_ones).
    taxi = core.online_top_up_terminal(world.benefit_programme)
    with core.store.engine.begin() as conn:
        conn.execute(update(terminals).where(terminals.c.terminal_id == taxi).values(active=False))
    core.terminal_actors.stop(taxi)
    left_confirming(world, stuck.top_up_id, 180, 45)
    wait_until(lambda: sweep_attempts(world, stuck.top_up_id) >= 1)  # tried, put off, confirming still
    expected = {(("state", "confirming"),): 1.0, (("state", "refund_due"),): 1.0}
    deadline_s = time.monotonic() + WAIT_S
    text = scraped(url)
    while waiting(text)[0] != expected and time.monotonic() < deadline_s:
        time.sleep(0.05)
        text = scraped(url)
    counts, ages_s = waiting(text)
    assert counts == expected
    assert 45 * 60 <= ages_s["confirming"] < 45 * 60 + WAIT_S + 5, ages_s
    assert 0 < ages_s.get("refund_due", 0) < WAIT_S + 5, ages_s
    # Refunded, the holder is owed nothing: the next sweep's count drops it, and its age is 0.
    core.top_ups.mark_refunded(owed.top_up_id, "rf-1")
    deadline_s = time.monotonic() + WAIT_S
    while (WAITING + '{state="refund_due"} 0.0') not in text and time.monotonic() < deadline_s:
        time.sleep(0.05)
        text = scraped(url)
    assert waiting(text)[0] == {(("state", "confirming"),): 1.0}
    assert OLDEST_WAITING + '{state="refund_due"} 0.0' in text
    assert not any(card in text for card in cards) and pending.top_up_id not in text
