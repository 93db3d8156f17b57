"""A day close whose wait timed out (the terminal is told UNAVAILABLE, "send the same close_id
again") and whose write then landed has closed the period. The terminal actor's copy of its period
is not read again, so until the close is resent it acts as if the closed period were still open.

README: Cancel (employee PIN) of a transaction of a closed day is refused; the card actor says "the
original's period is closed; refund instead" (actors/card_actor.py _undo). docs/audits.md fixed
the same for a close taken on another node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from switch.store.repository import DayCloseReport
from tests.integration.harness import World, sqlite_write_lock_held, world_fixture


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


def closes_landed(world: World, terminal_id: str) -> list[DayCloseReport]:
    deadline = time.monotonic() + 10
    while not (stored := world.server.core.store.day_closes(terminal_id)):
        assert time.monotonic() < deadline, "the timed-out close never landed"
        time.sleep(0.05)
    return stored


def test_a_redemption_of_a_period_closed_by_a_timed_out_close_cannot_be_cancelled(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100, "sale-1").response_code == "00"
    # Held until the close has timed out (after the 1 s reply timeout), then let go: the close lands.
    with sqlite_write_lock_held(world), pytest.raises(grpc.RpcError) as timed_out:
        terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata, timeout=30)
    assert timed_out.value.code() is grpc.StatusCode.UNAVAILABLE
    (stored,) = closes_landed(world, terminal.terminal_id)  # period 1 is closed, with sale-1 in it
    assert stored.period_number == 1 and stored.totals[0].total_minor == 100

    cancel = terminal.cancel("sale-1")
    assert (cancel.response_code, cancel.message) == (
        "12",
        "Invalid transaction: the original's period is closed; refund instead",
    )
    assert terminal.balance(card) == 4_900


def test_a_redemption_after_a_timed_out_close_landed_is_told_the_period_it_is_counted_in(
    world: World,
) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100).period_number == 1
    with sqlite_write_lock_held(world), pytest.raises(grpc.RpcError):
        terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata, timeout=30)
    closes_landed(world, terminal.terminal_id)
    late = terminal.redeem(card, 200, "late")
    stored = world.server.core.store.transaction(terminal.terminal_id, "late")
    assert stored is not None and stored.record.period_number == 2  # counted in the next close
    assert late.period_number == 2  # what the terminal is told should be the same period
