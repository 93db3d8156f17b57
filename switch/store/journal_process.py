"""The journal's commits in a process of their own, so they never wait for the switch's GIL.

In one process the journal writer's thread gives the interpreter lock back around every SQLite
call of a batch and waits to get it again behind the gRPC event loop; under load that made a
batch of a few writes take 10 ms of wall time for well under 1 ms of work (docs/decisions.md).
Here the switch hands the batch over a pipe and waits without the lock; the child applies it
with its own engine on the same database and sends the results back. A write is still answered
only once its commit has returned.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection

from ops.logs import configure_logging
from switch.store.engine import make_engine
from switch.store.journal import BatchOutcome, Write, commit_batch
from switch.store.periods import WebDayRule

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_READY = "ready"
# forkserver: each child is forked from a small single-threaded server that has imported the
# store once, so it starts in milliseconds and never inherits grpc's threads (a plain fork of
# the switch would). The server is started on first use.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


class JournalProcessError(RuntimeError):
    """The journal process is gone; the batch it held may or may not have committed."""


def can_serve(database_url: str) -> bool:
    """Whether another process can open this database: not an in-memory SQLite one."""
    if not database_url.startswith("sqlite"):
        return True
    path = database_url.split("///", 1)[1] if "///" in database_url else ""
    return bool(path) and path != ":memory:" and "mode=memory" not in database_url


class JournalProcess:
    """A child process that commits the batches it is sent, one at a time, in order."""

    def __init__(self, database_url: str, web_days: WebDayRule | None = None) -> None:
        assert can_serve(database_url), "an in-memory database cannot be shared with a child process"
        self._connection, self._child_end = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(
            target=_serve,
            args=(self._child_end, database_url, web_days),
            name="txswitch-journal",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        self._process.start()
        self._child_end.close()
        if not self._connection.poll(START_TIMEOUT_S):
            self.stop()
            raise JournalProcessError(f"the journal process did not start within {START_TIMEOUT_S} s")
        try:
            ready = self._connection.recv()
        except (EOFError, OSError) as error:
            self.stop()
            raise JournalProcessError(f"the journal process failed to start: {error!r}") from error
        assert ready == _READY, ready

    def commit(self, writes: list[Write]) -> BatchOutcome:
        """The batch's outcome once the child's commit has returned; JournalProcessError if it died."""
        try:
            self._connection.send(writes)
            outcome = self._connection.recv()
        except (EOFError, OSError) as error:
            raise JournalProcessError(f"the journal process (pid {self.pid}) is gone: {error!r}") from error
        assert isinstance(outcome, BatchOutcome) and len(outcome.results) == len(writes)
        return outcome

    def stop(self) -> None:
        """Let the child finish the batch it holds and exit; kill it if it does not."""
        with contextlib.suppress(EOFError, OSError):
            self._connection.send(None)
        if self._process.pid is not None:
            self._process.join(STOP_TIMEOUT_S)
            if self._process.is_alive():
                log.error("the journal process did not stop within %s s; killed", STOP_TIMEOUT_S)
                self._process.kill()
                self._process.join()
        self._connection.close()


def _serve(connection: Connection, database_url: str, web_days: WebDayRule | None) -> None:
    """The child: commit each batch received, until told to stop or the switch is gone."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group. The switch drains
    # its writes through this process before it stops, so only the switch decides when it ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The switch's own scrubbed JSON lines: a failed batch's traceback quotes its SQL parameters.
    configure_logging(logging.WARNING)
    engine = make_engine(database_url)
    # One transaction at a time, each on this one connection: taking it from the pool and giving it
    # back cost more CPU than a batch's begin and commit. One the database dropped is made again
    # at its next use (sqlalchemy reconnects an invalidated connection outside a transaction).
    database = engine.connect()
    try:
        connection.send(_READY)
        while True:
            try:
                writes = connection.recv()
            except EOFError:
                return  # the switch is gone; nothing is waiting for an answer
            if writes is None:
                return
            connection.send(commit_batch(database, writes, web_days))
    finally:
        database.close()
        engine.dispose()
        connection.close()
