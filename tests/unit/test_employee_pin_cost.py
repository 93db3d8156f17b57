"""An unknown or inactive employee number costs the PIN check a wrong PIN for a known one costs."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, cast

import pytest

from actors.journal_writer import JournalWriter
from actors.terminal_actor import EmployeePins
from switch import credentials
from switch.domain.employees import LockoutPolicy, PinAttempt
from switch.domain.response_codes import ResponseCode
from switch.domain.transactions import EmployeeAuth
from switch.store.journal import Write, WriteResult
from switch.store.repository import EmployeePin, Store

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
MERCHANT = "mer_1"


class _Store:
    def __init__(self, employees: dict[str, EmployeePin]) -> None:
        self.employees = employees

    def employee_pin(self, merchant_id: str, employee_number: str) -> EmployeePin | None:
        return self.employees.get(employee_number) if merchant_id == MERCHANT else None


class _Writer:
    def __init__(self) -> None:
        self.writes: list[Write] = []

    def write_and_wait(self, write: Write, timeout_s: float | None) -> WriteResult:
        self.writes.append(write)
        return WriteResult(ok=True)


def test_an_unknown_or_inactive_employee_number_costs_what_a_wrong_pin_costs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = EmployeePin("emp_1", credentials.hash_employee_pin("1234"), PinAttempt(0, None))
    inactive = EmployeePin("emp_2", credentials.hash_employee_pin("1234"), PinAttempt(0, None), active=False)
    store, writer = _Store({"1": known, "2": inactive}), _Writer()
    pins = EmployeePins(
        cast(Store, store), cast(JournalWriter, writer), LockoutPolicy(100, 60), lambda: NOW, 1.0
    )
    rounds: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counted(name: str, password: bytes, salt: bytes, iterations: int, *rest: Any) -> bytes:
        rounds.append(iterations)
        return real(name, password, salt, iterations, *rest)

    def cost(number: str, pin: str) -> tuple[ResponseCode, list[int]]:
        rounds.clear()
        code = pins.check(MERCHANT, EmployeeAuth(number, pin))
        return code, list(rounds)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    assert cost("1", "1234") == (ResponseCode.approved, [credentials.EMPLOYEE_PIN_ITERATIONS])
    assert cost("1", "1234")[1] == []  # matched once: one HMAC from then on (docs/decisions.md)
    pins.check(MERCHANT, EmployeeAuth("9", "0000"))  # the first makes the per-process hash to check

    wrong = cost("1", "9999")
    assert wrong == (ResponseCode.incorrect_pin, [credentials.EMPLOYEE_PIN_ITERATIONS])
    assert len(writer.writes) == 1  # its try counted
    for number in ("9", "2", "77"):
        assert cost(number, "9999") == wrong, number
        assert cost(number, "1234") == wrong, number
    assert len(writer.writes) == 1  # an unknown or inactive number still counts no try
    assert pins.lockouts == 0
