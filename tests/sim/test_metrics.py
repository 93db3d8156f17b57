"""The recorder: percentiles per operation, codes, the per-second timeline, the rate window."""

from __future__ import annotations

import dataclasses

import pytest

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
    assert [point.completed for point in snapshot.timeline] == [50, 50, 1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.completed = 0  # type: ignore[misc]
    # Later records do not change a snapshot already taken.
    recorder.record("redeem", 0.001, "00", Outcome.answered, 103.1)
    assert snapshot.per_operation["redeem"].count == 101
