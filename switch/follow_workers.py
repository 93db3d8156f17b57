"""The few threads that move money credited to a replaced card on to its replacement (a bounded queue)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

# How often a caller waiting for room in the queue looks whether the workers are stopping.
WAIT_FOR_ROOM_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class FollowAsked:
    """Move the money on card_id to the card that replaced it, keyed by because (once per key)."""

    card_id: str
    because: str
    when: str


class FollowWorkers:
    """Moves asked for, made by workers_max threads from a queue of at most queued_max: a start that
    finds many replaced cards holding money no longer starts a thread per card. `move` makes one
    move and must not raise (it logs and counts its failures). Moves still queued at a stop are
    not lost: the money stays on the lost card, and the next start finds it."""

    def __init__(self, move: Callable[[FollowAsked], None], workers_max: int, queued_max: int) -> None:
        assert workers_max > 0 and queued_max > 0, (workers_max, queued_max)
        self._move = move
        self._queue: queue.Queue[FollowAsked | None] = queue.Queue(queued_max)
        self._stopping = threading.Event()
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

    def _work(self) -> None:
        while not self._stopping.is_set():
            asked = self._queue.get()
            if asked is None or self._stopping.is_set():
                return
            self._move(asked)
