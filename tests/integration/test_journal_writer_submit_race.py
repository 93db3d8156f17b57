"""A submit() racing JournalWriter.stop(): every write submit() accepted is answered, or submit()
refuses it; none is left in the queue behind the writer's end marker."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from actors.journal_writer import JournalWriter
from switch.store.journal import Write, WriteResult
from tests.integration.journal_world import issue, make_world, redemption

Item = tuple[Write, object] | None


class _QueueHeldAtPut(queue.Queue[Item]):
    """A stdlib queue whose first put_nowait (a submit's) waits for the test to let it go:
    the moment between submit()'s check that the writer accepts and its put."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.in_put = threading.Event()
        self.let_put = threading.Event()

    def put_nowait(self, item: Item) -> None:
        if item is not None and not self.in_put.is_set():
            self.in_put.set()
            assert self.let_put.wait(10)
        super().put_nowait(item)


def test_a_submit_racing_stop_is_answered_or_refused_never_left_behind(tmp_path: Path) -> None:
    engine = make_world(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    issue(engine, "card_a", 1_000)
    writer = JournalWriter(engine, batch_writes_max=8, queue_writes_max=8)
    held = _QueueHeldAtPut(8)
    writer._queue = held  # type: ignore[assignment]
    writer.start()
    answered = threading.Event()
    answers: list[WriteResult] = []
    accepted: list[bool] = []

    def done(result: WriteResult) -> None:
        answers.append(result)
        answered.set()

    submitter = threading.Thread(
        target=lambda: accepted.append(writer.submit(redemption("t1", "card_a", 100), done))
    )
    stopper = threading.Thread(target=writer.stop)
    submitter.start()
    assert held.in_put.wait(5)  # submit() saw the writer accepting and is about to queue
    stopper.start()
    stopper.join(0.5)  # on the old code stop() ends the writer thread here, before the put
    held.let_put.set()
    submitter.join(5)
    stopper.join(5)
    assert not stopper.is_alive()
    if accepted == [True]:
        assert answered.wait(5), "submit() accepted the write, but nobody answered it"
        assert [r.ok for r in answers] == [True]
    else:
        assert accepted == [False] and answers == []
    engine.dispose()
