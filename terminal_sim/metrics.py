"""Measurements: an HDR latency histogram per operation, response codes, throughput per second."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from terminal_sim.records import APPROVING_CODES, Outcome

LATENCY_US_MIN = 1
LATENCY_US_MAX = 120_000_000
SIGNIFICANT_DIGITS = 3
TIMELINE_SECONDS_MAX = 7_200
ERROR_CODES = frozenset({"96", "91"})  # the switch failed, as opposed to a decline by rule
ALL = "all"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LATENCY_US_MIN, LATENCY_US_MAX, SIGNIFICANT_DIGITS)


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @staticmethod
    def of(histogram: HdrHistogram) -> LatencySummary:
        if histogram.get_total_count() == 0:
            return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return LatencySummary(
            count=histogram.get_total_count(),
            p50_ms=histogram.get_value_at_percentile(50) / 1000,
            p90_ms=histogram.get_value_at_percentile(90) / 1000,
            p99_ms=histogram.get_value_at_percentile(99) / 1000,
            p999_ms=histogram.get_value_at_percentile(99.9) / 1000,
            max_ms=histogram.get_max_value() / 1000,
        )


@dataclass(frozen=True)
class TimelinePoint:
    second: int  # since the run started
    completed: int
    approved: int
    errors: int
    p99_ms: float


@dataclass(frozen=True)
class RecorderStatistics:
    """Totals over the whole run; rates over the measuring window (the drain after it excluded)."""

    elapsed_s: float
    completed: int
    approved: int
    errors: int
    window_s: float
    window_completed: int
    window_approved: int
    overall: LatencySummary
    per_operation: Mapping[str, LatencySummary]
    response_codes: Mapping[str, Mapping[str, int]]  # operation -> code -> count
    outcomes: Mapping[str, int]
    timeline: tuple[TimelinePoint, ...]

    @property
    def approved_per_s(self) -> float:
        return self.window_approved / self.window_s if self.window_s > 0 else 0.0

    @property
    def completed_per_s(self) -> float:
        return self.window_completed / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """Counts so far, read without walking any histogram: cheap enough for every second of a run."""

    elapsed_s: float
    completed: int
    approved: int
    errors: int


@dataclass
class _Second:
    second: int
    completed: int = 0
    approved: int = 0
    errors: int = 0


class Recorder:
    """Collects every request's latency and result; single trio thread, so no locks."""

    def __init__(self, start_s: float, window_s: float | None = None) -> None:
        self.start_s = start_s
        self.end_s: float | None = None
        # Rates count what completed inside the window; None: the whole run is the window.
        self.window_s = window_s
        self._window = _Second(-1)
        self._histograms: dict[str, HdrHistogram] = {ALL: new_histogram()}
        self._codes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._outcomes: collections.Counter[str] = collections.Counter()
        self._timeline: list[TimelinePoint] = []
        self._current = _Second(0)
        self._current_histogram = new_histogram()
        self._totals = _Second(-1)

    def record(
        self,
        operation: str,
        latency_s: float,
        response_code: str | None,
        outcome: Outcome,
        now_s: float,
    ) -> None:
        self._roll(now_s)
        latency_us = min(max(int(latency_s * 1_000_000), LATENCY_US_MIN), LATENCY_US_MAX)
        histogram = self._histograms.get(operation)
        if histogram is None:
            histogram = self._histograms[operation] = new_histogram()
        histogram.record_value(latency_us)
        self._histograms[ALL].record_value(latency_us)
        self._current_histogram.record_value(latency_us)
        self.count(operation, response_code, outcome, now_s)

    def count(self, operation: str, response_code: str | None, outcome: Outcome, now_s: float) -> None:
        """A request's code and outcome without its latency: an injected fault (a terminal that
        gave up or was switched off), whose time says nothing of the switch's."""
        self._roll(now_s)
        self._outcomes[outcome.value] += 1
        self._codes[operation][response_code or outcome.value] += 1
        approved = outcome is Outcome.answered and response_code in APPROVING_CODES
        error = outcome is not Outcome.answered or response_code in ERROR_CODES
        buckets = [self._current, self._totals]
        if self.window_s is None or now_s - self.start_s <= self.window_s:
            buckets.append(self._window)
        for bucket in buckets:
            bucket.completed += 1
            bucket.approved += int(approved)
            bucket.errors += int(error)

    def _roll(self, now_s: float) -> None:
        second = int(now_s - self.start_s)
        while second > self._current.second:
            if len(self._timeline) < TIMELINE_SECONDS_MAX:
                self._timeline.append(self._close_second())
            self._current = _Second(self._current.second + 1)
            self._current_histogram.reset()

    def _close_second(self) -> TimelinePoint:
        current = self._current
        p99_ms = LatencySummary.of(self._current_histogram).p99_ms
        return TimelinePoint(current.second, current.completed, current.approved, current.errors, p99_ms)

    def finish(self, now_s: float) -> None:
        """The run's end: its last, partial second closes too (a 0.5 s run had no timeline, and a
        drain's answers after the last whole second were missing from it)."""
        self._roll(now_s)
        if self._current.completed and len(self._timeline) < TIMELINE_SECONDS_MAX:
            self._timeline.append(self._close_second())
            self._current = _Second(self._current.second + 1)
            self._current_histogram.reset()
        self.end_s = now_s

    def last_second(self) -> TimelinePoint | None:
        return self._timeline[-1] if self._timeline else None

    def progress(self, now_s: float) -> Progress:
        """For the live display. statistics() reads percentiles off every histogram (about 20 ms
        for a 30,000-request run), which would stall the simulator's trio loop once a second."""
        self._roll(now_s)  # so the last second is the one just gone, quiet or not (a stall shows)
        totals = self._totals
        return Progress(now_s - self.start_s, totals.completed, totals.approved, totals.errors)

    def statistics(self, now_s: float | None = None) -> RecorderStatistics:
        end_s = self.end_s if self.end_s is not None else now_s
        elapsed_s = (end_s - self.start_s) if end_s is not None else 0.0
        window_s = elapsed_s if self.window_s is None else min(self.window_s, elapsed_s)
        return RecorderStatistics(
            elapsed_s=elapsed_s,
            completed=self._totals.completed,
            approved=self._totals.approved,
            errors=self._totals.errors,
            window_s=window_s,
            window_completed=self._window.completed,
            window_approved=self._window.approved,
            overall=LatencySummary.of(self._histograms[ALL]),
            per_operation={
                name: LatencySummary.of(histogram)
                for name, histogram in sorted(self._histograms.items())
                if name != ALL
            },
            response_codes={op: dict(counter) for op, counter in sorted(self._codes.items())},
            outcomes=dict(self._outcomes),
            timeline=tuple(self._timeline),
        )
