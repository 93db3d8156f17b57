"""Load models: when each terminal starts its next transaction, and from when latency counts."""

from __future__ import annotations

import math
import random
from typing import Protocol

import trio

from terminal_sim.config import check_above_zero, check_not_negative


class Pacer(Protocol):
    async def wait_next(self, end_s: float = math.inf, wake_s: float = math.inf) -> float:
        """Sleep until the next transaction is due; return its intended start (trio time, s).

        One due at or after end_s is not waited for beyond end_s: the run is over by then. Nor
        beyond wake_s (a day's end), though what it returns is still the transaction's start."""
        ...

    def skip_missed(self) -> None:
        """The terminal was switched off: what fell due meanwhile was never sent, nor late."""
        ...


class ClosedLoop:
    """Wait for the answer, think, go again: the offered load falls when the switch slows."""

    def __init__(self, think_time_s_mean: float, rng: random.Random) -> None:
        check_not_negative("think_time_s_mean", think_time_s_mean)  # infinity: expovariate(0) fails
        self._think_time_s_mean = think_time_s_mean
        self._rng = rng
        self._first = True

    async def wait_next(self, end_s: float = math.inf, wake_s: float = math.inf) -> float:
        if self._first:
            self._first = False
        elif self._think_time_s_mean > 0:
            think_s = self._rng.expovariate(1.0 / self._think_time_s_mean)
            await trio.sleep_until(min(trio.current_time() + think_s, end_s, wake_s))
        else:
            await trio.lowlevel.checkpoint()
        return trio.current_time()

    def skip_missed(self) -> None:
        pass  # a closed loop owes nothing while it is off


class OpenLoop:
    """Poisson arrivals at rate_per_s for one terminal, whatever the switch does.

    The schedule never waits for answers: when a transaction runs late, the next one's intended
    start is already in the past and its latency counts from that intended start. That is what
    keeps coordinated omission from hiding a slow switch.
    """

    def __init__(self, rate_per_s: float, rng: random.Random, start_s: float | None = None) -> None:
        check_above_zero("rate_per_s", rate_per_s)  # infinity: every gap 0, arrivals without end
        self._rate_per_s = rate_per_s
        self._rng = rng
        self._next_s = start_s
        self.late_starts = 0

    async def wait_next(self, end_s: float = math.inf, wake_s: float = math.inf) -> float:
        if self._next_s is None:
            self._next_s = trio.current_time()
        self._next_s += self._rng.expovariate(self._rate_per_s)
        if self._next_s < trio.current_time():
            self.late_starts += int(self._next_s < end_s)  # one past the end is never sent
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(min(self._next_s, end_s, wake_s))
        return self._next_s

    def skip_missed(self) -> None:
        now = trio.current_time()
        if self._next_s is not None and self._next_s < now:
            self._next_s = now  # the next arrival comes a Poisson gap from now
