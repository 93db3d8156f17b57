"""Load models: when each terminal starts its next transaction, and from when latency counts."""

from __future__ import annotations

import random
from typing import Protocol

import trio


class Pacer(Protocol):
    async def wait_next(self) -> float:
        """Sleep until the next transaction is due; return its intended start (trio time, s)."""
        ...


class ClosedLoop:
    """Wait for the answer, think, go again: the offered load falls when the switch slows."""

    def __init__(self, think_time_s_mean: float, rng: random.Random) -> None:
        assert think_time_s_mean >= 0, think_time_s_mean
        self._think_time_s_mean = think_time_s_mean
        self._rng = rng
        self._first = True

    async def wait_next(self) -> float:
        if self._first:
            self._first = False
        elif self._think_time_s_mean > 0:
            await trio.sleep(self._rng.expovariate(1.0 / self._think_time_s_mean))
        else:
            await trio.lowlevel.checkpoint()
        return trio.current_time()


class OpenLoop:
    """Poisson arrivals at rate_per_s for one terminal, whatever the switch does.

    The schedule never waits for answers: when a transaction runs late, the next one's intended
    start is already in the past and its latency counts from that intended start. That is what
    keeps coordinated omission from hiding a slow switch.
    """

    def __init__(self, rate_per_s: float, rng: random.Random, start_s: float | None = None) -> None:
        assert rate_per_s > 0, rate_per_s
        self._rate_per_s = rate_per_s
        self._rng = rng
        self._next_s = start_s
        self.late_starts = 0

    async def wait_next(self) -> float:
        if self._next_s is None:
            self._next_s = trio.current_time()
        self._next_s += self._rng.expovariate(self._rate_per_s)
        if self._next_s < trio.current_time():
            self.late_starts += 1
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(self._next_s)
        return self._next_s
