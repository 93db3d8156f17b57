"""Merchant portal sessions: sign in with the merchant's or a user's e-mail and password, get a token.

The token is random and stored only as its SHA-256, with the merchant, the user and an expiry,
so a session outlives a restart and holds on every node, and a copy of the database opens
nothing. Each request reads the user's role and state again: a deactivated user or a lowered
role takes effect at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, select

from switch import credentials
from switch.domain.employees import OWNER, password_problem
from switch.passwords import WRONG_LOGIN, Login, MerchantPasswords, login_check_now, store_password
from switch.store.engine import writing
from switch.store.repository import as_utc
from switch.store.schema import employees, merchants, portal_sessions

TOKEN_PREFIX = "ps_"
NO_SESSION = "no portal session: sign in again"


@dataclass(frozen=True, slots=True)
class PortalSession:
    token: str
    login: Login
    expires_at: dt.datetime


class PortalSessions:
    def __init__(
        self, engine: Engine, session_s: int, passwords: MerchantPasswords, now: Callable[[], dt.datetime]
    ) -> None:
        self._engine = engine
        self._session = dt.timedelta(seconds=session_s)
        self._passwords = passwords
        self._now = now

    def sign_in(self, email: str, password: str, caller: str) -> PortalSession:
        """A new session; PermissionError or TooManySignInsError from the password check, which
        counts `caller`'s wrong tries (`caller_address`)."""
        login, checked = self._passwords.verify_hash(email, password, caller)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        session = PortalSession(token, login, now + self._session)
        with writing(self._engine) as conn:
            # A new password, address or role, or a deactivation, since the check: it opens nothing.
            if login_check_now(conn, login) != checked:
                raise PermissionError(WRONG_LOGIN)
            conn.execute(delete(portal_sessions).where(portal_sessions.c.expires_at <= now))
            conn.execute(
                portal_sessions.insert().values(
                    token_hash=credentials.credential_hash(token),
                    merchant_id=login.merchant_id,
                    employee_id=login.employee_id,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return session

    def login_of(self, token: str) -> Login:
        """Who is signed in, as they are now; PermissionError if the token is unknown, signed out or
        expired, or the user was deactivated since."""
        if not token.startswith(TOKEN_PREFIX):
            raise PermissionError(NO_SESSION)
        s, m, e = portal_sessions.c, merchants.c, employees.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    s.expires_at,
                    s.employee_id,
                    m.merchant_id,
                    m.name.label("merchant_name"),
                    m.email.label("merchant_email"),
                    e.name.label("user_name"),
                    e.email.label("user_email"),
                    e.role,
                    e.active,
                    e.login_changes,
                )
                .join(merchants, m.merchant_id == s.merchant_id)
                .outerjoin(employees, e.employee_id == s.employee_id)
                .where(s.token_hash == credentials.credential_hash(token))
            ).first()
        if row is None or as_utc(row.expires_at) <= self._now():
            raise PermissionError(NO_SESSION)
        if row.employee_id is None:
            return Login(row.merchant_id, row.merchant_name, row.merchant_email, OWNER)
        if not row.active or row.user_email is None:
            raise PermissionError(NO_SESSION)
        return Login(
            row.merchant_id,
            row.merchant_name,
            row.user_email,
            row.role,
            row.employee_id,
            row.user_name,
            row.login_changes,
        )

    def sign_out(self, token: str) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                delete(portal_sessions).where(
                    portal_sessions.c.token_hash == credentials.credential_hash(token)
                )
            )

    def change_password(self, token: str, current: str, new: str, caller: str) -> None:
        """The signed-in login's own password; its other sessions end, this one stays.

        PermissionError (no session, or the current password is wrong: counted like a wrong
        sign-in), TooManySignInsError, or ValueError naming what is wrong with the new one.
        """
        login = self.login_of(token)
        problem = password_problem(new)
        if problem:
            raise ValueError(f"new_password: {problem}")
        _, checked = self._passwords.verify_hash(login.email, current, caller)
        password_hash = credentials.hash_password(new)
        with writing(self._engine) as conn:
            # The current password must still be the one checked, and this session still alive:
            # a password the owner set meanwhile (taking a stolen login back) is not undone.
            if login_check_now(conn, login) != checked or not _session_alive(conn, token):
                raise PermissionError(NO_SESSION)
            store_password(conn, login, password_hash, keep_session_hash=credentials.credential_hash(token))


def _session_alive(conn: Connection, token: str) -> bool:
    token_hash = portal_sessions.c.token_hash
    found = conn.execute(select(token_hash).where(token_hash == credentials.credential_hash(token))).first()
    return found is not None
