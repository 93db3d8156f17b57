"""The recorder: percentiles per operation, codes, the per-second timeline, the rate window."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from terminal_sim.fleet import _progress
from terminal_sim.metrics import Recorder
from terminal_sim.records import Outcome


def test_statistics_is_a_frozen_snapshot_with_window_rates() -> None:
    recorder = Recorder(start_s=100.0, window_s=2.0)
    for index in range(100):
        now_s = 100.0 + index * 0.02  # 100 answers over 2 s, latency 1..100 ms
        recorder.record("redeem", (index + 1) / 1000, "00", Outcome.answered, now_s)
    recorder.record("redeem", 0.5, "51", Outcome.answered, 102.5)  # in the drain, after the window
    recorder.record("load", 5.0, None, Outcome.timed_out, 103.0)
    recorder.finish(103.0)
    snapshot = recorder.statistics()
    assert snapshot.per_operation["redeem"].count == 101
    assert snapshot.per_operation["redeem"].p50_ms == pytest.approx(51, rel=0.01)
    assert snapshot.per_operation["redeem"].max_ms == pytest.approx(500, rel=0.01)
    assert snapshot.response_codes == {"load": {"timed_out": 1}, "redeem": {"00": 100, "51": 1}}
    assert (snapshot.completed, snapshot.approved, snapshot.errors) == (102, 100, 1)
    assert snapshot.approved_per_s == pytest.approx(50.0)
    assert [point.completed for point in snapshot.timeline] == [50, 50, 1, 1]  # the last: the timeout
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.completed = 0  # type: ignore[misc]
    # Later records do not change a snapshot already taken.
    recorder.record("redeem", 0.001, "00", Outcome.answered, 103.1)
    assert snapshot.per_operation["redeem"].count == 101


def test_progress_counts_what_statistics_counts() -> None:
    recorder = Recorder(start_s=10.0)
    for index in range(50):
        code = "00" if index % 5 else "96"  # every fifth a switch error
        recorder.record("balance", 0.002, code, Outcome.answered, 10.0 + index * 0.05)
    recorder.record("redeem", 5.0, None, Outcome.timed_out, 12.6)
    progress = recorder.progress(12.75)
    snapshot = recorder.statistics(12.75)
    assert progress.elapsed_s == pytest.approx(snapshot.elapsed_s) == pytest.approx(2.75)
    assert (progress.completed, progress.approved, progress.errors) == (
        snapshot.completed,
        snapshot.approved,
        snapshot.errors,
    )
    assert (progress.completed, progress.approved, progress.errors) == (51, 40, 11)


@pytest.mark.trio
async def test_the_live_line_shows_the_rate_and_the_last_whole_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder(start_s=trio.current_time())
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_progress, recorder, lines.append, 1.0)
        start_s = trio.current_time()
        for _ in range(30):  # 30 answers of 20 ms early in the first second
            recorder.record("redeem", 0.020, "00", Outcome.answered, trio.current_time())
            await trio.sleep(0.025)
        await trio.sleep_until(start_s + 1.2)
        for _ in range(10):  # then 10 declines of 40 ms in the second one
            recorder.record("redeem", 0.040, "51", Outcome.answered, trio.current_time())
            await trio.sleep(0.08)
        await trio.sleep_until(start_s + 2.5)
        nursery.cancel_scope.cancel()
    first, second = lines[:2]  # each shows the second just gone
    assert "rate=     30/s approved=      30" in first
    assert float(first.split("p99=")[1].split("ms")[0]) == pytest.approx(20.0, rel=0.01)
    assert "rate=     10/s approved=      30" in second
    assert float(second.split("p99=")[1].split("ms")[0]) == pytest.approx(40.0, rel=0.01)
