"""Load models on trio's virtual clock: closed loop thinks, open loop keeps its schedule."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from terminal_sim.config import SettingError
from terminal_sim.load_models import ClosedLoop, OpenLoop, Pacer

RUN_S = 100.0


async def drive(pacer: Pacer, service_s: float, run_s: float) -> list[tuple[float, float]]:
    """(intended start, completion) of each transaction with a fixed service time."""
    done: list[tuple[float, float]] = []
    end_s = trio.current_time() + run_s
    while True:
        intended_s = await pacer.wait_next()
        if intended_s >= end_s:
            return done
        await trio.sleep(service_s)
        done.append((intended_s, trio.current_time()))


@pytest.mark.trio
async def test_open_loop_arrivals_are_poisson_at_the_target_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate_per_s = 50.0
    done = await drive(OpenLoop(rate_per_s, random.Random(3)), 0.0, RUN_S)
    expected = rate_per_s * RUN_S
    assert abs(len(done) - expected) < 0.05 * expected
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(done)]
    mean_gap_s = sum(gaps) / len(gaps)
    # Exponential gaps: the standard deviation is about the mean.
    spread_s = (sum((gap - mean_gap_s) ** 2 for gap in gaps) / len(gaps)) ** 0.5
    assert abs(mean_gap_s - 1 / rate_per_s) < 0.1 / rate_per_s
    assert 0.8 < spread_s / mean_gap_s < 1.2


@pytest.mark.trio
async def test_open_loop_latency_counts_from_the_intended_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A switch slower than the arrival rate: latency grows, the schedule does not slip."""
    rate_per_s, service_s = 20.0, 0.1  # twice as much work as time
    pacer = OpenLoop(rate_per_s, random.Random(5))
    done = await drive(pacer, service_s, 10.0)
    latencies_s = [finished - intended for intended, finished in done]
    assert pacer.late_starts > len(done) // 2
    assert latencies_s[-1] > 10 * service_s  # the backlog shows in the measurement
    assert max(latencies_s) > 3.0
    # Measured from the actual send instead, every latency would be service_s: omission.
    assert min(latencies_s) == pytest.approx(service_s)


@pytest.mark.trio
async def test_closed_loop_waits_for_the_answer_then_thinks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    think_s, service_s = 0.2, 0.05
    done = await drive(ClosedLoop(think_s, random.Random(7)), service_s, RUN_S)
    expected = RUN_S / (think_s + service_s)
    assert abs(len(done) - expected) < 0.1 * expected
    for (_, finished), (next_start, _) in itertools.pairwise(done):
        assert next_start >= finished  # never two transactions at once on one terminal
    latencies_s = [finished - intended for intended, finished in done]
    assert max(latencies_s) == pytest.approx(service_s)


@pytest.mark.trio
async def test_closed_loop_without_think_time_goes_straight_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done = await drive(ClosedLoop(0.0, random.Random(1)), 0.5, 10.0)
    assert len(done) == 20


@pytest.mark.parametrize(
    ("rate_per_s", "message"),
    [
        (0.0, "rate_per_s must be above 0 and finite, not 0.0"),
        (-2.0, "rate_per_s must be above 0 and finite, not -2.0"),
        (float("nan"), "rate_per_s must be above 0 and finite, not nan"),
        (float("inf"), "rate_per_s must be above 0 and finite, not inf"),  # every gap 0: a busy loop
    ],
)
def test_an_open_loop_refuses_a_bad_rate_by_name(rate_per_s: float, message: str) -> None:
    with pytest.raises(SettingError) as refused:
        OpenLoop(rate_per_s, random.Random(1))
    assert str(refused.value) == message
    assert refused.value.names == ("rate_per_s",)


@pytest.mark.parametrize(
    ("think_time_s_mean", "message"),
    [
        (-0.5, "think_time_s_mean must not be negative or infinite, not -0.5"),
        (float("nan"), "think_time_s_mean must not be negative or infinite, not nan"),
        (float("inf"), "think_time_s_mean must not be negative or infinite, not inf"),
    ],
)
def test_a_closed_loop_refuses_a_bad_think_time_by_name(think_time_s_mean: float, message: str) -> None:
    with pytest.raises(SettingError) as refused:
        ClosedLoop(think_time_s_mean, random.Random(1))
    assert str(refused.value) == message
    assert refused.value.names == ("think_time_s_mean",)
