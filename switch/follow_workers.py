"""The few threads that move money credited to a replaced card on to its replacement (a bounded queue)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# How often a caller waiting for room in the queue looks whether the workers are stopping.
WAIT_FOR_ROOM_POLL_S = 0.5
# How often an idle worker looks for moves asked again later by another worker (ask_later), which
# may be busy with a long move when one falls due.
LATER_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class FollowAsked:
    """Move the money on card_id to the card that replaced it, keyed by because (once per key)."""

    card_id: str
    because: str
    when: str
    looks: int = 0  # how often its card's replacement was looked for and not found yet


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
        self._queue: queue.Queue[FollowAsked | None] = queue.Queue(queued_max)
        self._stopping = threading.Event()
        self._queued_max = queued_max
        # Moves asked again later: (not before, in time.monotonic() seconds; order asked; the move)
        self._later: list[tuple[float, int, FollowAsked]] = []
        self._later_lock = threading.Lock()
        self._later_order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name="follow-replacement", daemon=True)
            for _ in range(workers_max)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        """The workers end after the move each is making (not waited for: a move waits on the
        journal, which stops after this)."""
        self._stopping.set()
        for _ in self._workers:
            try:  # wakes a waiting worker; with more workers than the queue holds, as each takes one
                self._queue.put(None, timeout=WAIT_FOR_ROOM_POLL_S)
            except queue.Full:
                break  # the workers are busy: each sees _stopping after its move

    def ask_nowait(self, asked: FollowAsked) -> bool:
        """Queued; False if the queue is full or the workers are stopping (a card actor's thread:
        it never waits)."""
        if self._stopping.is_set():
            return False
        try:
            self._queue.put_nowait(asked)
        except queue.Full:
            return False
        return True

    def ask(self, asked: FollowAsked) -> bool:
        """Queued once there is room; False if the workers are stopping first."""
        while not self._stopping.is_set():
            try:
                self._queue.put(asked, timeout=WAIT_FOR_ROOM_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def ask_later(self, asked: FollowAsked, not_before_s: float) -> bool:
        """Made again once time.monotonic() reaches not_before_s, by the first worker free then;
        False if the workers are stopping or queued_max moves wait so already (a worker's thread:
        it never waits)."""
        with self._later_lock:
            if self._stopping.is_set() or len(self._later) >= self._queued_max:
                return False
            heapq.heappush(self._later, (not_before_s, next(self._later_order), asked))
        return True

    def _work(self) -> None:
        while not self._stopping.is_set():
            asked = self._next()
            if asked is None or self._stopping.is_set():
                return
            self._move(asked)

    def _next(self) -> FollowAsked | None:
        """The next queued move, else the first asked later that is due, else the next queued one
        waited for no longer than until the first asked later is due (None: the workers are
        stopping). Queued first: each waiting move asks again up to its looks' bound, and taken
        first they kept the workers from new credits' moves; the queue's are each made once."""
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Empty):
                return self._queue.get_nowait()
            with self._later_lock:
                due_in_s = self._later[0][0] - time.monotonic() if self._later else LATER_POLL_S
                if due_in_s <= 0:
                    return heapq.heappop(self._later)[2]
            try:
                return self._queue.get(timeout=min(due_in_s, LATER_POLL_S))
            except queue.Empty:
                continue
        return None
