"""Reply: the answer to one transaction, set once by whoever finishes it, awaited by the servicer."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from switch.domain.transactions import Outcome


class ReplyTimeoutError(TimeoutError):
    """The outcome was not known in time; the terminal must ask TransactionStatus."""


class Reply:
    """Set once with an outcome, or failed once with the error that kept the outcome from coming.

    Most replies are awaited on the event loop (`settled`, through a callback) or are settled
    before anyone asks; only a thread that blocks on one (`settle` with a timeout) needs an
    Event, so it is made then, not for every reply: building one (a Condition and two locks) was
    2.5 % of the interpreter lock's time in the switch under load (README, session 18).
    """

    __slots__ = ("_callbacks", "_done", "_error", "_event", "_lock", "_outcome")

    def __init__(self) -> None:
        self._done = False
        self._event: threading.Event | None = None
        self._outcome: Outcome | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Reply], None]] = []
        self._lock = threading.Lock()

    @classmethod
    def of(cls, outcome: Outcome) -> Reply:
        reply = cls()
        reply.set(outcome)
        return reply

    def set(self, outcome: Outcome) -> None:
        self._settle(outcome, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, outcome: Outcome | None, error: BaseException | None) -> None:
        with self._lock:
            assert not self._done, "a reply is settled once"
            self._outcome, self._error = outcome, error
            callbacks, self._callbacks = self._callbacks, []
            self._done = True
            event = self._event
        if event is not None:
            event.set()
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, callback: Callable[[Reply], None]) -> None:
        """callback(reply) once the reply is set or failed; at once if it is already."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def forward_to(self, other: Reply) -> None:
        """Settle `other` the way this reply settles."""

        def forward(reply: Reply) -> None:
            if reply._error is not None:
                other.fail(reply._error)
            else:
                assert reply._outcome is not None
                other.set(reply._outcome)

        self.add_done_callback(forward)

    def done(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    def settle(self, timeout_s: float | None) -> None:
        """Wait until set or failed, whichever; ReplyTimeoutError if neither in time (None: no limit)."""
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout_s):
            raise ReplyTimeoutError(f"no outcome within {timeout_s} s")

    def value(self) -> Any:
        """What the reply was set to, which may be None; raises the failure. Only once settled."""
        assert self._done
        if self._error is not None:
            raise self._error
        return self._outcome

    def wait(self, timeout_s: float | None) -> Outcome:
        """The outcome; raises the failure, or ReplyTimeoutError if neither came in time."""
        self.settle(timeout_s)
        outcome: Outcome | None = self.value()
        assert outcome is not None
        return outcome


async def settled(reply: Reply, timeout_s: float) -> Any:
    """reply's value, awaited on an asyncio loop; the thread that settles it wakes the loop.

    Raises the failure, or ReplyTimeoutError if neither came in time. A reply already settled
    (an actor that answered on the loop's own thread) costs no wake-up at all, and replies settled
    together (a journal batch) share one wake-up (`_LoopWaker`).
    """
    if not reply.done():
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        waker = _waker_of(loop)
        reply.add_done_callback(lambda _: waker.wake(woken))
        try:
            async with asyncio.timeout(timeout_s):
                await woken
        except TimeoutError:
            raise ReplyTimeoutError(f"no outcome within {timeout_s} s") from None
    reply.settle(0)
    return reply.value()


class _LoopWaker:
    """Wakes the futures of one loop from other threads, with one call_soon_threadsafe per burst.

    Each call_soon_threadsafe writes to the loop's self-pipe and may wake it once more. A journal
    batch settles its replies one after another on the writer's thread: the first schedules the
    wake-up, the ones that follow before the loop runs it only join the list.
    """

    __slots__ = ("_due", "_lock", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop is the key of this waker's entry in _wakers
        self._lock = threading.Lock()
        self._due: list[asyncio.Future[None]] = []

    def wake(self, woken: asyncio.Future[None]) -> None:
        with self._lock:
            self._due.append(woken)
            first = len(self._due) == 1
        loop = self._loop()
        if first and loop is not None and not loop.is_closed():  # closed: nobody waits any more
            loop.call_soon_threadsafe(self._wake_due)

    def _wake_due(self) -> None:
        with self._lock:
            due, self._due = self._due, []
        for woken in due:
            if not woken.done():  # a waiter that timed out has cancelled it
                woken.set_result(None)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker_of(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    waker = _wakers.get(loop)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.setdefault(loop, _LoopWaker(loop))
    return waker
