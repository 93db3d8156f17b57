"""The JournalWriter: group commit of every actor's writes, answering each only once durable."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from switch.store.journal import BACKSTOP_ERRORS, BackstopError, Write, WriteResult, apply_alone, apply_batch

log = logging.getLogger(__name__)

Done = Callable[[WriteResult], None]
BatchObserver = Callable[[int, float], None]  # (writes in batch, commit latency in seconds)
FailureObserver = Callable[[int], None]  # (writes in a batch whose commit failed)


@dataclass(frozen=True, slots=True)
class JournalStatistics:
    batches: int
    writes: int
    failed_writes: int
    queue_depth: int
    last_batch_size: int
    # Time inside batches: wall clock, and this thread's own CPU. Wall far above CPU means the
    # writer waits, for the disk or (in one Python process) for the other threads to let it run.
    busy_s: float
    busy_cpu_s: float


class JournalWriter:
    """One thread; collects writes from all card actors and commits them together.

    Why not a pykka actor: group commit needs to drain everything queued since the last commit,
    and a pykka actor sees one message at a time.
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
    ) -> None:
        assert batch_writes_max > 0 and queue_writes_max > 0
        self._engine = engine
        self._batch_writes_max = batch_writes_max
        self._linger_s = linger_ms / 1000
        self._queue: queue.Queue[tuple[Write, Done] | None] = queue.Queue(maxsize=queue_writes_max)
        self._on_batch = on_batch
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._accepting = False
        self._batches = 0
        self._writes = 0
        self._failed_writes = 0
        self._last_batch_size = 0
        self._busy_s = 0.0
        self._busy_cpu_s = 0.0

    def start(self) -> None:
        self._accepting = True
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, commit everything already queued, then end the thread."""
        self._accepting = False
        if self._thread.is_alive():
            self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)

    def submit(self, write: Write, done: Done) -> bool:
        """Queue a write; done(result) runs on the writer thread once it is durable or failed.

        False when the writer is stopped or its queue is full: nothing was queued.
        """
        if not self._accepting:
            return False
        try:
            self._queue.put_nowait((write, done))
        except queue.Full:
            return False
        return True

    def write_and_wait(self, write: Write, timeout_s: float) -> WriteResult:
        """Queue one write and wait for its result: for writes off the transaction path.

        TimeoutError when no result came in time: the write may still land, so the caller must
        not act as if it failed.
        """
        landed = threading.Event()
        results: list[WriteResult] = []

        def done(result: WriteResult) -> None:
            results.append(result)
            landed.set()

        if not self.submit(write, done):
            return WriteResult(False, problem="journal queue full" if self._accepting else "journal stopped")
        if not landed.wait(timeout_s):
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
        )

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
            self._commit(batch)

    def _commit(self, batch: list[tuple[Write, Done]]) -> None:
        started = time.perf_counter()
        started_cpu = time.thread_time()
        writes = [write for write, _ in batch]
        try:
            results = self._commit_together(writes)
        except BACKSTOP_ERRORS:
            # One write broke a backstop; the rest must not suffer for it.
            results = [self._commit_alone(write) for write in writes]
        except Exception:
            log.exception("journal commit failed; %d writes declined with 96", len(writes))
            results = [WriteResult(False, problem="database commit failed")] * len(writes)
            if self._on_failure is not None:
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
            done(result)

    def _commit_together(self, writes: list[Write]) -> list[WriteResult]:
        with self._engine.begin() as conn:
            return apply_batch(conn, writes, _now())

    def _commit_alone(self, write: Write) -> WriteResult:
        try:
            with self._engine.begin() as conn:
                return apply_alone(conn, write, _now())
        except IntegrityError:
            return WriteResult(False, problem="transaction id already stored", conflict=True)
        except BackstopError as error:
            return WriteResult(False, problem=f"refused by the ledger: {error}")
        except Exception:
            log.exception("journal commit of one write failed")
            return WriteResult(False, problem="database commit failed")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
