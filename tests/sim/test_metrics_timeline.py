"""The recorder's timeline and live line (session 22 audit of the simulator)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from terminal_sim.fleet import _progress
from terminal_sim.metrics import Recorder
from terminal_sim.payments import PaymentRecord, PaymentRun
from terminal_sim.records import Outcome


def test_a_short_run_has_a_timeline() -> None:
    """A 0.5 s run with three answers: the report's per-second timeline (sim-report.json and the
    PNG) must hold them; the last, partial second is never closed by finish()."""
    recorder = Recorder(start_s=100.0, window_s=0.5)
    for now_s in (100.1, 100.2, 100.3):
        recorder.record("balance", 0.001, "00", Outcome.answered, now_s)
    recorder.finish(100.5)
    snapshot = recorder.statistics()
    assert snapshot.completed == 3
    assert sum(point.completed for point in snapshot.timeline) == 3, snapshot.timeline


def test_the_timeline_holds_the_drain_after_the_last_whole_second() -> None:
    """Answers in the drain after the window's last whole second are in the totals but not in
    the timeline: the per-second counts do not add up to the requests."""
    recorder = Recorder(start_s=0.0, window_s=2.0)
    for now_s in (0.5, 1.5, 1.9, 2.3):
        recorder.record("redeem", 0.001, "00", Outcome.answered, now_s)
    recorder.finish(2.5)
    snapshot = recorder.statistics()
    assert sum(point.completed for point in snapshot.timeline) == snapshot.completed == 4


@pytest.mark.trio
async def test_the_live_p99_is_not_a_second_from_before_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Answers of 2 ms in the first second and one at 1.1 s, then the switch stalls: nothing
    completes for three seconds. The live line's "p99 of the last second" keeps showing the
    2 ms of second 0 at t=4 s, when the last second saw no answer at all (a stall shows as a
    healthy p99). The same lag shows a full first second as p99=0.00 at t=1 s."""
    recorder = Recorder(start_s=trio.current_time())
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_progress, recorder, lines.append, 1.0)
        start_s = trio.current_time()
        for _ in range(20):
            recorder.record("redeem", 0.002, "00", Outcome.answered, trio.current_time())
            await trio.sleep(0.04)
        await trio.sleep_until(start_s + 1.1)
        recorder.record("redeem", 0.002, "00", Outcome.answered, trio.current_time())
        await trio.sleep_until(start_s + 4.5)
        nursery.cancel_scope.cancel()
    fourth = lines[3]
    assert "rate=      0/s" in fourth
    assert float(fourth.split("p99=")[1].split("ms")[0]) == 0.0, lines


def test_payment_percentiles_are_nearest_rank() -> None:
    """100 payments of 1..100 ms: p50 is 50 ms and p99 99 ms (nearest rank, as HdrHistogram
    reads the other phases); _percentile takes the value one rank above, so p99 of 100 is the max."""
    run = PaymentRun(
        [PaymentRecord(f"p{i}", "trm", 1, 100, False, code="00", latency_s=i / 1000) for i in range(1, 101)]
    )
    assert run.latency_ms() == {"p50": 50.0, "p99": 99.0, "p999": 100.0}


def test_payment_median_of_two_is_not_the_max() -> None:
    run = PaymentRun(
        [
            PaymentRecord(f"p{i}", "trm", 1, 100, False, code="00", latency_s=s)
            for i, s in enumerate((0.001, 0.5))
        ]
    )
    assert run.latency_ms()["p50"] == 1.0
