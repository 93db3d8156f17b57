"""Posting to an actor: the answer settles a Reply; an actor that stops first fails it, never drops it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka
import pytest

from actors.base import SwitchActor, post
from actors.registry import ActorRegistry
from actors.reply import Reply
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionType, declined


def outcome(transaction_id: str) -> Outcome:
    return declined(transaction_id, TransactionType.redemption, ResponseCode.exceeds_balance)


class Echo(SwitchActor):
    """Answers a message with its outcome; "later:" answers with a Reply settled by another thread."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            assert self.gate is not None
            self.gate.wait(5)
            return outcome("blocked")
        if message == "boom":
            raise ValueError("handler failed")
        if isinstance(message, str) and message.startswith("later:"):
            reply = Reply()
            threading.Timer(0.01, reply.set, (outcome(message),)).start()
            return reply
        return outcome(message)


def test_the_answer_settles_the_reply() -> None:
    ref = Echo.start()
    try:
        reply = Reply()
        post(ref, "t1", reply)
        assert reply.wait(5).transaction_id == "t1"
    finally:
        ref.stop()


def test_an_answer_that_is_a_reply_is_forwarded_once_it_settles() -> None:
    ref = Echo.start()
    try:
        reply = Reply()
        post(ref, "later:t2", reply)
        assert reply.wait(5).transaction_id == "later:t2"
    finally:
        ref.stop()


def test_a_handler_error_fails_the_reply_with_that_error() -> None:
    ref = Echo.start()
    try:
        reply = Reply()
        post(ref, "boom", reply)
        with pytest.raises(ValueError, match="handler failed"):
            reply.wait(5)
        assert reply.failed and ref.is_alive()
    finally:
        ref.stop()


def test_a_message_left_in_the_mailbox_of_a_stopping_actor_fails_with_actor_dead() -> None:
    gate = threading.Event()
    ref = Echo.start(gate)
    first, left = Reply(), Reply()
    post(ref, "block", first)
    ref.stop(block=False)  # queued behind "block"
    post(ref, "t3", left)  # queued behind the stop: the actor never handles it
    gate.set()
    assert first.wait(5).transaction_id == "blocked"
    with pytest.raises(pykka.ActorDeadError):
        left.wait(5)


def test_posting_to_a_stopped_actor_fails_at_once() -> None:
    ref = Echo.start()
    ref.stop()
    reply = Reply()
    post(ref, "t4", reply)
    assert reply.done() and reply.failed


def test_registry_post_racing_passivation_answers_every_message_exactly_once() -> None:
    """Posted messages either reach an actor or fail with ActorDeadError; a repost then lands."""
    registry: ActorRegistry[str] = ActorRegistry(
        "echo", lambda _key: Echo.start(), live_max=2, idle_s=0.0, stop_timeout_s=5.0
    )
    stop = threading.Event()

    def reaper() -> None:
        while not stop.is_set():
            registry.reap()

    def send(index: int) -> str:
        for _ in range(50):
            reply = Reply()
            registry.post(f"k{index % 5}", f"t{index}", reply)
            try:
                return reply.wait(5).transaction_id
            except pykka.ActorDeadError:
                continue  # its actor stopped before handling it: post again
        raise AssertionError("never answered")

    reaping = threading.Thread(target=reaper)
    reaping.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(send, range(2_000)))
    finally:
        stop.set()
        reaping.join()
        registry.stop_all()
    assert answers == [f"t{index}" for index in range(2_000)]
