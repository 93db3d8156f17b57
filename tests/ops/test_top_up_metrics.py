"""Online top-ups are counted on /metrics by programme: started, loaded, refund_due; never the card."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import World, start_world
from tests.integration.test_top_ups import confirm, start
from tests.ops.test_replacement_follows import counted, scraped

TOP_UPS = "txswitch_top_ups_total"
WAIT_S = 10.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path, "", 1, metrics_port=0, psp_token="test-psp-token")
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
