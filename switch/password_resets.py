"""Forgotten portal passwords: a one-time code by e-mail, then a new password with that code.

Only the code's SHA-256 is stored, with the login it belongs to and the address it went to (as
a hash); the clear code exists only in the mail. Asking answers the same whether or not a login
has the address, and the mail leaves from a thread of its own, so neither the answer nor its
timing tells whether an account exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import secrets
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, select, update

from switch import credentials
from switch.admin import ONLINE_TOP_UP_EMAIL
from switch.config import Settings
from switch.domain.employees import OWNER, password_problem
from switch.passwords import Login, email_digest, login_of, store_password
from switch.receipts import MailServer, send_mail
from switch.store.engine import writing
from switch.store.key_locks import lock_name
from switch.store.repository import as_utc
from switch.store.schema import employees, merchants, password_resets, sign_in_failures

log = logging.getLogger(__name__)

CODE_PREFIX = "pr_"
CODE_REFUSED = "the reset code is unknown, used or expired: ask for a new one"
MAIL_ATTEMPTS_MAX = 3
MAIL_RETRY_S = 2.0
STOP_TIMEOUT_S = 5.0


class ResetsOffError(Exception):
    """No mail server is configured: a code could not reach anyone."""


@dataclass(frozen=True, slots=True)
class _ResetMail:
    recipient: str = field(repr=False)
    code: str = field(repr=False)  # never in a repr or a log line
    expires_at: dt.datetime


class PasswordResets:
    def __init__(self, engine: Engine, settings: Settings, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._server = MailServer.from_settings(settings)
        self._code_s = settings.password_reset_code_s
        self._per_hour_max = settings.password_resets_per_hour_max
        self._url = settings.password_reset_url
        self._now = now
        self._mails: queue.Queue[_ResetMail | None] = queue.Queue(settings.password_reset_mails_queued_max)
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            self._thread = threading.Thread(target=self._run, name="reset-mailer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._mails.put(None, timeout=STOP_TIMEOUT_S)
            self._thread.join(timeout=STOP_TIMEOUT_S)

    def ask(self, email: str) -> None:
        """Mail a code to the login with this address, if there is one and it has not had
        password_resets_per_hour_max codes in the last hour. ResetsOffError without a mail server."""
        if self._server is None:
            raise ResetsOffError("password reset by e-mail is off: this switch has no mail server")
        email = email.strip().lower()
        key, now = email_digest(email), self._now()
        code = CODE_PREFIX + secrets.token_urlsafe(24)
        expires_at = now + dt.timedelta(seconds=self._code_s)
        with writing(self._engine) as conn:
            lock_name(conn, f"password-reset:{key}")  # two asks at once count each other
            found = login_of(conn, email)
            # The switch's own login takes no mail (its .invalid address reaches nobody): answered
            # and timed as an address no login has.
            if found is None or email == ONLINE_TOP_UP_EMAIL or self._asked_often(conn, key, now):
                return
            login = found[0]
            conn.execute(
                password_resets.insert().values(
                    code_hash=credentials.credential_hash(code),
                    email_hash=key,
                    merchant_id=login.merchant_id,
                    employee_id=login.employee_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        try:
            self._mails.put_nowait(_ResetMail(email, code, expires_at))
        except queue.Full:
            log.warning("password reset mail dropped: too many waiting")

    def _asked_often(self, conn: Connection, key: str, now: dt.datetime) -> bool:
        rows = password_resets.c
        recent = conn.execute(
            select(func.count()).where(rows.email_hash == key, rows.created_at > now - dt.timedelta(hours=1))
        ).scalar_one()
        return bool(recent >= self._per_hour_max)

    def reset(self, code: str, new_password: str) -> Login:
        """The login's new password; the code and every other code of the login stop working,
        every session of the login ends, and its wrong sign-ins are forgotten.

        PermissionError if the code is unknown, used, expired, or its login changed address or
        was deactivated since; ValueError naming what is wrong with the new password.
        """
        problem = password_problem(new_password)
        if problem:
            raise ValueError(f"new_password: {problem}")
        if not code.startswith(CODE_PREFIX):
            raise PermissionError(CODE_REFUSED)
        code_hash = credentials.credential_hash(code)
        asked = select(password_resets).where(password_resets.c.code_hash == code_hash)
        with self._engine.connect() as conn:
            first = conn.execute(asked).first()
            if first is None or not _usable(first, self._now()):
                # Before the password is hashed: made-up codes cost no scrypt (16 MiB each), so a
                # flood of them holds no thread that refunds and payments need.
                raise PermissionError(CODE_REFUSED)
        password_hash = credentials.hash_password(new_password)
        now = self._now()
        with writing(self._engine) as conn:
            # The login's row before the code's, as UpdateEmployee and a password change take them
            # (the user's row, then its codes): in the other order two at once deadlocked on
            # PostgreSQL. A code's login never changes, so the first read names it.
            _lock_login(conn, first.merchant_id, first.employee_id)
            row = conn.execute(asked.with_for_update()).first()
            if not _usable(row, now):
                raise PermissionError(CODE_REFUSED)
            assert row is not None
            login = _current_login(conn, row.merchant_id, row.employee_id)
            if login is None or email_digest(login.email) != row.email_hash:
                raise PermissionError(CODE_REFUSED)
            store_password(conn, login, password_hash)
            conn.execute(
                update(password_resets)
                .where(password_resets.c.email_hash == row.email_hash, password_resets.c.used_at.is_(None))
                .values(used_at=now)
            )
            conn.execute(delete(sign_in_failures).where(sign_in_failures.c.email_hash == row.email_hash))
        return login

    def _run(self) -> None:
        server = self._server
        assert server is not None
        while (mail := self._mails.get()) is not None:
            for attempt in range(1, MAIL_ATTEMPTS_MAX + 1):
                try:
                    send_mail(server, mail.recipient, "Your txswitch portal password", self._body(mail))
                    break
                except (OSError, smtplib.SMTPException) as error:
                    log.warning(
                        "password reset mail not sent",
                        extra={"attempt": attempt, "error": type(error).__name__},
                    )
                    time.sleep(MAIL_RETRY_S * attempt)

    def _body(self, mail: _ResetMail) -> str:
        until = mail.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        where = f"{self._url}{mail.code}" if self._url else mail.code
        return (
            f"Someone, we hope you, asked to reset the txswitch portal password of {mail.recipient}.\n\n"
            f"Your reset code: {where}\n\n"
            f"It works once, until {until}. If you did not ask, ignore this mail: your password\n"
            "stays as it is.\n"
        )


def _lock_login(conn: Connection, merchant_id: str, employee_id: str | None) -> None:
    """The row of a code's login, locked until conn's transaction ends (PostgreSQL; SQLite has one
    writer at a time anyway). FOR NO KEY UPDATE, as the password's own UPDATE would take: rows
    inserted meanwhile that refer to the merchant (its transactions) need not wait for it."""
    if employee_id is None:
        query = select(merchants.c.merchant_id).where(merchants.c.merchant_id == merchant_id)
    else:
        query = select(employees.c.employee_id).where(employees.c.employee_id == employee_id)
    conn.execute(query.with_for_update(key_share=True)).first()


def _current_login(conn: Connection, merchant_id: str, employee_id: str | None) -> Login | None:
    """The login a code was made for, as it is now; None if the user was deactivated."""
    merchant = conn.execute(
        select(merchants.c.name, merchants.c.email).where(merchants.c.merchant_id == merchant_id)
    ).first()
    if merchant is None:
        return None
    if employee_id is None:
        return Login(merchant_id, merchant.name, merchant.email, OWNER)
    user = conn.execute(
        select(employees.c.name, employees.c.email, employees.c.role, employees.c.active).where(
            employees.c.employee_id == employee_id
        )
    ).first()
    if user is None or not user.active or user.email is None:
        return None
    return Login(merchant_id, merchant.name, user.email, user.role, employee_id, user.name)


def _usable(row: Row[Any] | None, now: dt.datetime) -> bool:
    """A reset code's row that is there, not used and not expired."""
    return row is not None and row.used_at is None and as_utc(row.expires_at) > now
