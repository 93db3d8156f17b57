"""Reply: the answer to one transaction, set once by whoever finishes it, awaited by the servicer."""

from __future__ import annotations

import threading
from collections.abc import Callable

from switch.domain.transactions import Outcome


class ReplyTimeoutError(TimeoutError):
    """The outcome was not known in time; the terminal must ask TransactionStatus."""


class Reply:
    __slots__ = ("_callbacks", "_event", "_lock", "_outcome")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._outcome: Outcome | None = None
        self._callbacks: list[Callable[[Outcome], None]] = []
        self._lock = threading.Lock()

    @classmethod
    def of(cls, outcome: Outcome) -> Reply:
        reply = cls()
        reply.set(outcome)
        return reply

    def set(self, outcome: Outcome) -> None:
        with self._lock:
            assert self._outcome is None, "a reply is set once"
            self._outcome = outcome
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        for callback in callbacks:
            callback(outcome)

    def add_done_callback(self, callback: Callable[[Outcome], None]) -> None:
        with self._lock:
            if self._outcome is None:
                self._callbacks.append(callback)
                return
            outcome = self._outcome
        callback(outcome)

    def done(self) -> bool:
        return self._event.is_set()

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def wait(self, timeout_s: float) -> Outcome:
        if not self._event.wait(timeout_s):
            raise ReplyTimeoutError(f"no outcome within {timeout_s} s")
        assert self._outcome is not None
        return self._outcome
