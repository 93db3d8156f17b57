"""run_and_audit waits SETTLE_S before reading the ledger only when a request may still be committing."""

from __future__ import annotations

import grpc
import pytest
import trio
import trio.testing

from terminal_sim import session
from terminal_sim.bridge import BridgeStatistics
from terminal_sim.config import FaultShares, FlowWeights, SimConfig
from terminal_sim.fleet import FleetResult
from terminal_sim.metrics import Recorder
from terminal_sim.records import Operation, Outcome
from tests.sim.fake_switch import terminal

LOADS_ONLY = FlowWeights(redeem=0, balance=0, load=1, refund=0, cancel=0)


def fleet_with(unanswered: int, stopped_early: str = "") -> FleetResult:
    recorder = Recorder(0.0, window_s=1.0)
    recorder.finish(1.0)
    statistics = recorder.statistics()
    bridge = BridgeStatistics(1, 1, 0, 1, 1, 0)
    return FleetResult(statistics, statistics, (), bridge, 0, 1, stopped_early, unanswered)


@pytest.mark.parametrize(
    ("unanswered", "stopped_early", "expected_s"),
    [(0, "", 0.0), (1, "", session.SETTLE_S), (0, "drain deadline hit", session.SETTLE_S)],
)
def test_the_settle_is_waited_only_when_a_request_went_unanswered_or_the_fleet_stopped_early(
    unanswered: int, stopped_early: str, expected_s: float
) -> None:
    assert session.settle_s(fleet_with(unanswered, stopped_early)) == expected_s


@pytest.mark.trio
@pytest.mark.parametrize(
    ("faults", "unanswered"),
    [(FaultShares(), False), (FaultShares(abandon=1.0), True), (FaultShares(timeout=1.0), True)],
)
async def test_a_request_counts_as_unanswered_when_it_is_abandoned_or_times_out_not_when_answered(
    faults: FaultShares, unanswered: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """The terminal switched off, or its timeout firing, 0-4 ms after sending; the switch answers in 10 ms."""
    config = SimConfig(faults=faults, flows=LOADS_ONLY, fault_timeout_s_max=0.004)
    sim = terminal(config, 0.010, Recorder(trio.current_time()))
    for _ in range(5):
        await sim.load_flow(trio.current_time())
    assert (sim.context.unanswered > 0) is unanswered, sim.context.unanswered


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.trio
@pytest.mark.parametrize(
    ("code", "unanswered"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 0),  # the switch busy with activations: its own answer
        (grpc.StatusCode.DEADLINE_EXCEEDED, 1),  # made up by the client: the switch may still commit
        (grpc.StatusCode.UNAVAILABLE, 1),
    ],
)
async def test_a_failed_call_is_unanswered_unless_only_the_switch_can_have_sent_its_status(
    code: grpc.StatusCode, unanswered: int, autojump_clock: trio.testing.MockClock
) -> None:
    sim = terminal(SimConfig(flows=LOADS_ONLY), 0.010, Recorder(trio.current_time()))

    def refuse(request: object) -> object:
        raise Refused(code)

    sent = await sim._send(Operation.day_close, refuse, object())  # type: ignore[arg-type]
    assert (sent.outcome, sent.grpc_code) == (Outcome.failed, code.name)
    assert sim.context.unanswered == unanswered
