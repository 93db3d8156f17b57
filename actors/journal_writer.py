"""The JournalWriter: group commit of every actor's writes, answering each only once durable."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from switch.store.journal import BatchOutcome, Write, WriteResult, commit_batch
from switch.store.journal_process import JournalProcess, JournalProcessError
from switch.store.periods import WebDayRule

log = logging.getLogger(__name__)

Done = Callable[[WriteResult], None]
BatchObserver = Callable[[int, float], None]  # (writes in batch, commit latency in seconds)
FailureObserver = Callable[[int], None]  # (writes in a batch whose commit failed)
LostObserver = Callable[[str], None]  # (why the journal was lost); `txswitch serve` exits on it


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    batches: int
    writes: int
    failed_writes: int
    queue_depth: int
    last_batch_size: int
    # Time inside batches: wall clock, and this thread's own CPU. Wall far above CPU means the
    # writer waits: for the journal process, or (committing on this thread) for the disk and for
    # the other threads to let it run.
    busy_s: float
    busy_cpu_s: float
    # Why the writer stopped taking writes on its own (its journal process died), or "".
    lost: str = ""


class JournalWriter:
    """One thread; collects writes from all card actors and commits them together.

    Why not a pykka actor: group commit needs to drain everything queued since the last commit,
    and a pykka actor sees one message at a time.

    Given a database_url, the batches are committed by a JournalProcess on that database instead
    of on this thread. If that process dies, the batch it held is in doubt: it may have landed.
    The writer then fails closed: that batch is never answered (its terminals ask TransactionStatus
    after the switch restarts), every later write is refused, and nothing more moves; on_lost
    hears of it (`txswitch serve` exits, so a supervisor restarts it).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_writes_max: int,
        queue_writes_max: int,
        linger_ms: float = 0.0,
        on_batch: BatchObserver | None = None,
        on_failure: FailureObserver | None = None,
        database_url: str | None = None,
        on_lost: LostObserver | None = None,
        web_days: WebDayRule | None = None,
    ) -> None:
        assert batch_writes_max > 0 and queue_writes_max > 0
        self._engine = engine
        self._web_days = web_days  # the switch's own terminals, whose earlier day a write closes first
        self._process = JournalProcess(database_url, web_days) if database_url is not None else None
        self._batch_writes_max = batch_writes_max
        self._linger_s = linger_ms / 1000
        self._queue: queue.Queue[tuple[Write, Done] | None] = queue.Queue(maxsize=queue_writes_max)
        self._on_batch = on_batch
        self._on_failure = on_failure
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        # Held across submit()'s check and its put, and by whoever stops the writer taking writes:
        # without it a submit() that saw the writer accepting could queue its write behind the end
        # marker (or behind the refusal of a lost journal's queue), and nobody would answer it.
        self._admission = threading.Lock()
        self._accepting = False
        self._batches = 0
        self._writes = 0
        self._failed_writes = 0
        self._last_batch_size = 0
        self._busy_s = 0.0
        self._busy_cpu_s = 0.0
        self._lost = ""

    def start(self) -> None:
        if self._process is not None:
            self._process.start()
        self._accepting = True
        self._thread.start()

    @property
    def process_pid(self) -> int | None:
        """The journal process's pid; None when commits run on this process's writer thread."""
        return self._process.pid if self._process is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, commit everything already queued, then end the thread, and only then
        the journal process: a stop during a stalled commit once closed the pipe under the batch,
        which then counted as a lost journal (the switch exited 75 on an ordinary shutdown), and a
        full queue made the end marker's put raise."""
        with self._admission:
            self._accepting = False
        if self._thread.is_alive():
            self._queue.put(None)  # blocks only while the queue is full: the writer is draining it
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the journal is still committing after %s s; waiting for it", timeout_s)
                self._thread.join()
        if self._process is not None:
            self._process.stop()

    def submit(self, write: Write, done: Done) -> bool:
        """Queue a write; done(result) runs on the writer thread once it is durable or failed.

        False when the writer is stopped or its queue is full: nothing was queued.
        """
        with self._admission:
            if not self._accepting:
                return False
            try:
                self._queue.put_nowait((write, done))
            except queue.Full:
                return False
            return True

    def write_and_wait(
        self, write: Write, timeout_s: float | None, landed: threading.Event | None = None
    ) -> WriteResult:
        """Queue one write and wait for its result: for writes off the transaction path.

        TimeoutError when no result came in time: the write may still land, so the caller must
        not act as if it failed; `landed`, if given, is set once the journal has answered, so the
        caller can wait for that later. None waits until the journal answers (if it is lost
        meanwhile, the switch exits).
        """
        answered = landed or threading.Event()
        results: list[WriteResult] = []

        def done(result: WriteResult) -> None:
            results.append(result)
            answered.set()

        if not self.submit(write, done):
            answered.set()
            return WriteResult(False, problem=self._refusal(), fault=True)
        if not answered.wait(timeout_s):
            raise TimeoutError(f"the journal did not answer within {timeout_s} s")
        return results[0]

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            self._batches,
            self._writes,
            self._failed_writes,
            self._queue.qsize(),
            self._last_batch_size,
            self._busy_s,
            self._busy_cpu_s,
            self._lost,
        )

    def _refusal(self) -> str:
        if self._lost:
            return f"journal lost: {self._lost}"
        return "journal queue full" if self._accepting else "journal stopped"

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            if self._linger_s:
                time.sleep(self._linger_s)
            while len(batch) < self._batch_writes_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if not self._commit(batch):
                self._refuse_queued()
                return

    def _commit(self, batch: list[tuple[Write, Done]]) -> bool:
        """Commit and answer the batch; False if the journal process died with it (unanswered)."""
        started = time.perf_counter()
        started_cpu = time.thread_time()
        writes = [write for write, _ in batch]
        try:
            outcome = self._commit_outcome(writes)
        except JournalProcessError as error:
            self._fail_closed(str(error), len(writes))
            return False
        if outcome.in_doubt:  # the COMMIT failed: landed or not, nobody can say (journal.commit_batch)
            self._fail_closed("a commit failed while committing", len(writes))
            return False
        results = outcome.results
        if outcome.failed and self._on_failure is not None:
            self._on_failure(len(writes))
        latency_s = time.perf_counter() - started
        self._busy_s += latency_s
        self._busy_cpu_s += time.thread_time() - started_cpu
        self._batches += 1
        self._writes += len(writes)
        self._failed_writes += sum(1 for r in results if not r.ok)
        self._last_batch_size = len(writes)
        if self._on_batch is not None:
            self._on_batch(len(writes), latency_s)
        for (_, done), result in zip(batch, results, strict=True):
            try:
                done(result)
            except Exception:  # one waiter's fault must not stop the journal for all the others
                log.exception("a journal write's callback failed; the write stands")
        return True

    def _commit_outcome(self, writes: list[Write]) -> BatchOutcome:
        if self._process is None:
            return commit_batch(self._engine, writes, self._web_days)
        return self._process.commit(writes)

    def _fail_closed(self, error: str, in_doubt: int) -> None:
        with self._admission:
            self._lost = error
            self._accepting = False
        log.critical(
            "journal lost: %s; %d writes in doubt are left unanswered, no write is taken any more, and "
            "the switch exits to recover from what is stored",
            error,
            in_doubt,
        )
        if self._on_failure is not None:
            self._on_failure(in_doubt)
        if self._on_lost is not None:
            self._on_lost(self._lost)

    def _refuse_queued(self) -> None:
        """Writes queued behind the lost batch were never sent: refusing them moves nothing."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1](WriteResult(False, problem=self._refusal(), fault=True))
