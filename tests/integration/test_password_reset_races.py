"""A forgotten-password reset and an owner's change of the same user at once, on PostgreSQL (session
23 audit; the test failed before its fix).

`PasswordResets.reset` locked the code's row and then wrote the user's row; `UpdateEmployee` (a new
password, address or a deactivation) locked the user's row and then voided the user's codes. Taken
in opposite orders, PostgreSQL found a deadlock and ended one of the two with an error. Both now lock
the login's row first.

The interleaving is made deterministic with a statement hook on the switch's own engine: the
reset's thread waits just after it locked the code, until the owner's change is seen waiting for a
lock that thread holds. Nothing of the switch is replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from protocols.wire import backoffice_pb2 as bo
from tests.integration.harness import World, on_statement, world_fixture
from tests.integration.test_password_reset import (
    NEW_PASSWORD,
    USER_EMAIL,
    USER_PASSWORD,
    ask,
    next_code,
    reset,
)
from tests.integration.test_portal import refusal, sign_in
from tests.integration.test_receipts import Mailbox, mail_server

OWNERS_PASSWORD = "the-owners-choice"
WAIT_S = 10.0


@pytest.fixture(params=["postgres"])  # row locks; SQLite has one writer at a time
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    with mail_server() as (port, mailbox):
        settings = {"smtp_host": "127.0.0.1", "smtp_port": port}
        for world in world_fixture(request, tmp_path, terminals=0, **settings):
            yield world, mailbox


@contextmanager
def paused_after_the_code_is_locked(world: World) -> Iterator[tuple[threading.Event, dict[str, int]]]:
    """(release, held): the reset's thread waits just after its `SELECT … password_resets … FOR
    UPDATE`, until release is set; held["pid"] is its PostgreSQL backend."""
    engine = world.server.core.store.engine
    release = threading.Event()
    held: dict[str, int] = {}

    def after_execute(cursor: Any, statement: str, _parameters: Any) -> None:
        flat = " ".join(statement.split()).upper()
        if "FROM PASSWORD_RESETS" in flat and flat.endswith("FOR UPDATE") and not held:
            held["pid"] = int(cursor.connection.info.backend_pid)
            release.wait(WAIT_S)

    with on_statement(engine, "after", after_execute):
        try:
            yield release, held
        finally:
            release.set()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["answer"] = call()
        except grpc.RpcError as error:
            out["error"] = (error.code(), error.details())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def waiting_on(world: World, pid: int) -> int:
    """How many other backends wait for a lock the given backend holds."""
    with world.server.core.store.engine.connect() as conn:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
        return int(conn.execute(query, {"pid": pid}).scalar_one())


def wait_until(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_reset_and_an_owners_new_password_for_the_same_user_at_once_both_land(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    world.server.core.admin.add_employee(
        world.merchant_id, "3007", "Till", "2468", "manager", email=USER_EMAIL, password=USER_PASSWORD
    )
    ask(world, USER_EMAIL)
    code = next_code(mailbox, 1)
    owners_change = bo.UpdateEmployeeRequest(
        merchant_id=world.merchant_id, employee_number="3007", password=OWNERS_PASSWORD
    )
    with paused_after_the_code_is_locked(world) as (release, held):
        resetting, reset_out = in_thread(lambda: reset(world, code))
        wait_until(lambda: held)
        updating, update_out = in_thread(
            lambda: world.backoffice.UpdateEmployee(owners_change, metadata=world.admin_metadata, timeout=20)
        )
        wait_until(lambda: waiting_on(world, held["pid"]) > 0)  # the owner's change waits for the reset
        release.set()
        resetting.join(WAIT_S * 3)
        updating.join(WAIT_S * 3)
    assert "error" not in reset_out, reset_out
    assert "error" not in update_out, update_out
    assert reset_out["answer"].email == USER_EMAIL
    # The reset went first; the owner's password, set after it, is the one that stands.
    assert sign_in(world, USER_EMAIL, OWNERS_PASSWORD)
    assert refusal(sign_in, world, USER_EMAIL, NEW_PASSWORD)[0] == grpc.StatusCode.UNAUTHENTICATED
