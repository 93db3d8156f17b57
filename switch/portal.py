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

from sqlalchemy import Engine, delete, select

from switch.passwords import MerchantPasswords
from switch.store.repository import as_utc
from switch.store.schema import portal_sessions

TOKEN_PREFIX = "ps_"
NO_SESSION = "no portal session: sign in again"


@dataclass(frozen=True, slots=True)
class PortalSession:
    token: str
    merchant_id: str
    merchant_name: str
    expires_at: dt.datetime


class PortalSessions:
    def __init__(
        self, engine: Engine, session_s: int, passwords: MerchantPasswords, now: Callable[[], dt.datetime]
    ) -> None:
        self._engine = engine
        self._session = dt.timedelta(seconds=session_s)
        self._passwords = passwords
        self._now = now

    def sign_in(self, email: str, password: str) -> PortalSession:
        """A new session; PermissionError or TooManySignInsError from the password check."""
        merchant = self._passwords.verify(email, password)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        session = PortalSession(token, merchant.merchant_id, merchant.name, now + self._session)
        with self._engine.begin() as conn:
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
