"""The open loop's schedule at its end and the simulated day close (session 22 audit of the simulator)."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from terminal_sim.config import FlowWeights, LoadModel, SimConfig
from terminal_sim.load_models import OpenLoop
from terminal_sim.records import Operation
from tests.sim.fake_switch import CapturingRecorder, terminal

LOADS_ONLY = FlowWeights(redeem=0, balance=0, load=1, refund=0, cancel=0)


@pytest.mark.trio
async def test_late_starts_count_only_transactions_that_were_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """10 arrivals/s against 1 s of service each, for 5 s: every transaction after the first
    starts late. The arrival the loop draws at its end, whose intended start is past the end and
    which is never sent, must not count as a late start."""
    start_s = trio.current_time()
    pacer = OpenLoop(10.0, random.Random(1), start_s)
    end_s = start_s + 5.0
    sent_late = 0
    while True:
        intended_s = await pacer.wait_next(end_s)
        if intended_s >= end_s:
            break
        sent_late += int(intended_s < trio.current_time())
        await trio.sleep(1.0)
    assert pacer.late_starts == sent_late


@pytest.mark.trio
async def test_an_overloaded_open_loop_starts_no_flow_after_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One terminal, open loop at 10 flows/s for 5 s, against a switch that takes 0.5 s per
    request: five times the work the time allows. After the end a terminal finishes what it
    started (fleet.py: a request, its recovery, a day close); it starts nothing new. It sends
    its backlog of about 40 flows for another 20 s instead, into the fleet's drain grace (where
    a larger backlog is cancelled and the day close skipped)."""
    config = SimConfig(
        terminals=1,
        duration_s=5.0,
        load_model=LoadModel.open,
        target_rate_per_s=10.0,
        flows=LOADS_ONLY,
        day_length_s=1_000.0,
    )
    recorder = CapturingRecorder()
    sim = terminal(config, 0.5, recorder)
    start_s = trio.current_time()
    sim.context.end_s = start_s + config.duration_s
    await sim.run(OpenLoop(config.target_rate_per_s, random.Random(2), start_s))
    loads = [e for e in sim.context.exchanges if e.operation is Operation.load]
    started_after_end = [e for e in loads if e.started_s >= sim.context.end_s]
    took_s = trio.current_time() - start_s
    assert not started_after_end, f"{len(started_after_end)} of {len(loads)} flows sent after the end"
    assert took_s <= config.duration_s + 2 * 0.5, took_s


@pytest.mark.trio
async def test_an_open_loop_terminal_closes_its_day_at_the_end_of_the_day(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`txswitch-sim --terminals 200 --load-model open --rate-per-s 20` (0.1 flows/s per
    terminal), days of 10 s (the default), 20 s: two days, each closed at its end (sim-guide.md:
    "each terminal closes its day at the end of it"). A terminal closes its day only when its
    next customer arrives (terminal.py run), so the first close comes seconds late, and never
    when no customer arrives between the day's end and the run's end. Twenty of the terminals."""
    config = SimConfig(
        terminals=200,
        duration_s=20.0,
        load_model=LoadModel.open,
        target_rate_per_s=20.0,
        flows=LOADS_ONLY,
        day_length_s=10.0,
    )
    late_closes, missing_closes = 0, 0
    for index in range(20):
        recorder = CapturingRecorder()
        sim = terminal(config, 0.001, recorder, index=index)
        start_s = trio.current_time()
        sim.context.end_s = start_s + config.duration_s
        pacer = OpenLoop(config.target_rate_per_s / config.terminals, random.Random(index), start_s)
        await sim.run(pacer)
        closes = [e.started_s - start_s for e in sim.context.exchanges if e.operation is Operation.day_close]
        if len(closes) < 2:
            missing_closes += 1
        elif closes[0] > config.day_length_s + 1.0:
            late_closes += 1
    assert (missing_closes, late_closes) == (0, 0)
