"""A terminal deactivated with approved money in its open period: the period is closed then, a
stored close as any other, so its takings are in a close while it stays deactivated (before, in
none until it was activated again and closed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, on_statement, world_fixture


@pytest.fixture(params=["postgres", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def _deactivate(world: World, terminal_id: str) -> None:
    request = bo.TerminalRequest(terminal_id=terminal_id)
    world.backoffice.DeactivateTerminal(request, metadata=world.admin_metadata, timeout=30)


def _closes(world: World, terminal_id: str) -> list[tuple[int, int, int]]:
    """(sequence, period, redeemed) of each stored close."""
    request = bo.DayCloseListRequest(terminal_id=terminal_id)
    listed = world.backoffice.ListDayCloses(request, metadata=world.admin_metadata, timeout=20)
    return [
        (r.sequence_number, r.period_number, sum(t.total.amount_minor for t in r.totals))
        for r in listed.reports
    ]


def test_deactivation_closes_the_open_period_once(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100).response_code == "00"
    _deactivate(world, terminal.terminal_id)
    assert _closes(world, terminal.terminal_id) == [(1, 1, 100)]
    _deactivate(world, terminal.terminal_id)  # sent again: nothing more approved, no second close
    assert _closes(world, terminal.terminal_id) == [(1, 1, 100)]
    # Activated again, it takes up period 2, and its own close counts only what came since.
    again = world.activate("A77-0")
    assert again.terminal_id == terminal.terminal_id
    assert again.redeem(card, 200).period_number == 2
    closed = again.stub.DayClose(pb.DayCloseRequest(close_id="c1", period_number=2), metadata=again.metadata)
    assert (closed.sequence_number, closed.period_number) == (2, 2)
    assert _closes(world, terminal.terminal_id) == [(1, 1, 100), (2, 2, 200)]


def test_deactivation_with_nothing_approved_makes_no_close(world: World) -> None:
    terminal = world.terminals[0]
    _deactivate(world, terminal.terminal_id)
    assert _closes(world, terminal.terminal_id) == []
    assert world.server.core.store.terminal(terminal.terminal_id).period_number == 1  # type: ignore[union-attr]


@pytest.fixture(params=["postgres", "sqlite"])
def journal_in_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The journal on the switch's own thread, so a test can hold a write on its engine."""
    yield from world_fixture(request, tmp_path, terminals=1, journal_process=False)


def test_a_sale_in_flight_at_the_deactivation_is_in_its_close(journal_in_process: World) -> None:
    # Review of session 27: the deactivation read its period's totals before the terminal's actor
    # had landed what it had in flight, so a sale answered just then landed in a period no close
    # covered (and none was made). The actor judges it now, once its sale has landed.
    world = journal_in_process
    terminal = world.terminals[0]
    card = world.issue(5_000)
    held, release = threading.Event(), threading.Event()

    def hold_the_sale(_cursor: object, statement: str, _parameters: object) -> None:
        if statement.startswith("INSERT INTO transactions") and not held.is_set():
            held.set()
            release.wait(10)

    answers: list[str] = []
    with on_statement(world.server.core.store.engine, "before", hold_the_sale):
        sale = threading.Thread(target=lambda: answers.append(terminal.redeem(card, 100).response_code))
        sale.start()
        assert held.wait(10)
        deactivation = threading.Thread(target=_deactivate, args=(world, terminal.terminal_id))
        deactivation.start()
        deactivation.join(0.5)  # before: done already, having found nothing approved
        release.set()
        sale.join(20)
        deactivation.join(20)
    assert answers == ["00"]
    assert _closes(world, terminal.terminal_id) == [(1, 1, 100)]
