"""Merchant portal sessions: sign in with the merchant's e-mail and password, get a token.

The token is random and stored only as its SHA-256, with the merchant and an expiry, so a
session outlives a restart and holds on every node, and a copy of the database opens nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update

from switch import credentials
from switch.store.repository import as_utc
from switch.store.schema import merchants, portal_sessions, sign_in_failures

TOKEN_PREFIX = "ps_"
WRONG_LOGIN = "merchant e-mail or password is wrong"
NO_SESSION = "no portal session: sign in again"


@dataclass(frozen=True, slots=True)
class PortalSession:
    token: str
    merchant_id: str
    merchant_name: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SignInLockout:
    tries_max: int  # wrong sign-ins in a row for one address before it is locked
    lock_s: int


class PortalSessions:
    def __init__(
        self, engine: Engine, session_s: int, lockout: SignInLockout, now: Callable[[], dt.datetime]
    ) -> None:
        self._engine = engine
        self._session = dt.timedelta(seconds=session_s)
        self._lockout = lockout
        self._now = now

    def sign_in(self, email: str, password: str) -> PortalSession:
        """A new session; PermissionError, the same for an unknown e-mail and a wrong password.

        Wrong sign-ins are counted per address, known or not (so a lock tells nothing about
        whether the address has an account); at tries_max the address is locked for lock_s,
        and while locked even the right password is refused.
        """
        key = _digest(email.lower())
        now = self._now()
        with self._engine.connect() as conn:
            locked_until = conn.execute(
                select(sign_in_failures.c.locked_until).where(sign_in_failures.c.email_hash == key)
            ).scalar()
            merchant = conn.execute(select(merchants).where(merchants.c.email == email.lower())).first()
        if locked_until is not None and as_utc(locked_until) > now:
            until = as_utc(locked_until).isoformat(timespec="seconds")
            raise PermissionError(f"too many wrong sign-ins for this address: try again after {until}")
        if merchant is None or not credentials.password_matches(password, merchant.password_hash):
            self._count_failure(key, now)
            raise PermissionError(WRONG_LOGIN)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        session = PortalSession(token, merchant.merchant_id, merchant.name, now + self._session)
        with self._engine.begin() as conn:
            conn.execute(delete(sign_in_failures).where(sign_in_failures.c.email_hash == key))
            conn.execute(delete(portal_sessions).where(portal_sessions.c.expires_at <= now))
            conn.execute(
                portal_sessions.insert().values(
                    token_hash=_digest(token),
                    merchant_id=session.merchant_id,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return session

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

    def merchant_of(self, token: str) -> str:
        """The signed-in merchant; PermissionError if the token is unknown, signed out or expired."""
        if not token.startswith(TOKEN_PREFIX):
            raise PermissionError(NO_SESSION)
        with self._engine.connect() as conn:
            row = conn.execute(
                select(portal_sessions.c.merchant_id, portal_sessions.c.expires_at).where(
                    portal_sessions.c.token_hash == _digest(token)
                )
            ).first()
        if row is None or as_utc(row.expires_at) <= self._now():
            raise PermissionError(NO_SESSION)
        return str(row.merchant_id)

    def sign_out(self, token: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(portal_sessions).where(portal_sessions.c.token_hash == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
