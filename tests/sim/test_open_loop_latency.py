"""Open-loop latency on trio's virtual clock, against a fake switch that answers in 1 ms."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from terminal_sim.config import FaultShares, FlowWeights, LoadModel, SimConfig
from terminal_sim.load_models import OpenLoop
from terminal_sim.metrics import Recorder
from terminal_sim.terminal import SimTerminal
from tests.sim.fake_switch import CapturingRecorder, FakeStub, context_of, terminal

SERVICE_S = 0.001
LOADS_ONLY = FlowWeights(redeem=0, balance=0, load=1, refund=0, cancel=0)


@pytest.mark.trio
async def test_a_duplicated_request_counts_from_the_intended_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each load flow starts 1 s after its intended start (a late open-loop arrival) and is sent
    twice. Its first request must count from the intended start: >= 1 s, once per flow."""
    config = SimConfig(load_model=LoadModel.open, faults=FaultShares(duplicate=1.0), flows=LOADS_ONLY)
    recorder = CapturingRecorder()
    sim = terminal(config, SERVICE_S, recorder)
    flows = 40
    for _ in range(flows):
        await sim.load_flow(trio.current_time() - 1.0)
    loads = [latency for op, latency in recorder.records if op == "load"]
    assert len(loads) == 2 * flows
    from_intended = sum(1 for latency in loads if latency >= 1.0)
    assert from_intended == flows, f"only {from_intended} of {flows} late flows counted their lateness"


@pytest.mark.trio
async def test_open_loop_p99_is_not_the_simulators_own_switched_off_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`make sim --load-model open` settings (20 terminals, 200 flows/s, abandon share 0.01)
    against a switch that answers every request in 1 ms: the p99 must be about 1 ms, not the
    0.5 s an abandoning terminal spends switched off before it takes its next customer."""
    config = SimConfig(
        terminals=20,
        duration_s=60.0,
        load_model=LoadModel.open,
        target_rate_per_s=200.0,
        flows=LOADS_ONLY,
        faults=FaultShares(abandon=0.01),
        day_length_s=1_000.0,
    )
    start_s = trio.current_time()
    recorder = Recorder(start_s, window_s=config.duration_s)
    context = context_of(config, SERVICE_S, recorder)
    context.end_s = start_s + config.duration_s
    async with trio.open_nursery() as nursery:
        for index in range(config.terminals):
            sim = SimTerminal(index, FakeStub(), context)  # type: ignore[arg-type]
            sim.terminal_id = f"trm_{index}"
            pacer = OpenLoop(config.target_rate_per_s / config.terminals, random.Random(index), start_s)
            nursery.start_soon(sim.run, pacer)
    load = recorder.statistics(trio.current_time()).per_operation["load"]
    assert load.count > 10_000
    assert load.p50_ms < 2
    assert load.p99_ms < 10, f"p99 {load.p99_ms} ms, p99.9 {load.p999_ms} ms for a 1 ms switch"
