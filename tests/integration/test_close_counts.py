"""Day closes whose waits time out, and terminal actors restarted with writes on their way: every
approved transaction is counted in exactly one close, because a row belongs to the period open
when it commits and a close counts its period as it commits (switch.store.periods). Before, the
period came from the terminal actor's copy, and such rows were counted in no close."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, hold_sqlite_write_lock, sqlite_write_lock_held, world_fixture

STALL_S = 3.0


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


def _close(world: World, close_id: str) -> pb.DayCloseReport:
    terminal = world.terminals[0]
    return terminal.stub.DayClose(
        pb.DayCloseRequest(close_id=close_id), metadata=terminal.metadata, timeout=30
    )


def _redeemed(report: pb.DayCloseReport) -> int:
    return sum(t.total.amount_minor for t in report.totals if t.transaction_type == "redemption")


def test_a_redemption_after_a_timed_out_close_is_counted_in_a_later_close(world: World) -> None:
    """The close's write waits longer than the reply timeout (the terminal gets UNAVAILABLE, "send
    the same close_id again"), then lands. A redemption sent before the terminal resends the close
    must belong to the next period, so that the next close counts it."""
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100).response_code == "00"
    # Held until the close has timed out (after the 1 s reply timeout), then let go: the close lands.
    with sqlite_write_lock_held(world), pytest.raises(grpc.RpcError) as timed_out:
        _close(world, "c1")
    assert timed_out.value.code() is grpc.StatusCode.UNAVAILABLE
    time.sleep(0.5)  # the close's write lands now: period 1 is closed
    late = terminal.redeem(card, 200)
    assert late.response_code == "00"
    first = _close(world, "c1")  # the resend, as the terminal was told
    assert (first.sequence_number, first.period_number, _redeemed(first)) == (1, 1, 100)
    second = _close(world, "c2")
    counted = _redeemed(first) + _redeemed(second)
    assert counted == 300, (
        f"redemption in period {late.period_number} after period 1 was closed: "
        f"closes count {counted} of 300 redeemed"
    )


@pytest.fixture(params=["sqlite"])
def small_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    # At most one terminal actor alive: the least recently used terminal's actor is stopped when
    # another terminal's actor starts (the fleet is larger than terminal_actors_live_max).
    yield from world_fixture(request, tmp_path, terminal_actors_live_max=1)


def test_a_redemption_waiting_for_its_commit_when_its_terminal_actor_was_evicted_is_in_the_close(
    small_world: World,
) -> None:
    world = small_world
    shop, other = world.terminals
    card = world.issue(5_000)
    assert shop.redeem(card, 100).response_code == "00"
    holder = hold_sqlite_write_lock(world, STALL_S)
    answers: list[str] = []
    sender = threading.Thread(target=lambda: answers.append(shop.redeem(card, 250).response_code))
    sender.start()
    time.sleep(0.3)  # decided, waiting for its commit
    other.stub.XReport(pb.XReportRequest(), metadata=other.metadata, timeout=30)  # evicts shop's actor
    report = _close(world, "c1")
    sender.join()
    holder.join()
    assert answers == ["00"]
    second = _close(world, "c2")
    counted = _redeemed(report) + _redeemed(second)
    assert counted == 350, f"closes count {counted} of 350 redeemed (close 1: {_redeemed(report)})"


def test_an_x_report_while_a_redemption_waits_for_its_commit_is_unavailable_not_internal(
    world: World,
) -> None:
    """The X report waits for the terminal's transactions in flight; when that wait times out the
    terminal should hear UNAVAILABLE (ask again), as DayClose says, not an INTERNAL fault."""
    terminal = world.terminals[0]
    card = world.issue(5_000)
    sender = threading.Thread(target=lambda: _swallow(lambda: terminal.redeem(card, 100)))
    # Held until the X report and the redemption have been answered (after the 1 s reply timeout).
    with sqlite_write_lock_held(world):
        sender.start()
        time.sleep(0.3)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                terminal.stub.XReport(pb.XReportRequest(), metadata=terminal.metadata, timeout=30)
        finally:
            sender.join()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, (
        refused.value.code(),
        refused.value.details(),
    )


def _swallow(call: object) -> None:
    with contextlib.suppress(grpc.RpcError):
        call()  # type: ignore[operator]
