"""Wrong sign-ins at the same moment each count towards the lock (README: five wrong tries in a row
lock the address; at most 2 password checks run at once). On PostgreSQL the count was read and
written back without a lock: two wrong tries that read it together counted once, and the first two
of an address both inserted its row, one failing INTERNAL. The count is now read under a lock on
the address."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from switch.passwords import MerchantPasswords, SignInLockout, email_digest
from switch.store.engine import create_schema, make_engine
from switch.store.schema import sign_in_failures
from tests.pg import postgres_schema


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with postgres_schema() as url:
        engine = make_engine(url)
        create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def _both_read_first(engine: Engine) -> threading.Barrier:
    """Two threads that read an address's failure count wait for each other before writing: the
    interleaving two concurrent wrong sign-ins meet whenever their checks end together."""
    barrier = threading.Barrier(2, timeout=2)

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "sign_in_failures.failures" in statement:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    event.listen(engine, "after_cursor_execute", after)
    return barrier


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
    pg_engine: Engine,
) -> None:
    passwords = MerchantPasswords(pg_engine, SignInLockout(5, 900, 2, 1_000, 900.0, 10), lambda: NOW)
    _both_read_first(pg_engine)
    errors = _two_wrong_tries_at_once(passwords, "someone@example.test")
    assert not errors, f"a wrong sign-in failed inside the switch: {errors!r}"
    assert _failures(pg_engine, "someone@example.test").failures == 2


def test_five_wrong_sign_ins_lock_the_address_also_when_two_come_at_once(pg_engine: Engine) -> None:
    passwords = MerchantPasswords(pg_engine, SignInLockout(5, 900, 2, 1_000, 900.0, 10), lambda: NOW)
    email = "someone@example.test"
    with pytest.raises(PermissionError):
        passwords.verify(email, "not-the-password", "ipv4:127.0.0.1")  # alone: the address has its row now
    barrier = _both_read_first(pg_engine)
    for _ in range(2):  # four more wrong tries, two at a time: five in a row
        assert not _two_wrong_tries_at_once(passwords, email)
        barrier.reset()
    row = _failures(pg_engine, email)
    assert row.locked_until is not None, f"five wrong tries in a row, the address is not locked: {row}"
