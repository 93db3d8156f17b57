"""The actor base of the switch: pykka's threading actor with a cheaper mailbox, and posting to it."""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pykka
from pykka._envelope import Envelope  # pykka is pinned; post() is tested against its actor loop

from actors.reply import Reply

log = logging.getLogger(__name__)

# Actor names: unique within the process, as pykka's uuid4 names are (pykka only shows them).
_ACTOR_NUMBERS = itertools.count(1)


class Mailbox:
    """An actor's inbox, and the right to handle a message on the sender's thread when it is idle.

    `pending` counts the messages put and not yet handled. When none are, a sender may claim the
    actor and handle its message at once (`run_now`) instead of waking the actor's thread and
    sleeping until it answers. Every handling, on either thread, holds `turn`, so the actor still
    does one thing at a time; and a message put while the actor is claimed waits in the queue
    behind the one running, so what one sender sends is handled in the order it was sent. pykka
    uses only put, get and empty.
    """

    __slots__ = ("__weakref__", "_actor", "_lock", "_pending", "_queue", "_start_thread", "turn")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Envelope[Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._actor: weakref.ref[SwitchActor] | None = None
        # The actor's thread, started by the first message that has to wait in the queue: an actor
        # whose every message is handled on its senders' threads never costs a thread.
        self._start_thread: Callable[[], None] | None = None
        self.turn = threading.Lock()

    def put(self, envelope: Envelope[Any]) -> None:
        with self._lock:
            self._pending += 1
            start, self._start_thread = self._start_thread, None
        self._queue.put(envelope)
        if start is not None:
            start()

    def has_thread(self) -> bool:
        with self._lock:
            return self._start_thread is None

    def get(self) -> Envelope[Any]:
        return self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()

    def claim(self) -> SwitchActor | None:
        """The actor, claimed for one message on this thread, if nothing else is pending."""
        with self._lock:
            if self._pending:
                return None
            self._pending = 1
        actor = self._actor() if self._actor is not None else None
        if actor is None:  # collected: it had stopped, and nothing holds it any more
            self.done()
            raise pykka.ActorDeadError("the actor has stopped")
        return actor

    def claim_is_free(self) -> bool:
        """Whether nothing is pending, so a sender could claim the actor now."""
        with self._lock:
            return self._pending == 0

    def done(self) -> None:
        with self._lock:
            self._pending -= 1
            assert self._pending >= 0


class SwitchActor(pykka.ThreadingActor):
    """A pykka threading actor whose mailbox is a `Mailbox` around `queue.SimpleQueue`.

    pykka's default mailbox is `queue.Queue`: a lock and three conditions, taken on every put and
    get. The mailbox is unbounded either way (admission control at the gRPC edge keeps it short).

    The actor's thread starts with the first message that has to wait for it; on_start runs before
    the first message, on whichever thread handles that.
    """

    actor_inbox: Mailbox

    def __init__(self) -> None:
        # What pykka's Actor.__init__ sets, but named from a counter: pykka names each actor with
        # uuid4(), whose os.urandom lets go of the interpreter lock and then waits to get it back
        # behind the other threads. A card actor starts on the event loop's thread for most cards'
        # first request, and that wait was 3.6 % of the loop's lock samples (session 25).
        # tests/actors/test_actor_naming.py checks this sets what pykka's own __init__ sets.
        self.actor_urn = f"urn:txswitch:actor:{next(_ACTOR_NUMBERS)}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = threading.Event()
        self._actor_ref = pykka.ActorRef(self)
        self.actor_inbox._actor = weakref.ref(self)
        self._started = False  # on_start has run; read and written holding the turn

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        return Mailbox()

    def _start_actor_loop(self) -> None:
        self.actor_inbox._start_thread = super()._start_actor_loop

    def _actor_loop_setup(self) -> None:
        with self.actor_inbox.turn:
            self._start_once()

    def _start_once(self) -> None:
        """on_start, if it has not run yet; the caller holds the turn."""
        if not self._started:
            self._started = True
            super()._actor_loop_setup()

    def _handle_receive(self, message: Any) -> Any:
        try:
            with self.actor_inbox.turn:
                return super()._handle_receive(message)
        finally:
            self.actor_inbox.done()

    def would_wait(self, message: Any) -> bool:
        """Whether handling message would wait: to read the database (to start, to refresh a copy
        another node may have changed), or for a reply still on its way. Asked holding the claim
        and the turn; by default, no."""
        return False

    def _receive_claimed(self, message: Any) -> Any:
        """Handle message on the caller's thread; the caller holds the claim and the turn."""
        self._start_once()
        if self.actor_stopped.is_set():  # stopped, or on_start failed
            raise pykka.ActorDeadError(f"{self.actor_ref} not found")
        return super()._handle_receive(message)


_NOT_RUN = object()


def stop_if_idle(ref: pykka.ActorRef[Any]) -> bool:
    """Stop an idle actor that has no thread on this thread (no thread is started just to stop it).

    False if the actor is busy or has a thread: stop it the usual way then.
    """
    mailbox = ref.actor_inbox
    if not isinstance(mailbox, Mailbox) or mailbox.has_thread():
        return False
    try:
        actor = mailbox.claim()
    except pykka.ActorDeadError:
        return True  # stopped before, and gone
    if actor is None:
        return False
    try:
        with mailbox.turn:
            if not mailbox.has_thread() and not actor.actor_stopped.is_set():
                actor._start_once()
                if not actor.actor_stopped.is_set():
                    actor._stop()
            return actor.actor_stopped.is_set()
    finally:
        mailbox.done()


# Threads that must not wait for the database or for another reply: an event loop's. An actor that
# would wait to handle a message is not run on them (`SwitchActor.would_wait`).
_NO_WAITING_THREADS: set[int] = set()


def keep_waits_off_this_thread() -> None:
    """Called on an event loop's thread: a message whose actor would wait to handle it (for the
    database, or for a reply still on its way) goes to the actor's own thread instead of being
    handled here, so the loop never waits for either."""
    _NO_WAITING_THREADS.add(threading.get_ident())


def let_waits_on_this_thread() -> None:
    _NO_WAITING_THREADS.discard(threading.get_ident())


def run_now(ref: pykka.ActorRef[Any], message: object) -> Any:
    """What the actor returns for message, handled on this thread if the actor is idle.

    Returns _NOT_RUN if it is not idle, or if it would wait to handle message and this thread must
    not wait (the caller queues the message instead). Raises what the handler
    raises, and ActorDeadError if the actor has stopped.
    """
    mailbox = ref.actor_inbox
    if not isinstance(mailbox, Mailbox):
        return _NOT_RUN
    actor = mailbox.claim()
    if actor is None:
        return _NOT_RUN
    try:
        with mailbox.turn:
            must_not_wait = _NO_WAITING_THREADS and threading.get_ident() in _NO_WAITING_THREADS
            if must_not_wait and actor.would_wait(message):
                return _NOT_RUN
            return actor._receive_claimed(message)
    finally:
        mailbox.done()


class ReplyTo(pykka.Future[Any]):
    """The actor's answer goes straight into a Reply; nobody blocks on this future.

    An answer that is itself a Reply (a write still on its way to the journal) is forwarded once it
    settles. An actor that stops before handling the message fails the reply with ActorDeadError,
    so whoever waits on it can try the actor's successor.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self._reply = reply

    def set(self, value: Any = None) -> None:
        if isinstance(value, Reply):
            value.forward_to(self._reply)
        else:
            self._reply.set(value)

    def set_exception(self, exc_info: Any = None) -> None:
        error = (exc_info or sys.exc_info())[1]
        assert error is not None
        self._reply.fail(error)

    def get(self, timeout: float | None = None) -> Any:
        raise TypeError("a ReplyTo is settled into its Reply; wait on that instead")


def post(ref: pykka.ActorRef[Any], message: object, reply: Reply) -> None:
    """Send message; what the actor returns for it settles reply. Nobody waits for the actor.

    An idle actor handles it at once on this thread; a busy one gets it in its mailbox. Either
    way it is one hand-off at most instead of an ask's round trip.
    """
    if not ref.is_alive():
        reply.fail(pykka.ActorDeadError(f"{ref} not found"))
        return
    reply_to = ReplyTo(reply)
    try:
        answer = run_now(ref, message)
    except Exception as error:  # as the actor loop does: the error is the answer
        log.info("exception returned from %s to caller", ref, exc_info=True)
        reply_to.set_exception((type(error), error, error.__traceback__))
        return
    if answer is _NOT_RUN:
        ref.actor_inbox.put(Envelope(message, reply_to=reply_to))
    else:
        reply_to.set(answer)


def ask(ref: pykka.ActorRef[Any], message: object, timeout_s: float | None) -> Any:
    """pykka's ask, handled on this thread if the actor is idle; None waits as long as it takes."""
    if not ref.is_alive():
        raise pykka.ActorDeadError(f"{ref} not found")
    answer = run_now(ref, message)
    if answer is _NOT_RUN:
        return ref.ask(message, timeout=timeout_s)
    return answer
