"""A right password whose stored hash was made at an older cost (the first form, without
parameters, or a lower scrypt n) is stored again at today's cost by that sign-in, portal or
terminal activation alike, without ever refusing the sign-in or undoing a password set meanwhile.

Today's cost is the module's constants as this test runs (tests/conftest.py lowers them), not
production's. Real gRPC on loopback, SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import ColumnElement, Table, select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch import credentials
from switch.store.schema import employees, merchants
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, on_statement, world_fixture
from tests.integration.test_portal import days, stub
from tests.integration.test_portal_races import (
    MANAGER_EMAIL,
    MANAGER_PASSWORD,
    add_manager,
    in_thread,
    paused_after_password_check,
)


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=0)


def older_hash(password: str, form: str) -> str:
    """password hashed as a switch before today's cost did: the first form (LEGACY_SCRYPT, no
    parameters written), or today's form at half of today's n."""
    salt = secrets.token_bytes(16)
    n, r, p = (
        credentials.LEGACY_SCRYPT if form == "first form" else (credentials.PASSWORD_SCRYPT_N // 2, 8, 1)
    )
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26)
    salt_digest = f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    return f"scrypt${salt_digest}" if form == "first form" else f"scrypt${n}${r}${p}${salt_digest}"


def row_of(world: World, who: str) -> tuple[Table, ColumnElement[bool]]:
    if who == "merchant":
        return merchants, merchants.c.merchant_id == world.merchant_id
    return employees, employees.c.email == MANAGER_EMAIL


def store_hash(world: World, who: str, password_hash: str) -> None:
    table, key = row_of(world, who)
    with world.server.core.store.engine.begin() as conn:
        assert conn.execute(update(table).where(key).values(password_hash=password_hash)).rowcount == 1


def stored_hash(world: World, who: str) -> str:
    table, key = row_of(world, who)
    with world.server.core.store.engine.connect() as conn:
        return str(conn.execute(select(table.c.password_hash).where(key)).scalar_one())


def sign_in(world: World, email: str, password: str) -> portal.PortalSession:
    return stub(world).SignIn(portal.SignInRequest(email=email, password=password), timeout=20)


def session_works(world: World, token: str) -> None:
    session = (("authorization", f"Bearer {token}"),)
    stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=session, timeout=20)


# (whose password, where it is given, the older hash's form)
CASES = [
    ("merchant", "portal", "first form"),
    ("merchant", "activation", "lower n"),
    ("user", "portal", "lower n"),
]


@pytest.mark.parametrize(("who", "entry", "form"), CASES)
def test_a_right_sign_in_stores_an_older_hash_again_at_todays_cost(
    world: World, who: str, entry: str, form: str
) -> None:
    if who == "user":
        add_manager(world)
    email, password = (
        (MERCHANT_EMAIL, MERCHANT_PASSWORD) if who == "merchant" else (MANAGER_EMAIL, MANAGER_PASSWORD)
    )
    old = older_hash(password, form)
    store_hash(world, who, old)
    assert not credentials.password_hash_is_current(old)

    if entry == "portal":
        session_works(world, sign_in(world, email, password).token)
    else:
        activated = pb_grpc.TerminalStub(world.channel).Activate(
            pb.ActivateRequest(merchant_email=email, password=password, device_name="A77-9", location="Shop"),
            timeout=20,
        )
        assert activated.terminal_id

    now = stored_hash(world, who)
    assert now != old
    n, r, p = credentials.PASSWORD_SCRYPT_N, credentials.PASSWORD_SCRYPT_R, credentials.PASSWORD_SCRYPT_P
    assert now.startswith(f"scrypt${n}${r}${p}$")
    assert credentials.password_matches(password, now)
    # The new hash is the one the next sign-in checks, and it is not made again.
    session_works(world, sign_in(world, email, password).token)
    assert stored_hash(world, who) == now


def test_a_wrong_password_leaves_an_older_hash_as_it_is(world: World) -> None:
    old = older_hash(MERCHANT_PASSWORD, "lower n")
    store_hash(world, "merchant", old)
    with pytest.raises(grpc.RpcError) as refused:
        sign_in(world, MERCHANT_EMAIL, "not-the-password")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stored_hash(world, "merchant") == old


def test_a_password_set_between_the_check_and_the_new_hash_is_not_overwritten(world: World) -> None:
    """The owner sets a new password while a sign-in with the old one (at an older cost) has passed its
    check: the new password stays, and the sign-in opens nothing."""
    store_hash(world, "merchant", older_hash(MERCHANT_PASSWORD, "lower n"))
    taken_back = credentials.hash_password("taken-back")
    with paused_after_password_check(world) as (reached, release):
        thread, out = in_thread(lambda: sign_in(world, MERCHANT_EMAIL, MERCHANT_PASSWORD))
        assert reached.wait(10), "the sign-in did not pass the password check"
        store_hash(world, "merchant", taken_back)
        release.set()
        thread.join(20)
    assert not thread.is_alive()
    assert out.get("error") == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
    assert stored_hash(world, "merchant") == taken_back


def test_two_right_sign_ins_at_once_both_open_a_session_when_one_stores_the_new_hash_first(
    world: World,
) -> None:
    """The first passes its check and waits; the second signs in whole and stores its hash at today's
    cost; the first's own hash then finds the row changed, and its sign-in still succeeds."""
    store_hash(world, "merchant", older_hash(MERCHANT_PASSWORD, "lower n"))
    with paused_after_password_check(world) as (reached, release):
        thread, out = in_thread(lambda: sign_in(world, MERCHANT_EMAIL, MERCHANT_PASSWORD))
        assert reached.wait(10), "the first sign-in did not pass the password check"
        session_works(world, sign_in(world, MERCHANT_EMAIL, MERCHANT_PASSWORD).token)
        second = stored_hash(world, "merchant")
        release.set()
        thread.join(20)
    assert not thread.is_alive()
    assert "error" not in out, out
    session_works(world, out["answer"].token)
    assert stored_hash(world, "merchant") == second
    assert credentials.password_hash_is_current(second)


def test_a_new_hash_that_cannot_be_stored_is_logged_and_the_sign_in_still_succeeds(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    old = older_hash(MERCHANT_PASSWORD, "lower n")
    store_hash(world, "merchant", old)

    def refuse(_cursor: object, statement: str, _parameters: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE MERCHANTS SET PASSWORD_HASH"):
            raise RuntimeError(f"refused by the test: {statement}")

    with on_statement(world.server.core.store.engine, "before", refuse):
        session_works(world, sign_in(world, MERCHANT_EMAIL, MERCHANT_PASSWORD).token)
    assert stored_hash(world, "merchant") == old
    assert "a password hash was not made again at today's cost: RuntimeError" in caplog.text
    assert "UPDATE" not in caplog.text
