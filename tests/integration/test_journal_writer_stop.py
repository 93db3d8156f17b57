"""JournalWriter.stop() while a commit waits on the database longer than stop's timeout:
"commit everything already queued, then end the thread" (its docstring)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from actors.journal_writer import JournalWriter
from switch.store.journal import WriteResult
from tests.integration.journal_world import card_balance, issue, make_world, redemption

STALL_S = 2.0


def test_stop_during_a_stalled_commit_answers_every_queued_write_and_loses_no_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    url = f"sqlite:///{path}"
    engine = make_world(url)
    issue(engine, "card_a", 1_000)
    lost: list[str] = []
    writer = JournalWriter(
        engine, batch_writes_max=1, queue_writes_max=8, database_url=url, on_lost=lost.append
    )
    answers: dict[str, WriteResult] = {}
    answered = {txn: threading.Event() for txn in ("t1", "t2")}

    def done_for(txn: str):  # type: ignore[no-untyped-def]
        def done(result: WriteResult) -> None:
            answers[txn] = result
            answered[txn].set()

        return done

    writer.start()
    # Another connection (an admin action, a checkpoint) holds the write lock for a while.
    holder = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(STALL_S, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        assert writer.submit(redemption("t1", "card_a", 100), done_for("t1"))
        time.sleep(0.2)  # t1 is with the journal process, waiting for the lock
        assert writer.submit(redemption("t2", "card_a", 100), done_for("t2"))  # queued behind it
        writer.stop(timeout_s=0.5)  # a shutdown: both were accepted before it
        for event in answered.values():
            event.wait(STALL_S + 3)
    finally:
        release.join()
        holder.close()
    balance = card_balance(engine, "card_a")
    engine.dispose()
    outcome = {txn: (answers[txn].ok if txn in answers else "unanswered") for txn in ("t1", "t2")}
    assert (outcome, lost) == ({"t1": True, "t2": True}, []), (
        f"answers {outcome}, journal lost {lost}; card_a holds {balance}"
    )


def test_stop_with_a_full_queue_behind_a_stalled_commit_still_stops(tmp_path: Path) -> None:
    """On the writer's own thread: stop() puts its end marker with a timeout and lets queue.Full
    escape, so the caller's shutdown (Core.stop: pykka's stop_all after it) is cut short."""
    path = tmp_path / "journal.sqlite"
    url = f"sqlite:///{path}"
    engine = make_world(url)
    issue(engine, "card_a", 1_000)
    writer = JournalWriter(engine, batch_writes_max=1, queue_writes_max=1)
    answered: list[WriteResult] = []
    writer.start()
    holder = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(STALL_S, lambda: holder.execute("COMMIT"))
    release.start()
    raised: BaseException | None = None
    try:
        assert writer.submit(redemption("t1", "card_a", 100), answered.append)
        time.sleep(0.2)  # t1 is being committed, waiting for the lock
        assert writer.submit(redemption("t2", "card_a", 100), answered.append)  # the queue is full
        try:
            writer.stop(timeout_s=0.5)
        except BaseException as error:
            raised = error
    finally:
        release.join()
        holder.close()
        deadline_s = time.monotonic() + 5
        while len(answered) < 2 and time.monotonic() < deadline_s:
            time.sleep(0.05)
        engine.dispose()
    assert raised is None, f"stop() raised {raised!r}"
    assert [r.ok for r in answered] == [True, True]
