"""FollowWorkers: moves of money following a replaced card made by a bounded number of threads
from a bounded queue; a full or stopping queue says so rather than waiting or starting a thread."""

from __future__ import annotations

import threading
import time

import pytest

from switch.follow_workers import FollowAsked, FollowWorkers, FollowWorkersStatistics

WAIT_S = 5.0


def asked(index: int) -> FollowAsked:
    return FollowAsked(f"card_{index}", f"start:card_{index}:1", "start")


def test_moves_are_made_once_each_on_no_more_threads_than_the_limit() -> None:
    made: list[FollowAsked] = []
    threads: set[int] = set()
    lock, done = threading.Lock(), threading.Event()

    def move(one: FollowAsked) -> None:
        with lock:
            made.append(one)
            threads.add(threading.get_ident())
            if len(made) == 50:
                done.set()

    workers = FollowWorkers(move, workers_max=3, queued_max=5)
    workers.start()
    try:
        assert workers.ask_backlog([asked(index) for index in range(50)])  # more than the queue holds
        assert done.wait(WAIT_S)
        assert sorted(made, key=lambda one: int(one.card_id[5:])) == [asked(index) for index in range(50)]
        assert len(threads) <= 3
    finally:
        workers.stop()


def test_a_full_queue_refuses_at_once_and_a_stopped_one_always() -> None:
    release = threading.Event()
    moving = threading.Event()

    def move(_one: FollowAsked) -> None:
        moving.set()
        release.wait(WAIT_S)

    workers = FollowWorkers(move, workers_max=1, queued_max=2)
    workers.start()
    try:
        assert workers.ask_nowait(asked(0))
        assert moving.wait(WAIT_S)  # the one worker is busy with it
        assert workers.ask_nowait(asked(1)) and workers.ask_nowait(asked(2))
        assert not workers.ask_nowait(asked(3))  # full: a card actor's thread never waits
    finally:
        workers.stop()
        release.set()
    assert not workers.ask_nowait(asked(4))
    assert not workers.ask_backlog([asked(5)])  # stopping: a start's sweep is refused too


def test_a_stop_ends_idle_workers() -> None:
    workers = FollowWorkers(lambda _one: None, workers_max=2, queued_max=4)
    workers.start()
    workers.stop()
    for worker in workers._workers:
        worker.join(WAIT_S)
        assert not worker.is_alive()


def test_a_stop_ends_idle_workers_more_than_the_queue_holds() -> None:
    """Four idle workers behind a queue of one: a stop could wake only as many as the queue held."""
    workers = FollowWorkers(lambda _one: None, workers_max=4, queued_max=1)
    workers.start()
    workers.stop()
    for worker in workers._workers:
        worker.join(WAIT_S)
        assert not worker.is_alive()


def test_a_move_asked_later_waits_for_its_time_off_the_worker_and_the_waiting_are_bounded() -> None:
    made: list[tuple[str, float]] = []
    done = threading.Event()

    def move(one: FollowAsked) -> None:
        made.append((one.card_id, time.monotonic()))
        if len(made) == 2:
            done.set()

    workers = FollowWorkers(move, workers_max=1, queued_max=1)
    workers.start()
    try:
        asked_at_s = time.monotonic()
        assert workers.ask_later(asked(0), asked_at_s + 0.5)
        assert not workers.ask_later(asked(1), asked_at_s)  # one waits already: the bound
        assert workers.ask_nowait(asked(2))
        assert done.wait(WAIT_S)
        (first, first_at_s), (later, later_at_s) = made
        assert (first, later) == ("card_2", "card_0")  # the one worker served the queue meanwhile
        assert first_at_s - asked_at_s < 0.5 <= later_at_s - asked_at_s
    finally:
        workers.stop()
    assert not workers.ask_later(asked(3), 0.0)


def test_moves_asked_later_and_always_due_do_not_starve_the_queue() -> None:
    """Many follows waiting for replacements are looked at again and again; a new credit's follow,
    queued, is made before their next looks, not after all of them."""
    looks_max = 2_000
    looks: list[int] = []
    queued_made = threading.Event()
    workers: FollowWorkers

    def move(one: FollowAsked) -> None:
        if one.card_id == "card_queued":
            queued_made.set()
        elif one.looks < looks_max:  # still lost, not replaced: due again at once
            looks.append(one.looks)
            workers.ask_later(FollowAsked(one.card_id, one.because, one.when, one.looks + 1), 0.0)

    workers = FollowWorkers(move, workers_max=1, queued_max=10)
    workers.start()
    try:
        for index in range(5):
            assert workers.ask_later(asked(index), 0.0)
        deadline_s = time.monotonic() + WAIT_S
        while not looks and time.monotonic() < deadline_s:  # the worker busy with the waiting ones
            time.sleep(0.01)
        assert workers.ask_nowait(FollowAsked("card_queued", "credit:queued", "credit"))
        assert queued_made.wait(WAIT_S)
        assert len(looks) < 5 * looks_max, "the queued move was made only after every look"
    finally:
        workers.stop()


# An idle worker and a move asked later: (moves waiting already, due in s from now; the new one's due
# in s). Before, an idle worker looked for due moves every 0.5 s, so each was made up to 0.5 s late.
ON_TIME_CASES: list[tuple[str, list[float], float]] = [
    ("none waiting", [], 0.05),
    ("one waiting, due after it", [30.0], 0.05),
    ("one waiting, due before it", [0.1], 0.12),
]
LATE_S_MAX = 0.2  # above a loaded machine's wake-up delay, below the old poll's 0.5 s


@pytest.mark.parametrize(
    ("case", "waiting_due_s", "due_s"), ON_TIME_CASES, ids=[row[0] for row in ON_TIME_CASES]
)
def test_a_move_asked_later_is_made_when_it_falls_due_not_at_the_next_poll(
    case: str, waiting_due_s: list[float], due_s: float
) -> None:
    made_at_s: dict[str, float] = {}
    done = threading.Event()

    def move(one: FollowAsked) -> None:
        made_at_s[one.card_id] = time.monotonic()
        if one.card_id == "card_new":
            done.set()

    workers = FollowWorkers(move, workers_max=2, queued_max=4)
    workers.start()
    try:
        time.sleep(0.05)  # both workers idle, waiting
        for index, due_in_s in enumerate(waiting_due_s):
            assert workers.ask_later(asked(index), time.monotonic() + due_in_s)
        time.sleep(0.05)
        not_before_s = time.monotonic() + due_s
        assert workers.ask_later(FollowAsked("card_new", "credit:new", "credit"), not_before_s)
        assert done.wait(WAIT_S)
    finally:
        workers.stop()
    assert 0 <= made_at_s["card_new"] - not_before_s < LATE_S_MAX, case


def test_a_stop_hands_back_the_moves_queued_and_asked_later_and_none_is_made_after() -> None:
    """Audit session 26: the moves a stop left were dropped unseen; the caller now counts them."""
    made: list[FollowAsked] = []
    busy, release = threading.Event(), threading.Event()

    def move(one: FollowAsked) -> None:
        busy.set()
        release.wait(WAIT_S)
        made.append(one)

    workers = FollowWorkers(move, workers_max=1, queued_max=5)
    workers.start()
    assert workers.ask_nowait(asked(0))
    assert busy.wait(WAIT_S)  # the only worker makes move 0
    assert workers.ask_nowait(asked(1)) and workers.ask_nowait(asked(2))
    assert workers.ask_later(asked(3), time.monotonic() + 60)
    assert workers.ask_backlog([asked(4)])
    assert workers.statistics() == FollowWorkersStatistics(queued=2, asked_later=1, backlog=1)
    left = workers.stop()
    release.set()
    assert left == [asked(1), asked(2), asked(3), asked(4)]
    assert workers.statistics() == FollowWorkersStatistics(queued=0, asked_later=0, backlog=0)
    assert not workers.ask_backlog([asked(5)])
    time.sleep(0.2)
    assert made == [asked(0)]  # the move under way ends; none of those left is made


def test_a_backlog_is_made_after_the_queue_without_its_caller_waiting() -> None:
    made: list[FollowAsked] = []
    busy, release, done = threading.Event(), threading.Event(), threading.Event()

    def move(one: FollowAsked) -> None:
        busy.set()
        release.wait(WAIT_S)
        made.append(one)
        if len(made) == 4:
            done.set()

    workers = FollowWorkers(move, workers_max=1, queued_max=1)
    workers.start()
    try:
        assert workers.ask_nowait(asked(0))
        assert busy.wait(WAIT_S)
        started = time.monotonic()
        assert workers.ask_backlog([asked(1), asked(2)])  # more than the queue holds: no wait
        assert time.monotonic() - started < 1.0
        assert workers.ask_nowait(asked(3))  # a new credit's move: before the backlog
        release.set()
        assert done.wait(WAIT_S)
        assert made == [asked(0), asked(3), asked(1), asked(2)]
    finally:
        workers.stop()
