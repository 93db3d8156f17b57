"""Employee PINs for refunds and cancellations: format and lockout after repeated wrong PINs."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from switch.domain.response_codes import ResponseCode

EMPLOYEE_PIN_LENGTH = 4
EMPLOYEE_ROLES = ("cashier", "manager")
_PIN = re.compile(r"^[0-9]{4}$")


def pin_problem(pin: str) -> str | None:
    """Why this is not a 4-digit employee PIN, or None. Never echoes the PIN."""
    if not pin:
        return "employee pin is empty"
    if not _PIN.match(pin):
        return f"employee pin must be exactly {EMPLOYEE_PIN_LENGTH} digits"
    return None


def role_problem(role: str) -> str | None:
    """Why this is not an employee role, or None."""
    if role not in EMPLOYEE_ROLES:
        return f"role {role[:40]!r} is not one of {', '.join(EMPLOYEE_ROLES)}"
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
