"""A terminal's DayClose naming its period: a close pressed twice (two close ids at once, on one
node or on two) closes that period once; the other is refused naming the period, where before it
closed the next period empty and the terminal printed an empty second report."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import TerminalClient, World, second_node, world_fixture


@pytest.fixture(params=["postgres", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@pytest.fixture(params=["postgres", "sqlite"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, TerminalClient]]:
    shared = "auto" if request.param == "postgres" else "yes"
    for world in world_fixture(
        request, tmp_path, terminals=1, several_nodes=shared, shared_copy_max_age_s=0.0
    ):
        with second_node(world, tmp_path / "node-b") as b:
            yield world, b.terminal


def _close(terminal: TerminalClient, close_id: str, period_number: int = 0) -> pb.DayCloseReport:
    request = pb.DayCloseRequest(close_id=close_id, period_number=period_number)
    return terminal.stub.DayClose(request, metadata=terminal.metadata, timeout=30)


def _refusal(terminal: TerminalClient, close_id: str, period_number: int) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        _close(terminal, close_id, period_number)
    return refused.value.code(), refused.value.details() or ""


def _redeemed(report: pb.DayCloseReport) -> int:
    return sum(t.total.amount_minor for t in report.totals if t.transaction_type == "redemption")


def _pressed_twice(first: TerminalClient, second: TerminalClient) -> list[pb.DayCloseReport | grpc.RpcError]:
    """Two closes of period 1 with two close ids at once; each one's report or refusal."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(_close, terminal, f"press-{n}", 1) for n, terminal in enumerate((first, second))]
        answers: list[pb.DayCloseReport | grpc.RpcError] = []
        for call in calls:
            try:
                answers.append(call.result())
            except grpc.RpcError as error:
                answers.append(error)
    return answers


def _one_close_of_period_one(answers: list[pb.DayCloseReport | grpc.RpcError]) -> None:
    reports = [a for a in answers if isinstance(a, pb.DayCloseReport)]
    refusals = [a for a in answers if isinstance(a, grpc.RpcError)]
    assert [(r.period_number, _redeemed(r)) for r in reports] == [(1, 100)], (
        f"a close pressed twice made closes {[(r.period_number, _redeemed(r)) for r in reports]}"
    )
    (refused,) = refusals
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = refused.details() or ""
    assert "period 1 " in details and "closed already" in details, details


def test_a_close_pressed_twice_with_two_close_ids_closes_its_period_once(world: World) -> None:
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(5_000), 100).response_code == "00"
    _one_close_of_period_one(_pressed_twice(terminal, terminal))
    assert [c.period_number for c in world.server.core.store.day_closes(terminal.terminal_id)] == [1]


def test_a_close_pressed_twice_on_two_nodes_closes_its_period_once(
    nodes: tuple[World, TerminalClient],
) -> None:
    world, on_b = nodes
    on_a = world.terminals[0]
    assert on_a.redeem(world.issue(5_000), 100).response_code == "00"
    _one_close_of_period_one(_pressed_twice(on_a, on_b))
    assert [c.period_number for c in world.server.core.store.day_closes(on_a.terminal_id)] == [1]


@dataclass(frozen=True)
class Case:
    name: str
    close_id: str
    period_number: int
    code: grpc.StatusCode | None  # None: answered with the close of period 1
    words: str = ""


# After close "c1" of period 1; period 2 is open.
CASES = [
    Case("the same close sent again", "c1", 1, None),
    Case("the same close id naming no period", "c1", 0, None),
    Case(
        "another close id naming the closed period",
        "c2",
        1,
        grpc.StatusCode.FAILED_PRECONDITION,
        "period 1 of {terminal} is closed already, by another close_id (its open period is 2)",
    ),
    Case(
        "the close id of period 1 naming period 2",
        "c1",
        2,
        grpc.StatusCode.FAILED_PRECONDITION,
        "this close_id closed period 1 of {terminal}, not period 2",
    ),
    Case(
        "a period not open yet",
        "c3",
        3,
        grpc.StatusCode.FAILED_PRECONDITION,
        "period 3 of {terminal} is not open yet (its open period is 2)",
    ),
    Case("a negative period", "c4", -1, grpc.StatusCode.INVALID_ARGUMENT, "period_number is negative"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_close_naming_its_period(world: World, case: Case) -> None:
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(5_000), 100).response_code == "00"
    first = _close(terminal, "c1", 1)
    assert (first.period_number, first.next_period_number, _redeemed(first)) == (1, 2, 100)
    if case.code is None:
        assert _close(terminal, case.close_id, case.period_number) == first
    else:
        code, details = _refusal(terminal, case.close_id, case.period_number)
        assert (code, case.words.format(terminal=terminal.terminal_id) in details) == (case.code, True), (
            details
        )
    assert [c.period_number for c in world.server.core.store.day_closes(terminal.terminal_id)] == [1]
    second = _close(terminal, "c5", 2)  # the open period still closes, named
    assert (second.period_number, second.sequence_number) == (2, 2)


def test_a_close_naming_no_period_closes_the_open_one_as_before(world: World) -> None:
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(5_000), 100).response_code == "00"
    first, second = _close(terminal, "c1"), _close(terminal, "c2")
    assert [(r.period_number, _redeemed(r)) for r in (first, second)] == [(1, 100), (2, 0)]
