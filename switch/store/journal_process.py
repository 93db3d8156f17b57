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
import dataclasses
import io
import logging
import operator
import os
import pickle
import signal
from collections.abc import Callable
from multiprocessing import forkserver, popen_forkserver, process, reduction, spawn, util
from multiprocessing.connection import Connection
from multiprocessing.context import set_spawning_popen
from typing import Any, TypeVar

from ops.logs import configure_logging
from switch.domain.ledger import JournalEntry, Posting
from switch.store.engine import make_engine
from switch.store.journal import (
    BatchOutcome,
    OriginalChange,
    TransactionRecord,
    Write,
    WriteResult,
    commit_batch,
)
from switch.store.journal_forkserver import CONTEXT, JOURNAL_MODULE, can_serve
from switch.store.periods import WebDayRule

T = TypeVar("T")
log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_READY = "ready"
# The forkserver's context, whose server imports this module (switch/store/journal_forkserver.py)
_CONTEXT = CONTEXT
assert __name__ == JOURNAL_MODULE, __name__
# What multiprocessing's preparation of a child names to import again as its __mp_main__: for
# `python -m switch.cli serve`, switch.cli, and with it grpc and the whole switch.
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


class JournalProcessError(RuntimeError):
    """The journal process is gone; the batch it held may or may not have committed."""


class JournalProcess:
    """A child process that commits the batches it is sent, one at a time, in order."""

    def __init__(self, database_url: str, web_days: WebDayRule | None = None) -> None:
        assert can_serve(database_url), "an in-memory database cannot be shared with a child process"
        self._connection, self._child_end = _CONTEXT.Pipe()
        self._process = _ChildProcess(
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
            self._connection.send_bytes(pickle.dumps(encode_batch(writes), _PROTOCOL))
            outcome = decode_outcome(self._connection.recv())
        except (EOFError, OSError) as error:
            raise JournalProcessError(f"the journal process (pid {self.pid}) is gone: {error!r}") from error
        assert len(outcome.results) == len(writes)
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


class _Popen(popen_forkserver.Popen):
    """multiprocessing's forkserver start but for the preparation it sends the child: without the
    main module. With it, the child ran `spawn.prepare`'s re-import of the switch's __main__
    (switch.cli: grpc, protobuf, the whole switch; some 0.3 s of a 0.4 s start and 10 MB more
    memory) before its first batch. The child needs only this module, which the forkserver imported,
    and its target and arguments are pickled by reference to it. `_launch` is CPython's own
    (3.11 to 3.13: multiprocessing/popen_forkserver.py) but for the preparation's two keys."""

    def _launch(self, process_obj: process.BaseProcess) -> None:
        prep_data = spawn.get_preparation_data(process_obj.name)
        for key in _MAIN_KEYS:
            prep_data.pop(key, None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        # A duplicate of the data pipe's write end: the child's sentinel of its parent
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ChildProcess(process.BaseProcess):
    """The forkserver context's Process, started by `_Popen`."""

    _start_method = "forkserver"

    @staticmethod
    def _Popen(process_obj: process.BaseProcess) -> _Popen:  # multiprocessing's name
        return _Popen(process_obj)


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
            outcome = commit_batch(database, decode_batch(writes), web_days)
            connection.send_bytes(pickle.dumps(encode_outcome(outcome), _PROTOCOL))
    finally:
        database.close()
        engine.dispose()
        connection.close()


# What crosses the pipe. Every write is pickled in the switch, on the writer thread, beside the
# gRPC threads: pickled as objects, each of its records, entries and postings went through a
# Python-level __getstate__ and, in the child, __setstate__ (about 20 us a write each way). The
# parts every money write has are sent as tuples of their fields' values instead, which pickle
# does in C, and made into objects again by their constructors in the child. The rarer parts
# (card changes, closes, ...) are pickled as they are. Sent with send_bytes and plain pickle:
# Connection.send makes a ForkingPickler (and copies its dispatch table) for every message.
_PROTOCOL = pickle.HIGHEST_PROTOCOL

_Values = tuple[Any, ...]


def _values_of(cls: type[T]) -> Callable[[T], _Values]:
    """The tuple of a dataclass's field values, in field order: what its constructor takes."""
    return operator.attrgetter(*(field.name for field in dataclasses.fields(cls)))  # type: ignore[arg-type]


_record_values = _values_of(TransactionRecord)
_change_values = _values_of(OriginalChange)
_posting_values = _values_of(Posting)
_write_values = _values_of(Write)
_result_values = _values_of(WriteResult)
# A result that is ok and says nothing but its entry id (almost every one) is sent as that id
_PLAIN_RESULT_TAIL = _result_values(WriteResult(True))[2:]


def encode_batch(writes: list[Write]) -> list[_Values]:
    return [_encode_write(write) for write in writes]


def decode_batch(encoded: list[_Values]) -> list[Write]:
    return [_decode_write(values) for values in encoded]


def _encode_write(write: Write) -> _Values:
    values = list(_write_values(write))
    for index, encode, _ in _WRITE_PARTS_AS_VALUES:
        if values[index] is not None:
            values[index] = encode(values[index])
    return tuple(values)


def _decode_write(encoded: _Values) -> Write:
    values = list(encoded)
    for index, _, decode in _WRITE_PARTS_AS_VALUES:
        if values[index] is not None:
            values[index] = decode(values[index])
    return Write(*values)


def _encode_entry(entry: JournalEntry) -> _Values:
    postings = tuple([_posting_values(posting) for posting in entry.postings])
    return (entry.idempotency_key, entry.kind, entry.currency, postings)


def _decode_entry(values: _Values) -> JournalEntry:
    """The entry as the switch made it, without checking its postings again (as unpickling did):
    its constructor's checks cost the child as much as the rest of the write's decoding."""
    key, kind, currency, postings = values
    entry = JournalEntry.__new__(JournalEntry)
    entry.__setstate__((key, kind, currency, tuple([Posting(*posting) for posting in postings])))  # type: ignore[attr-defined]
    return entry


_WRITE_FIELDS = [field.name for field in dataclasses.fields(Write)]
# (index among Write's fields, encode, decode) of each part sent as values; the others as they are
_WRITE_PARTS_AS_VALUES: list[tuple[int, Callable[[Any], _Values], Callable[[_Values], Any]]] = [
    (_WRITE_FIELDS.index("record"), _record_values, lambda values: TransactionRecord(*values)),
    (_WRITE_FIELDS.index("tombstone"), _record_values, lambda values: TransactionRecord(*values)),
    (_WRITE_FIELDS.index("entry"), _encode_entry, _decode_entry),
    (_WRITE_FIELDS.index("original"), _change_values, lambda values: OriginalChange(*values)),
    (_WRITE_FIELDS.index("refund_undone"), _change_values, lambda values: OriginalChange(*values)),
]


def encode_outcome(outcome: BatchOutcome) -> _Values:
    results = [_encode_result(result) for result in outcome.results]
    return (results, outcome.failed, outcome.in_doubt)


def decode_outcome(values: _Values) -> BatchOutcome:
    results, failed, in_doubt = values
    return BatchOutcome(
        [result if isinstance(result, WriteResult) else WriteResult(True, result) for result in results],
        failed,
        in_doubt,
    )


def _encode_result(result: WriteResult) -> WriteResult | int | None:
    values = _result_values(result)
    if values[0] and values[2:] == _PLAIN_RESULT_TAIL:
        entry_id: int | None = values[1]
        return entry_id
    return result
