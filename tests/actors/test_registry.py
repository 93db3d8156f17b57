"""The actor registry: never two live actors for one key, even when passivation races with requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pykka

from actors.base import SwitchActor
from actors.registry import ActorRegistry
from actors.reply import Reply
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import TransactionType, declined


class Probe(pykka.ThreadingActor):
    """Counts how many actors for a key are alive at once."""

    live: dict[str, int] = {}
    live_max: dict[str, int] = {}
    lock = threading.Lock()

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def on_start(self) -> None:
        with Probe.lock:
            Probe.live[self.key] = Probe.live.get(self.key, 0) + 1
            Probe.live_max[self.key] = max(Probe.live_max.get(self.key, 0), Probe.live[self.key])

    def on_stop(self) -> None:
        time.sleep(0.002)  # a slow stop widens the race window
        with Probe.lock:
            Probe.live[self.key] -= 1

    def on_receive(self, message: Any) -> Any:
        return (self.key, message)


def test_passivation_racing_requests_never_leaves_two_live_actors() -> None:
    registry: ActorRegistry[str] = ActorRegistry(
        "probe", Probe.start, live_max=3, idle_s=0.0, stop_timeout_s=5.0
    )
    keys = [f"k{index}" for index in range(5)]
    stop = threading.Event()

    def reaper() -> None:
        while not stop.is_set():
            registry.reap()

    reaping = threading.Thread(target=reaper)
    reaping.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda i: registry.ask(keys[i % 5], i, timeout_s=5.0), range(2_000)))
    finally:
        stop.set()
        reaping.join()
        registry.stop_all()
    assert answers == [(keys[i % 5], i) for i in range(2_000)]
    assert max(Probe.live_max.values()) == 1
    assert all(count == 0 for count in Probe.live.values())
    assert registry.statistics().passivated > 0


def test_live_count_is_bounded() -> None:
    registry: ActorRegistry[str] = ActorRegistry(
        "probe", Probe.start, live_max=4, idle_s=60.0, stop_timeout_s=5.0
    )
    try:
        for index in range(20):
            registry.ask(f"bound{index}", "hello", timeout_s=5.0)
            stats = registry.statistics()
            assert stats.live <= 4
    finally:
        registry.stop_all()


class Recorder(SwitchActor):
    """Answers each message with an outcome named after it, and remembers the order it saw them in."""

    seen: list[str] = []

    def on_receive(self, message: Any) -> Any:
        Recorder.seen.append(message)
        return declined(message, TransactionType.redemption, ResponseCode.exceeds_balance)


def recorder_registry() -> ActorRegistry[str]:
    Recorder.seen = []
    return ActorRegistry("recorder", lambda _key: Recorder.start(), live_max=10, idle_s=60, stop_timeout_s=5)


def test_overlapping_exclusive_blocks_keep_the_key_fenced_until_the_last_ends() -> None:
    registry = recorder_registry()
    first_in, second_in, first_may_end = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with registry.exclusive("card"):
            first_in.set()
            first_may_end.wait(5)

    def second() -> None:
        with registry.exclusive("card"):
            second_in.set()
            time.sleep(0.2)  # the first block ends meanwhile
            assert not registry.is_live("card"), "an actor started while a block was still on"

    try:
        with ThreadPoolExecutor(3) as pool:
            ended = [pool.submit(first)]
            first_in.wait(5)
            ended.append(pool.submit(second))
            second_in.wait(5)
            asked = pool.submit(registry.ask, "card", "asked", 5)  # waits while the key is fenced
            first_may_end.set()
            for future in ended:
                future.result()
            assert asked.result().transaction_id == "asked"
    finally:
        registry.stop_all()


def test_a_post_to_a_fenced_key_does_not_wait_and_is_delivered_in_order_after_the_block() -> None:
    registry = recorder_registry()
    replies = [Reply() for _ in range(3)]
    try:
        with registry.exclusive("card"):
            started = time.monotonic()
            for index, reply in enumerate(replies):
                registry.post("card", f"m{index}", reply)
            assert time.monotonic() - started < 0.05, "post waited for the block"
            assert not any(reply.done() for reply in replies)
        for reply in replies:
            reply.wait(5)
        assert Recorder.seen == ["m0", "m1", "m2"]
    finally:
        registry.stop_all()


class _SlowInbox:
    """A mailbox whose size takes as long as the test says: a scrape over many live actors."""

    def __init__(self, inbox: Any, measuring: threading.Event, release: threading.Event) -> None:
        self._inbox, self._measuring, self._release = inbox, measuring, release

    def qsize(self) -> int:
        self._measuring.set()
        assert self._release.wait(10)
        return int(self._inbox.qsize())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbox, name)


def test_measuring_mailboxes_for_a_scrape_does_not_hold_up_requests() -> None:
    """Session 23 audit: statistics() measured every live actor's mailbox under the lock every
    request takes (about 30 ms at 20,000 card actors, at every scrape)."""
    registry: ActorRegistry[str] = ActorRegistry(
        "probe", Probe.start, live_max=10, idle_s=60.0, stop_timeout_s=5.0
    )
    measuring, release = threading.Event(), threading.Event()
    try:
        assert registry.ask("slow", "hello", timeout_s=5.0) == ("slow", "hello")
        (ref,) = registry.live_refs()
        ref.actor_inbox = _SlowInbox(ref.actor_inbox, measuring, release)
        scrape = threading.Thread(target=registry.statistics)
        scrape.start()
        assert measuring.wait(10)
        asked = ThreadPoolExecutor(max_workers=1).submit(registry.ask, "other", "hello", 5.0)
        answered = asked.exception(timeout=2) is None and asked.result() == ("other", "hello")
        release.set()
        scrape.join(10)
        assert answered, "a request waited for a scrape's mailbox sizes"
        stats = registry.statistics()
        assert (stats.live, stats.mailbox_depth_max) == (2, 0)
    finally:
        release.set()
        registry.stop_all()
