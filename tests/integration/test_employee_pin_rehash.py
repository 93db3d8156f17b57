"""A right employee PIN whose stored hash was made with older iterations (the first form, without
them, or fewer than today's) is stored again with today's by the terminal's PIN check, through the
journal, only over the hash it was checked against. Today's iterations are the module's constant as
this test runs (tests/conftest.py lowers it). Real gRPC on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from switch import credentials
from switch.store.journal import PinRehash, Write
from switch.store.schema import employees
from tests.integration.harness import EMPLOYEE, World, world_fixture


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def older_pin_hash(pin: str, form: str) -> str:
    salt = secrets.token_bytes(16)
    iterations = (
        credentials.LEGACY_PIN_ITERATIONS
        if form == "first form"
        else credentials.EMPLOYEE_PIN_ITERATIONS // 2
    )
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    salt_digest = f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    return f"pbkdf2${salt_digest}" if form == "first form" else f"pbkdf2${iterations}${salt_digest}"


def employee_row(world: World) -> tuple[str, str]:
    """(employee_id, pin_hash) of the World's employee."""
    with world.server.core.store.engine.connect() as conn:
        row = conn.execute(
            select(employees.c.employee_id, employees.c.pin_hash).where(
                employees.c.merchant_id == world.merchant_id,
                employees.c.employee_number == EMPLOYEE.employee_number,
            )
        ).one()
    return str(row.employee_id), str(row.pin_hash)


def store_pin_hash(world: World, pin_hash: str) -> None:
    employee_id, _ = employee_row(world)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(employees).where(employees.c.employee_id == employee_id).values(pin_hash=pin_hash)
        )


@pytest.mark.parametrize("form", ["first form", "fewer iterations"])
def test_a_right_pin_stores_an_older_hash_again_with_todays_iterations(world: World, form: str) -> None:
    old = older_pin_hash(EMPLOYEE.pin, form)
    store_pin_hash(world, old)
    assert not credentials.employee_pin_hash_is_current(old)
    terminal = world.terminals[0]
    card = world.issue(1_000)
    sale = terminal.redeem(card, 300)
    assert sale.response_code == "00"
    assert terminal.refund(sale.transaction_id, 100).response_code == "00"

    _, now = employee_row(world)
    assert now != old
    assert now.startswith(f"pbkdf2${credentials.EMPLOYEE_PIN_ITERATIONS}$")
    assert credentials.employee_pin_matches(EMPLOYEE.pin, now)
    # The next check matches the new hash and makes none again.
    assert terminal.refund(sale.transaction_id, 100).response_code == "00"
    assert employee_row(world)[1] == now


def test_a_wrong_pin_leaves_an_older_hash_as_it_is(world: World) -> None:
    old = older_pin_hash(EMPLOYEE.pin, "fewer iterations")
    store_pin_hash(world, old)
    terminal = world.terminals[0]
    sale = terminal.redeem(world.issue(1_000), 300)
    assert terminal.refund(sale.transaction_id, 100, pin="9999").response_code != "00"
    assert employee_row(world)[1] == old


def test_a_pin_changed_since_the_check_is_not_overwritten(world: World) -> None:
    """The journal stores the new hash only over the one checked: a PIN set meanwhile stays, and the
    write is not refused for it."""
    employee_id, changed = employee_row(world)
    checked = older_pin_hash(EMPLOYEE.pin, "fewer iterations")
    rehash = PinRehash(employee_id, checked, credentials.hash_employee_pin(EMPLOYEE.pin))
    result = world.server.core.writer.write_and_wait(Write(pin_rehash=rehash), 20)
    assert result.ok, result
    assert employee_row(world)[1] == changed
