"""Reply awaited on an asyncio loop: every waiter wakes with its own outcome, whoever settles it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from actors.reply import Reply, ReplyTimeoutError, settled
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import Outcome, TransactionType


def _outcome(transaction_id: str) -> Outcome:
    return Outcome(transaction_id, TransactionType.redemption, ResponseCode.unknown_card)


def _set_each(replies: list[Reply], transaction_ids: list[str]) -> None:
    for reply, transaction_id in zip(replies, transaction_ids, strict=True):
        reply.set(_outcome(transaction_id))


def test_a_burst_of_replies_settled_by_another_thread_wakes_each_waiter_with_its_own_outcome() -> None:
    async def main() -> list[str]:
        replies = [Reply() for _ in range(200)]
        waiting = [asyncio.ensure_future(settled(reply, 5.0)) for reply in replies]
        await asyncio.sleep(0)  # every waiter has registered its wake-up
        settler = threading.Thread(target=_set_each, args=(replies, [f"t{i}" for i in range(200)]))
        settler.start()
        outcomes = await asyncio.gather(*waiting)
        settler.join()
        return [outcome.transaction_id for outcome in outcomes]

    assert asyncio.run(main()) == [f"t{i}" for i in range(200)]


def test_a_reply_failed_by_another_thread_raises_in_its_waiter() -> None:
    async def main() -> None:
        reply = Reply()
        waiting = asyncio.ensure_future(settled(reply, 5.0))
        await asyncio.sleep(0)
        threading.Thread(target=lambda: reply.fail(ValueError("the journal failed"))).start()
        with pytest.raises(ValueError, match="the journal failed"):
            await waiting

    asyncio.run(main())


def test_a_waiter_that_timed_out_does_not_keep_later_waiters_asleep() -> None:
    async def main() -> str:
        late = Reply()
        with pytest.raises(ReplyTimeoutError):
            await settled(late, 0.01)
        on_time = Reply()
        waiting = asyncio.ensure_future(settled(on_time, 5.0))
        await asyncio.sleep(0)
        settler = threading.Thread(target=_set_each, args=([late, on_time], ["late", "on time"]))
        settler.start()
        outcome = await waiting
        settler.join()
        return str(outcome.transaction_id)

    assert asyncio.run(main()) == "on time"


def test_waiters_on_two_loops_are_each_woken_on_their_own_loop() -> None:
    replies = [Reply(), Reply()]
    results: list[str] = []
    ready = threading.Barrier(3)

    def wait_on_own_loop(reply: Reply) -> None:
        async def main() -> None:
            waiting = asyncio.ensure_future(settled(reply, 5.0))
            await asyncio.sleep(0)
            ready.wait()
            results.append((await waiting).transaction_id)

        asyncio.run(main())

    threads = [threading.Thread(target=wait_on_own_loop, args=(reply,)) for reply in replies]
    for thread in threads:
        thread.start()
    ready.wait()
    replies[0].set(_outcome("first"))
    replies[1].set(_outcome("second"))
    for thread in threads:
        thread.join(5.0)
    assert sorted(results) == ["first", "second"]


def test_threads_blocked_on_a_reply_are_woken_by_its_outcome() -> None:
    reply = Reply()
    seen: list[str] = []
    started = threading.Barrier(4)

    def wait() -> None:
        started.wait()
        seen.append(str(reply.wait(5.0).transaction_id))

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    started.wait()
    reply.set(_outcome("t1"))
    for waiter in waiters:
        waiter.join(10)
    assert seen == ["t1"] * 3


def test_a_thread_waits_out_its_timeout_and_a_settled_reply_does_not_wait() -> None:
    reply = Reply()
    with pytest.raises(ReplyTimeoutError):
        reply.wait(0.01)
    reply.set(_outcome("t2"))
    assert reply.wait(0).transaction_id == "t2"
    with pytest.raises(AssertionError, match="settled once"):
        reply.set(_outcome("t3"))


def test_replies_awaited_on_the_loop_build_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[threading.Event] = []

    class CountedEvent(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            built.append(self)

    async def main() -> None:
        replies = [Reply() for _ in range(50)]
        settler = threading.Thread(target=_set_each, args=(replies, [f"t{i}" for i in range(50)]))
        monkeypatch.setattr(threading, "Event", CountedEvent)  # after the thread has built its own
        waiting = [asyncio.ensure_future(settled(reply, 5.0)) for reply in replies]
        await asyncio.sleep(0)
        settler.start()
        await asyncio.gather(*waiting)
        settler.join()
        assert await settled(Reply.of(_outcome("ready")), 5.0) is not None

    asyncio.run(main())
    assert built == []
    with pytest.raises(ReplyTimeoutError):
        Reply().settle(0.001)  # a thread that blocks: now, and only now, an Event
    assert len(built) == 1
