"""Wrong sign-ins at the same moment each count towards the lock (README: five wrong tries in a row
lock the address; at most 2 password checks run at once). On PostgreSQL the count was read and
written back without a lock: two wrong tries that read it together counted once, and the first two
of an address both inserted its row, one failing INTERNAL. The count is now read under a lock on
the address."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from switch.passwords import MerchantPasswords, SignInLockout, email_digest
from switch.store.engine import create_schema, make_engine
from switch.store.schema import sign_in_failures
from tests.pg import LockWaits, backend_pid, postgres_schema


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with postgres_schema() as url:
        engine = make_engine(url)
        create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()


class _BothReadFirst:
    """Two threads that read an address's failure count wait for each other before writing: the
    interleaving two concurrent wrong sign-ins meet whenever their checks end together. The first to
    have read stops waiting at once when the other waits for a lock the first holds (pg_blocking_pids:
    the count read under a lock on the address), as the other cannot then read before the first has
    written; otherwise when the other has read too, or after WAIT_S, as the barrier it replaces did
    (it waited out those 2 s on every pair of tries once the count was read under that lock)."""

    WAIT_S = 2.0

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._read: set[int] = set()  # the threads whose read is done, this pair of tries
        self._backends: dict[int, int] = {}  # thread: its connection's backend, as last seen
        self._lock_waits = LockWaits()
        self._test_thread = 0

    def listen(self, engine: Engine) -> None:
        """From now on, on each pair of tries on engine; the test's own reads, on the thread calling
        this, are not held (the barrier held the one after the tries 2 s, for a second that never came)."""
        self._test_thread = threading.get_ident()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, _conn: Any, cursor: Any, *_: Any) -> None:
        with self._changed:
            self._backends[threading.get_ident()] = backend_pid(cursor)

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not (statement.lstrip().upper().startswith("SELECT") and "sign_in_failures.failures" in statement):
            return
        me = threading.get_ident()
        if me == self._test_thread:
            return
        deadline_s = time.monotonic() + self.WAIT_S
        with self._changed:
            self._read.add(me)
            self._changed.notify_all()
        while time.monotonic() < deadline_s:
            with self._changed:
                if len(self._read) >= 2:
                    return
                mine = self._backends[me]
                others = {pid for pid in self._backends.values() if pid != mine}
            # Only the two tries run statements on this engine: a backend of its waiting is the other's.
            if self._lock_waits.blocked_by(others, mine):
                return
            with self._changed:
                self._changed.wait(0.005)

    def reset(self) -> None:
        with self._changed:
            self._read.clear()

    def close(self) -> None:
        self._lock_waits.close()


@pytest.fixture
def both_read_first() -> Iterator[_BothReadFirst]:
    interleaving = _BothReadFirst()
    try:
        yield interleaving
    finally:
        interleaving.close()


def _two_wrong_tries_at_once(passwords: MerchantPasswords, email: str) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrong() -> None:
        try:
            passwords.verify(email, "not-the-password", "ipv4:127.0.0.1")
        except PermissionError:
            pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=wrong) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def _failures(engine: Engine, email: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(sign_in_failures.c.failures, sign_in_failures.c.locked_until).where(
                sign_in_failures.c.email_hash == email_digest(email)
            )
        ).first()


NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


def test_the_first_two_wrong_sign_ins_of_an_address_at_once_are_refused_not_an_error(
    pg_engine: Engine, both_read_first: _BothReadFirst
) -> None:
    passwords = MerchantPasswords(pg_engine, SignInLockout(5, 900, 2, 1_000, 900.0, 10), lambda: NOW)
    both_read_first.listen(pg_engine)
    errors = _two_wrong_tries_at_once(passwords, "someone@example.test")
    assert not errors, f"a wrong sign-in failed inside the switch: {errors!r}"
    assert _failures(pg_engine, "someone@example.test").failures == 2


def test_five_wrong_sign_ins_lock_the_address_also_when_two_come_at_once(
    pg_engine: Engine, both_read_first: _BothReadFirst
) -> None:
    passwords = MerchantPasswords(pg_engine, SignInLockout(5, 900, 2, 1_000, 900.0, 10), lambda: NOW)
    email = "someone@example.test"
    with pytest.raises(PermissionError):
        passwords.verify(email, "not-the-password", "ipv4:127.0.0.1")  # alone: the address has its row now
    both_read_first.listen(pg_engine)
    for _ in range(2):  # four more wrong tries, two at a time: five in a row
        assert not _two_wrong_tries_at_once(passwords, email)
        both_read_first.reset()
    row = _failures(pg_engine, email)
    assert row.locked_until is not None, f"five wrong tries in a row, the address is not locked: {row}"
