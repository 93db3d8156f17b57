"""Posting to an actor: the answer settles a Reply; an actor that stops first fails it, never drops it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka
import pytest

from actors.base import (
    Mailbox,
    SwitchActor,
    keep_waits_off_this_thread,
    let_waits_on_this_thread,
    post,
    stop_if_idle,
)
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
    _post_when_idle(ref, "block", first)  # handled on another thread, which it blocks
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


def _post_when_idle(ref: pykka.ActorRef[Any], message: str, reply: Reply) -> None:
    """Post from a thread of its own, and return once the actor has the message in hand."""
    threading.Thread(target=post, args=(ref, message, reply)).start()
    mailbox = ref.actor_inbox
    assert isinstance(mailbox, Mailbox)
    while mailbox.claim_is_free():
        threading.Event().wait(0.001)


class Counter(SwitchActor):
    """Counts with a read, a pause and a write: two handlers at once would lose counts."""

    def __init__(self, started: threading.Event | None = None) -> None:
        super().__init__()
        self.count = 0
        self.threads: set[int] = set()
        self.ready = False
        self.started = started
        self.inside = 0
        self.inside_max = 0

    def on_start(self) -> None:
        if self.started is not None:
            self.started.wait(5)
        self.ready = True

    def on_receive(self, message: Any) -> Any:
        assert self.ready, "a message was handled before on_start finished"
        self.inside += 1
        self.inside_max = max(self.inside_max, self.inside)
        self.threads.add(threading.get_ident())
        seen = self.count
        threading.Event().wait(0.0001 if message == "slow" else 0)
        self.count = seen + 1
        self.inside -= 1
        return outcome(str(self.count))


def test_an_idle_actor_handles_a_posted_message_on_the_senders_thread() -> None:
    ref = Counter.start()
    actor = ref._actor_weakref()
    assert actor is not None
    try:
        warm = Reply()
        post(ref, "warm", warm)  # queued behind on_start, so answered once on_start has run
        assert warm.wait(5).transaction_id == "1"
        reply = Reply()
        post(ref, "t", reply)
        assert reply.done(), "the idle actor answered before post returned"
        assert reply.wait(0).transaction_id == "2"
        assert threading.get_ident() in actor.threads
    finally:
        ref.stop()


def test_no_message_is_handled_before_on_start_finishes() -> None:
    started = threading.Event()
    ref = Counter.start(started)
    try:
        first, second = Reply(), Reply()
        _post_when_idle(ref, "a", first)  # its sender runs on_start, which waits for `started`
        post(ref, "b", second)  # queued: the actor is claimed
        assert not first.done() and not second.done()
        started.set()
        answers = sorted(reply.wait(5).transaction_id for reply in (first, second))
        assert answers == ["1", "2"], "both handled after on_start (a handler asserts it)"
    finally:
        ref.stop()


def test_an_actor_gets_a_thread_only_when_a_message_has_to_wait() -> None:
    gate = threading.Event()
    ref = Echo.start(gate)
    mailbox = ref.actor_inbox
    assert isinstance(mailbox, Mailbox)
    try:
        for index in range(3):
            reply = Reply()
            post(ref, f"t{index}", reply)
            assert reply.wait(0).transaction_id == f"t{index}"
        assert not mailbox.has_thread(), "every message ran on the sender's thread"
        blocked, queued = Reply(), Reply()
        _post_when_idle(ref, "block", blocked)
        post(ref, "t3", queued)
        assert mailbox.has_thread()
        gate.set()
        assert queued.wait(5).transaction_id == "t3"
    finally:
        ref.stop()


def test_an_idle_actor_without_a_thread_is_stopped_without_one() -> None:
    ref = Counter.start()
    actor = ref._actor_weakref()
    assert actor is not None
    reply = Reply()
    post(ref, "t", reply)
    assert reply.wait(0).transaction_id == "1"
    assert stop_if_idle(ref)
    assert not ref.is_alive()
    mailbox = ref.actor_inbox
    assert isinstance(mailbox, Mailbox) and not mailbox.has_thread()
    late = Reply()
    post(ref, "t", late)
    assert late.failed


def test_many_senders_never_run_two_handlers_of_one_actor_at_once() -> None:
    ref = Counter.start()
    actor = ref._actor_weakref()
    assert actor is not None

    def send(index: int) -> int:
        reply = Reply()
        post(ref, "slow" if index % 3 else "fast", reply)
        return int(reply.wait(5).transaction_id)

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = sorted(pool.map(send, range(3_000)))
        assert answers == list(range(1, 3_001)), "every count once: no handler overlapped another"
        assert actor.inside_max == 1
        assert len(actor.threads) > 1, "some messages ran on senders' threads, some on the actor's"
    finally:
        ref.stop()


def test_one_senders_messages_are_handled_in_the_order_sent() -> None:
    gate = threading.Event()
    ref = Echo.start(gate)
    try:
        blocked = Reply()
        _post_when_idle(ref, "block", blocked)
        replies = [Reply() for _ in range(20)]
        for index, reply in enumerate(replies):
            post(ref, f"o{index}", reply)
        assert not any(reply.done() for reply in replies), "all queued behind the blocked message"
        order: list[str] = []
        for reply in replies:
            reply.add_done_callback(lambda settled: order.append(settled.wait(0).transaction_id))
        gate.set()
        for reply in replies:
            reply.wait(5)
        assert order == [f"o{index}" for index in range(20)]
    finally:
        ref.stop()


def test_asking_a_stopped_actor_through_the_registry_reaches_its_successor() -> None:
    registry: ActorRegistry[str] = ActorRegistry(
        "counter", lambda _key: Counter.start(), live_max=1, idle_s=0.0, stop_timeout_s=5.0
    )
    try:
        assert registry.ask("a", "x", 5).transaction_id == "1"
        assert registry.ask("b", "x", 5).transaction_id == "1"  # live_max 1: a's actor stops for b's
        assert registry.ask("a", "x", 5).transaction_id == "1", "a new actor for a, not the stopped one"
    finally:
        registry.stop_all()


class Reads(SwitchActor):
    """An actor that would read before its first message, and says on which thread it handled each."""

    def would_wait(self, message: Any) -> bool:
        return not self._started

    def on_receive(self, message: Any) -> Any:
        return outcome(threading.current_thread().name)


def handled_on(ref: pykka.ActorRef[Any]) -> str:
    reply = Reply()
    post(ref, "where", reply)
    return reply.wait(5).transaction_id


def test_an_actor_that_would_wait_is_not_run_on_a_thread_that_must_not_wait() -> None:
    ref = Reads.start()
    keep_waits_off_this_thread()
    try:
        first = handled_on(ref)
        assert first != threading.current_thread().name, "the read ran on the loop's thread"
        second = handled_on(ref)  # started now: nothing to read, so handled here at once
        assert second == threading.current_thread().name
    finally:
        let_waits_on_this_thread()
        ref.stop()


def test_other_threads_handle_an_actor_that_would_wait_themselves() -> None:
    ref = Reads.start()
    try:
        assert handled_on(ref) == threading.current_thread().name
    finally:
        ref.stop()
