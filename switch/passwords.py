"""A merchant's e-mail and password, or one of its users', checked for the portal and for
terminal activation alike.

Both entry points face the network, so both share one guard: wrong tries are counted per
address (known or not, so a lock tells nobody whether an account exists) and lock it for a
while; they are counted per caller too, whatever addresses they name, so one caller trying a
few passwords on many addresses (spraying) is held back as well; and only a few password checks
(scrypt, about 70 ms of a core each) run at once; more are turned away at once instead of
holding the threads that refunds, cancels and payments need.

A right password whose hash was made at an older cost is hashed again at today's at that sign-in
(`MerchantPasswords._at_todays_cost`); until an account signs in once after a raise, a wrong try at
it costs less than one at an unknown address, which is always checked at today's cost.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, literal, select, update

from switch import credentials
from switch.caller_limit import CallerLimit
from switch.config import Settings
from switch.domain.employees import OWNER, PortalRight, may
from switch.store.engine import writing
from switch.store.key_locks import lock_name
from switch.store.repository import as_utc
from switch.store.schema import employees, merchants, password_resets, portal_sessions, sign_in_failures

log = logging.getLogger(__name__)

WRONG_LOGIN = "e-mail or password is wrong"
TOO_MANY_AT_ONCE = "too many sign-ins at once; try again shortly"


class NotAllowedError(Exception):
    """The password was right, but the login's role may not do this."""


class _WrongLoginError(PermissionError):
    """A wrong password (or an unknown address): the one outcome the caller's limit counts."""


class TooManySignInsError(Exception):
    """More password checks are running than the switch allows at once, or the caller has had as
    many wrong ones lately as it may."""


@dataclass(frozen=True, slots=True)
class SignInLockout:
    tries_max: int  # wrong tries in a row for one address before it is locked
    lock_s: int
    concurrent_max: int  # password checks at once
    caller_failures_max: int  # wrong tries from one caller, any addresses, in caller_window_s
    caller_window_s: float
    callers_tracked_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInLockout:
        return cls(
            settings.sign_in_tries_max,
            settings.sign_in_lock_s,
            settings.sign_ins_concurrent_max,
            settings.sign_in_caller_failures_max,
            settings.sign_in_caller_window_s,
            settings.sign_in_callers_tracked_max,
        )


@dataclass(frozen=True, slots=True)
class Login:
    """Who a right password belongs to: the merchant's own account, or one of its users."""

    merchant_id: str
    merchant_name: str
    email: str
    role: str  # OWNER, or the user's role
    employee_id: str | None = None  # None: the merchant's own account
    user_name: str = ""
    login_changes: int = 0  # the user's, when its password was checked or its session read

    def may(self, right: PortalRight) -> bool:
        return may(self.role, right)


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """What a password was checked against: what is written on the strength of the check is written
    only while the login is still so (`login_check_now`)."""

    password_hash: str
    login_changes: int  # the user's address, password, role and deactivations so far; 0 for a merchant


class MerchantPasswords:
    def __init__(self, engine: Engine, lockout: SignInLockout, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._lockout = lockout
        self._now = now
        self._checks = threading.BoundedSemaphore(lockout.concurrent_max)
        self._caller_failures = CallerLimit(
            lockout.caller_failures_max, lockout.caller_window_s, lockout.callers_tracked_max
        )

    def verify(self, email: str, password: str, caller: str) -> Login:
        """Whose password it is; PermissionError (wrong, or locked) or TooManySignInsError.

        A deactivated user, or one without a portal password, signs in as nobody.
        """
        return self.verify_hash(email, password, caller)[0]

    def verify_hash(self, email: str, password: str, caller: str) -> tuple[Login, LoginCheck]:
        """verify(), and what the password was checked against: what is written on the strength of
        the check must be written only while the login is still so (`login_check_now`).

        `caller` is who asks (`caller_address` of the gRPC peer): its wrong tries count together."""
        if not self._checks.acquire(blocking=False):
            raise TooManySignInsError(TOO_MANY_AT_ONCE)
        try:
            # Counted once a check may run: right passwords in flight hold at most concurrent_max of
            # the caller's places, each until its hash is done.
            counted_s = self._count_caller_try(caller)
            wrong = False
            try:
                return self._verify(email.lower(), password)
            except _WrongLoginError:
                wrong = True
                raise
            finally:
                # Only wrong tries: a shop's right ones, however many, never hold its own sign-ins back.
                if not wrong:
                    self._caller_failures.give_back(caller, counted_s)
        finally:
            self._checks.release()

    def _count_caller_try(self, caller: str) -> float:
        """Counted before the hash (the expensive part) and before anything is read for the address,
        in one step with the check, so tries arriving together pass no more than the limit; given
        back unless the password proves wrong. The address is not named, so the refusal tells
        nothing about it."""
        counted_s = time.monotonic()
        wait_s = self._caller_failures.wait_s(caller, counted_s)
        if wait_s > 0:
            raise TooManySignInsError(
                f"too many wrong sign-ins from your network address; try again in {math.ceil(wait_s)} s"
            )
        return counted_s

    def _verify(self, email: str, password: str) -> tuple[Login, LoginCheck]:
        key = email_digest(email)
        now = self._now()
        with self._engine.connect() as conn:
            locked_until = conn.execute(
                select(sign_in_failures.c.locked_until).where(sign_in_failures.c.email_hash == key)
            ).scalar()
            found = login_of(conn, email)
        if locked_until is not None and as_utc(locked_until) > now:
            until = as_utc(locked_until).isoformat(timespec="seconds")
            raise PermissionError(f"too many wrong sign-ins for this address: try again after {until}")
        # An unknown address costs a password check too, so timing tells nobody it is unknown.
        stored = found[1].password_hash if found is not None else _unknown_hash()
        if not credentials.password_matches(password, stored) or found is None:
            self._count_failure(key, now)
            raise _WrongLoginError(WRONG_LOGIN)
        with writing(self._engine) as conn:
            conn.execute(delete(sign_in_failures).where(sign_in_failures.c.email_hash == key))
        login, checked = found
        return login, self._at_todays_cost(login, checked, password)

    def _at_todays_cost(self, login: Login, checked: LoginCheck, password: str) -> LoginCheck:
        """What the right password was checked against, made again at today's cost if it was made at
        another (an older PASSWORD_SCRYPT_*, or the form without parameters): raising the cost reaches
        each account at its next right sign-in, the only time the password is known.

        Until then an account's older, cheaper hash makes a wrong password for it cost less than one
        for an unknown address (`_unknown_hash`, at today's cost), so timing may tell the two apart:
        a gap that closes for each account as it signs in once after the raise.

        Written only over the hash that was checked (a conditional update), so a new password set
        meanwhile is never overwritten; and it never refuses a sign-in: a failure is logged and the
        check stands as it was. The new hash is returned when it was stored, so the caller's
        `login_check_now` finds the login unchanged; when another right sign-in stored its own
        first, that one is returned if the password matches it (one more check, in that race only)."""
        if credentials.password_hash_is_current(checked.password_hash):
            return checked
        try:
            new_hash = credentials.hash_password(password)
            if login.employee_id is None:
                table, key, same = merchants, merchants.c.merchant_id == login.merchant_id, []
            else:
                table = employees
                key = employees.c.employee_id == login.employee_id
                same = [employees.c.login_changes == checked.login_changes]
            with writing(self._engine) as conn:
                stored = conn.execute(
                    update(table)
                    .where(key, table.c.password_hash == checked.password_hash, *same)
                    .values(password_hash=new_hash)
                ).rowcount
            if stored == 1:
                return LoginCheck(new_hash, checked.login_changes)
            with self._engine.connect() as conn:
                now = conn.execute(select(table.c.password_hash).where(key, *same)).scalar()
            if (
                now is not None
                and now != checked.password_hash
                and credentials.password_hash_is_current(now)
                and credentials.password_matches(password, now)
            ):
                return LoginCheck(now, checked.login_changes)
        except Exception as error:  # the sign-in stands; the error's text may hold the statement's hashes
            log.warning("a password hash was not made again at today's cost: %s", type(error).__name__)
        return checked

    def _count_failure(self, key: str, now: dt.datetime) -> None:
        with writing(self._engine) as conn:
            # Wrong tries at once each count: on PostgreSQL both read the same count (or both found
            # no row and one insert failed, INTERNAL) before this lock.
            lock_name(conn, f"sign-in:{key}")
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


def login_of(conn: Connection, email: str) -> tuple[Login, LoginCheck] | None:
    """(login, its password hash and changes) of the merchant or the active user with this address."""
    merchant = conn.execute(
        select(merchants.c.merchant_id, merchants.c.name, merchants.c.password_hash).where(
            merchants.c.email == email
        )
    ).first()
    if merchant is not None:
        return Login(merchant.merchant_id, merchant.name, email, OWNER), LoginCheck(merchant.password_hash, 0)
    user = conn.execute(
        select(
            employees.c.employee_id,
            employees.c.name,
            employees.c.role,
            employees.c.password_hash,
            employees.c.login_changes,
            merchants.c.merchant_id,
            merchants.c.name.label("merchant_name"),
        )
        .join(merchants, merchants.c.merchant_id == employees.c.merchant_id)
        .where(
            employees.c.email == email, employees.c.active.is_(True), employees.c.password_hash.is_not(None)
        )
    ).first()
    if user is None:
        return None
    login = Login(
        user.merchant_id,
        user.merchant_name,
        email,
        user.role,
        user.employee_id,
        user.name,
        user.login_changes,
    )
    return login, LoginCheck(user.password_hash, user.login_changes)


def login_check_now(conn: Connection, login: Login) -> LoginCheck | None:
    """The login's password hash and changes as stored now (None: deactivated, or no password), its
    row locked until conn's transaction ends on PostgreSQL (SQLite has one writer at a time anyway):
    a new password, address or role, or a deactivation, after a check waits, and then ends what the
    check let in. Compare with what the check returned: any of those since, even undone, differs."""
    if login.employee_id is None:
        query = select(merchants.c.password_hash, literal(0)).where(
            merchants.c.merchant_id == login.merchant_id
        )
    else:
        query = select(employees.c.password_hash, employees.c.login_changes).where(
            employees.c.employee_id == login.employee_id, employees.c.active.is_(True)
        )
    row = conn.execute(query.with_for_update()).first()
    if row is None or row[0] is None:
        return None
    return LoginCheck(str(row[0]), int(row[1]))


def store_password(
    conn: Connection, login: Login, password_hash: str, keep_session_hash: str | None = None
) -> None:
    """The login's new password hash; every portal session of the login ends but the one kept."""
    sessions = portal_sessions.c
    if login.employee_id is None:
        owner = merchants.c.merchant_id == login.merchant_id
        conn.execute(update(merchants).where(owner).values(password_hash=password_hash))
        mine = [sessions.merchant_id == login.merchant_id, sessions.employee_id.is_(None)]
    else:
        user = employees.c.employee_id == login.employee_id
        changed = employees.c.login_changes + 1
        conn.execute(update(employees).where(user).values(password_hash=password_hash, login_changes=changed))
        mine = [sessions.employee_id == login.employee_id]
    if keep_session_hash is not None:
        mine.append(sessions.token_hash != keep_session_hash)
    conn.execute(delete(portal_sessions).where(*mine))
    void_reset_codes(conn, login.merchant_id, login.employee_id)


def void_reset_codes(conn: Connection, merchant_id: str, employee_id: str | None) -> None:
    """Every forgotten-password code of the login not used yet opens nothing any more: its password
    or address changed, or it was deactivated (a code would work again after reactivation)."""
    resets = password_resets.c
    login = resets.employee_id == employee_id if employee_id is not None else resets.employee_id.is_(None)
    conn.execute(
        update(password_resets)
        .where(resets.merchant_id == merchant_id, login, resets.used_at.is_(None))
        .values(used_at=dt.datetime.now(dt.UTC))
    )


def _unknown_hash() -> str:
    """What an unknown address's password is checked against: a hash at today's cost
    (PASSWORD_SCRYPT_*), made again if that cost changed since (in tests)."""
    return _unknown_hash_at(
        credentials.PASSWORD_SCRYPT_N, credentials.PASSWORD_SCRYPT_R, credentials.PASSWORD_SCRYPT_P
    )


@functools.cache
def _unknown_hash_at(n: int, r: int, p: int) -> str:
    return credentials.hash_password(secrets.token_urlsafe(16))


def email_digest(email: str) -> str:
    """How an address is kept where only matching it is needed (sign-in tries, reset codes)."""
    return credentials.credential_hash(email)
