"""The simulated terminal's day close names the period it closes, as a terminal should (a close
pressed twice then closes it once), and names none after a close left unanswered."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import trio
import trio.testing

from protocols.wire import terminal_pb2 as pb
from terminal_sim.config import SimConfig
from tests.sim.fake_switch import CapturingRecorder, FakeStub, terminal


class _Refused(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class ClosingStub(FakeStub):
    """Closes the named (or open) period; refuses the closes whose number is in `refused`."""

    def __init__(self, refused: set[int]) -> None:
        self.named: list[int] = []
        self.open_period = 1
        self._refused = refused

    def DayClose(self, request: Any) -> Any:
        self.named.append(request.period_number)
        if len(self.named) in self._refused:
            self.open_period += 1  # it landed, but its answer was lost
            raise _Refused()
        closed, self.open_period = self.open_period, self.open_period + 1
        return pb.DayCloseReport(period_number=closed, next_period_number=self.open_period)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("refused", "named"),
    [
        (set(), [1, 2, 3]),  # each close names the period the last one opened
        ({2}, [1, 2, 0, 4]),  # after a close left unanswered: none named, until one is answered
    ],
)
async def test_the_day_close_names_its_period(
    autojump_clock: trio.testing.MockClock, refused: set[int], named: list[int]
) -> None:
    sim = terminal(SimConfig(terminals=1), 0.01, CapturingRecorder())
    stub = ClosingStub(refused)
    sim.stub = stub  # type: ignore[assignment]
    sim.period = 1  # as activation answers
    for _ in named:
        await sim.day_close()
    assert stub.named == named
