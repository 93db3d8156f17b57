"""The actor base of the switch: pykka's threading actor with a cheaper mailbox."""

from __future__ import annotations

import queue
from typing import Any

import pykka


class SwitchActor(pykka.ThreadingActor):
    """A pykka threading actor whose mailbox is `queue.SimpleQueue`.

    pykka's default mailbox is `queue.Queue`: a lock and three conditions, taken on every put and
    get. The mailbox is unbounded either way (admission control at the gRPC edge keeps it short),
    and pykka uses only put, get and empty, which SimpleQueue does in C.
    """

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()
