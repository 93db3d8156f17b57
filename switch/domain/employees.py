"""A merchant's users: PINs for refunds and cancellations (format, lockout after wrong PINs),
and what each role may do in the portal."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from switch.domain.quoting import quoted
from switch.domain.response_codes import ResponseCode

EMPLOYEE_PIN_LENGTH = 4
EMPLOYEE_NUMBER_MAX = 20  # its column's length
EMPLOYEE_ROLES = ("cashier", "manager")
_PIN = re.compile(r"[0-9]{4}")  # fullmatch: "$" would let a trailing newline through


def pin_problem(pin: str) -> str | None:
    """Why this is not a 4-digit employee PIN, or None. Never echoes the PIN."""
    if not pin:
        return "employee pin is empty"
    if not _PIN.fullmatch(pin):
        return f"employee pin must be exactly {EMPLOYEE_PIN_LENGTH} digits"
    return None


def employee_number_problem(number: str) -> str | None:
    """Why no employee can have this number, or None. Never echoes it."""
    if not number:
        return "employee_number is missing"
    if len(number) > EMPLOYEE_NUMBER_MAX:
        return f"employee_number is longer than {EMPLOYEE_NUMBER_MAX} characters"
    if not number.isprintable():
        return "employee_number has unprintable characters"
    return None


def role_problem(role: str) -> str | None:
    """Why this is not an employee role, or None."""
    if role not in EMPLOYEE_ROLES:
        return f"role {quoted(role)} is not one of {', '.join(EMPLOYEE_ROLES)}"
    return None


OWNER = "owner"  # the merchant's own account, not one of its users
PASSWORD_LENGTH_MIN = 6


class PortalRight(enum.Enum):
    reports = "reports"  # transactions and their export, devices, stored day closes
    payouts = "payouts"  # the merchant summary: what is owed and what was paid
    users = "users"  # list, add and change the merchant's users and their PINs
    activate = "activate"  # activate a terminal with this login
    settings = "settings"  # the receipt's layout and logos, the locations
    redeem = "redeem"  # a gift card's redemption in the web back office (the shop's counter work)


PORTAL_RIGHTS: dict[str, frozenset[PortalRight]] = {
    OWNER: frozenset(PortalRight),
    "manager": frozenset(PortalRight),
    "cashier": frozenset({PortalRight.reports, PortalRight.redeem}),
}


def may(role: str, right: PortalRight) -> bool:
    return right in PORTAL_RIGHTS.get(role, frozenset())


# Whose logins and PINs a login with the users right may add and change: the merchant's account
# everyone's, a manager only the cashiers' (a manager cannot take over another manager's login by
# setting its password, nor make a manager).
MANAGED_ROLES: dict[str, frozenset[str]] = {
    OWNER: frozenset(EMPLOYEE_ROLES),
    "manager": frozenset({"cashier"}),
}


def manage_problem(login_role: str, *roles: str) -> str | None:
    """Why a login with `login_role` may not add or change a user with these roles (the user's
    role now and the one asked for), or None."""
    managed = MANAGED_ROLES.get(login_role, frozenset())
    for role in roles:
        if role not in managed:
            return f"a {login_role} may not add or change a {role}; the merchant's own account can"
    return None


def password_problem(password: str) -> str | None:
    """Why this cannot be a portal password, or None. Never echoes it."""
    if len(password) < PASSWORD_LENGTH_MIN:
        return f"password must have {PASSWORD_LENGTH_MIN} or more characters"
    return None


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    tries_max: int  # wrong PINs in a row before the employee is locked
    lock_duration_s: int


@dataclass(frozen=True, slots=True)
class PinAttempt:
    """State of an employee's PIN checks, before or after one attempt."""

    failed_tries: int
    locked_until: dt.datetime | None


def locked(state: PinAttempt, now: dt.datetime) -> bool:
    return state.locked_until is not None and now < state.locked_until


def after_attempt(
    state: PinAttempt, pin_matches: bool, policy: LockoutPolicy, now: dt.datetime
) -> tuple[PinAttempt, ResponseCode]:
    """The state after one attempt and the answer to give; a locked employee is refused unchecked."""
    if locked(state, now):
        return state, ResponseCode.employee_locked
    if pin_matches:
        return PinAttempt(0, None), ResponseCode.approved
    failed_tries = state.failed_tries + 1
    if failed_tries >= policy.tries_max:
        return PinAttempt(0, now + dt.timedelta(seconds=policy.lock_duration_s)), ResponseCode.employee_locked
    return PinAttempt(failed_tries, None), ResponseCode.incorrect_pin
