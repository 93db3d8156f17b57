"""The actor base of the switch: pykka's threading actor with a cheaper mailbox, and posting to it."""

from __future__ import annotations

import queue
import sys
from typing import Any

import pykka
from pykka._envelope import Envelope  # pykka is pinned; post() is tested against its actor loop

from actors.reply import Reply


class SwitchActor(pykka.ThreadingActor):
    """A pykka threading actor whose mailbox is `queue.SimpleQueue`.

    pykka's default mailbox is `queue.Queue`: a lock and three conditions, taken on every put and
    get. The mailbox is unbounded either way (admission control at the gRPC edge keeps it short),
    and pykka uses only put, get and empty, which SimpleQueue does in C.
    """

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()


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

    This is pykka's ask without a future to block on: one hand-off to the actor instead of a round
    trip, and the caller's thread is free until the answer is needed.
    """
    if not ref.is_alive():
        reply.fail(pykka.ActorDeadError(f"{ref} not found"))
        return
    ref.actor_inbox.put(Envelope(message, reply_to=ReplyTo(reply)))
