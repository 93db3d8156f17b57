"""The few threads that move money credited to a replaced card on to its replacement (a bounded queue)."""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FollowAsked:
    """Move the money on card_id to the card that replaced it, keyed by because (once per key)."""

    card_id: str
    because: str
    when: str
    looks: int = 0  # how often its card's replacement was looked for and not found yet


@dataclass(frozen=True, slots=True)
class FollowWorkersStatistics:
    """Moves queued, and moves waiting to be asked again later, at one moment."""

    queued: int
    asked_later: int
    backlog: int


class FollowWorkers:
    """Moves asked for, made by workers_max threads from a queue of at most queued_max: a start that
    finds many replaced cards holding money no longer starts a thread per card. `move` makes one
    move and must not raise (it logs and counts its failures). A move that must wait (a replacement
    still landing) is asked again later (`ask_later`), not waited for on the worker, which serves
    the others meanwhile. Moves still queued or waiting at a stop are not lost: the money stays on
    the lost card, and the next start finds it."""

    def __init__(self, move: Callable[[FollowAsked], None], workers_max: int, queued_max: int) -> None:
        assert workers_max > 0 and queued_max > 0, (workers_max, queued_max)
        self._move = move
        self._queued_max = queued_max
        # One lock for the queue, the moves asked later and the stop: a worker waits on
        # _work_ready until a move is queued, the first asked later falls due or a stop (no
        # polling: an idle worker sleeps, and a due move is taken at its time).
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._queue: collections.deque[FollowAsked] = collections.deque()
        # Moves a start found (`ask_backlog`), made once neither the queue nor a move due waits.
        self._backlog: collections.deque[FollowAsked] = collections.deque()
        self._stopping = False
        # Moves asked again later: (not before, in time.monotonic() seconds; order asked; the move)
        self._later: list[tuple[float, int, FollowAsked]] = []
        self._later_order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name="follow-replacement", daemon=True)
            for _ in range(workers_max)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self) -> list[FollowAsked]:
        """The workers end after the move each is making (not waited for: a move waits on the
        journal, which stops after this). Returns the moves left: queued, or waiting to be asked
        again (a replacement still landing), for the caller to count; their money stays on the
        lost cards, for the next start."""
        with self._lock:
            self._stopping = True
            left = [*self._queue, *(asked for _, _, asked in sorted(self._later)), *self._backlog]
            self._queue.clear()
            self._later.clear()
            self._backlog.clear()
            self._work_ready.notify_all()
        return left

    @property
    def stopping(self) -> bool:
        """Once stop() has begun: a move refused then is left at the stop, not failed."""
        with self._lock:
            return self._stopping

    def statistics(self) -> FollowWorkersStatistics:
        with self._lock:
            return FollowWorkersStatistics(len(self._queue), len(self._later), len(self._backlog))

    def ask_backlog(self, moves: list[FollowAsked]) -> bool:
        """Made after the queued moves and those due, as workers free up; never waits (a start's
        sweep: it waited for room in the queue, without a time limit, while the workers' moves
        waited on the journal). Bounded by the sweep's own list, which is in memory already; False
        if the workers are stopping."""
        with self._lock:
            if self._stopping:
                return False
            self._backlog.extend(moves)
            self._work_ready.notify_all()
        return True

    def ask_nowait(self, asked: FollowAsked) -> bool:
        """Queued; False if the queue is full or the workers are stopping (a card actor's thread:
        it never waits)."""
        with self._lock:
            if self._stopping or len(self._queue) >= self._queued_max:
                return False
            self._queue.append(asked)
            self._work_ready.notify()
        return True

    def ask_later(self, asked: FollowAsked, not_before_s: float) -> bool:
        """Made again once time.monotonic() reaches not_before_s, by the first worker free then;
        False if the workers are stopping or queued_max moves wait so already (a worker's thread:
        it never waits)."""
        with self._lock:
            if self._stopping or len(self._later) >= self._queued_max:
                return False
            heapq.heappush(self._later, (not_before_s, next(self._later_order), asked))
            # A waiting worker may be sleeping until a later time than this one's, or for good.
            self._work_ready.notify()
        return True

    def _work(self) -> None:
        while True:
            asked = self._next()
            if asked is None:
                return
            self._move(asked)

    def _next(self) -> FollowAsked | None:
        """The next queued move, else the first asked later that is due, else waits until either
        (None: the workers are stopping). Queued first: each waiting move asks again up to its
        looks' bound, and taken first they kept the workers from new credits' moves; the queue's
        are each made once."""
        with self._lock:
            while not self._stopping:
                asked, due_in_s = self._take_nowait()
                if asked is not None:
                    if (
                        self._queue
                        or self._backlog
                        or (self._later and self._later[0][0] <= time.monotonic())
                    ):
                        self._work_ready.notify()  # more to do now: another idle worker takes it
                    return asked
                self._work_ready.wait(due_in_s)
        return None

    def _take_nowait(self) -> tuple[FollowAsked | None, float | None]:
        """Under the lock: a move to make now, or None and how long until the first asked later
        falls due (None: none waits)."""
        if self._queue:
            return self._queue.popleft(), None
        due_in_s = self._later[0][0] - time.monotonic() if self._later else None
        if due_in_s is not None and due_in_s <= 0:
            return heapq.heappop(self._later)[2], None
        if self._backlog:
            return self._backlog.popleft(), None
        return None, due_in_s
