"""A merchant's e-mail and password, checked for the portal and for terminal activation alike.

Both entry points face the network, so both share one guard: wrong tries are counted per
address (known or not, so a lock tells nobody whether an account exists) and lock it for a
while, and only a few password checks (scrypt, about 70 ms of a core each) run at once; more
are turned away at once instead of holding the threads that refunds, cancels and payments need.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, delete, select, update

from switch import credentials
from switch.store.repository import as_utc
from switch.store.schema import merchants, sign_in_failures

WRONG_LOGIN = "merchant e-mail or password is wrong"
TOO_MANY_AT_ONCE = "too many sign-ins at once; try again shortly"


class TooManySignInsError(Exception):
    """More password checks are running than the switch allows at once."""


@dataclass(frozen=True, slots=True)
class SignInLockout:
    tries_max: int  # wrong tries in a row for one address before it is locked
    lock_s: int
    concurrent_max: int  # password checks at once


class MerchantPasswords:
    def __init__(self, engine: Engine, lockout: SignInLockout, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._lockout = lockout
        self._now = now
        self._checks = threading.BoundedSemaphore(lockout.concurrent_max)

    def verify(self, email: str, password: str) -> Row[Any]:
        """The merchant's row; PermissionError (wrong, or locked) or TooManySignInsError."""
        if not self._checks.acquire(blocking=False):
            raise TooManySignInsError(TOO_MANY_AT_ONCE)
        try:
            return self._verify(email.lower(), password)
        finally:
            self._checks.release()

    def _verify(self, email: str, password: str) -> Row[Any]:
        key = _digest(email)
        now = self._now()
        with self._engine.connect() as conn:
            locked_until = conn.execute(
                select(sign_in_failures.c.locked_until).where(sign_in_failures.c.email_hash == key)
            ).scalar()
            merchant = conn.execute(select(merchants).where(merchants.c.email == email)).first()
        if locked_until is not None and as_utc(locked_until) > now:
            until = as_utc(locked_until).isoformat(timespec="seconds")
            raise PermissionError(f"too many wrong sign-ins for this address: try again after {until}")
        if merchant is None or not credentials.password_matches(password, merchant.password_hash):
            self._count_failure(key, now)
            raise PermissionError(WRONG_LOGIN)
        with self._engine.begin() as conn:
            conn.execute(delete(sign_in_failures).where(sign_in_failures.c.email_hash == key))
        return merchant

    def _count_failure(self, key: str, now: dt.datetime) -> None:
        with self._engine.begin() as conn:
            failures = conn.execute(
                select(sign_in_failures.c.failures).where(sign_in_failures.c.email_hash == key)
            ).scalar()
            count = (failures or 0) + 1
            values: dict[str, object] = {"failures": count, "locked_until": None}
            if count >= self._lockout.tries_max:
                values = {"failures": 0, "locked_until": now + dt.timedelta(seconds=self._lockout.lock_s)}
            if failures is None:
                conn.execute(sign_in_failures.insert().values(email_hash=key, **values))
            else:
                conn.execute(
                    update(sign_in_failures).where(sign_in_failures.c.email_hash == key).values(**values)
                )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
