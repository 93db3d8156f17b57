"""compare.summary on runs a coarse CPU clock or a failing tree can give (session 22 audit)."""

from __future__ import annotations

from terminal_sim import compare
from terminal_sim.compare import RunFigures


def test_a_run_whose_cpu_reading_did_not_advance_does_not_lose_the_comparison() -> None:
    """/proc counts CPU in clock ticks of 10 ms. A short or slow run (`--open-rate-per-s 2`:
    about 24 requests in 12 s) can end with the switch's tick count where it started, so
    ms_per_request gives 0.0 (bench.py ms_per_request). summary() then divides by it and the
    whole sitting (minutes of runs) ends in ZeroDivisionError, without its JSON line."""
    runs = {
        "before": [RunFigures(2.0, 0.0, True, 3.0)],
        "after": [RunFigures(2.0, 0.417, True, 3.0)],
    }
    report = compare.summary(runs)
    assert report["after_over_before"]["approved_per_s"] == 1.0


def test_a_tree_that_approves_nothing_is_reported_not_a_crash() -> None:
    runs = {
        "before": [RunFigures(0.0, 1.0, False, 3.0)],
        "after": [RunFigures(500.0, 1.0, True, 3.0)],
    }
    report = compare.summary(runs)
    assert report["before"]["audits_clean"] is False
