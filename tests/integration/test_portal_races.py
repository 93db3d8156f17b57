"""The portal's passwords under races and floods, and what its reports tell of other merchants
(session 22 audit; each test failed before its fix).

- A password check and what it opens were two transactions: a sign-in with the old password got a
  session that outlived a password change, and a ChangePassword with the old password undid a
  password the owner set meanwhile. The write now checks the hash is still the one verified.
- ResetPassword hashed (scrypt, 16 MiB) before it looked the code up: made-up codes ran as many
  hashes at once as there were calls. It looks first.
- Another merchant's terminal or location was named as such in a report's refusal; it is now
  answered as one that does not exist, as ListDayCloses does.

Interleavings are made deterministic with hooks on the switch's own engine (harness on_statement,
on_transaction: never a listener added to a running switch's engine): a server
thread that has just passed the password check waits before its next transaction while the test
changes the password. Nothing of the switch is replaced; hashlib.scrypt (the standard library) is
wrapped to count the hashes in flight, and still computes them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from tests.integration.harness import World, on_statement, on_transaction, world_fixture
from tests.integration.test_portal import OTHER_EMAIL, OTHER_PASSWORD, days, refusal, sign_in, stub

MANAGER_EMAIL, MANAGER_PASSWORD = "manager@example.test", "office-password"
FLOOD = 8


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@contextmanager
def paused_after_password_check(world: World) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, release): the next server thread whose password check succeeds waits, before its
    next transaction, until release is set. Only the first such check is held."""
    engine = world.server.core.store.engine
    armed = threading.Event()
    armed.set()
    reached, release = threading.Event(), threading.Event()
    mine = threading.local()

    def after_execute(_cursor: Any, statement: str, _parameters: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM SIGN_IN_FAILURES") and armed.is_set():
            armed.clear()
            mine.held = True

    def on_begin() -> None:
        if getattr(mine, "held", False):
            mine.held = False
            reached.set()
            release.wait(10)

    with on_statement(engine, "after", after_execute), on_transaction(engine, "begin", on_begin):
        try:
            yield reached, release
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


def add_manager(world: World) -> None:
    world.server.core.admin.add_employee(
        world.merchant_id,
        "51",
        "Manager 51",
        "1357",
        "manager",
        email=MANAGER_EMAIL,
        password=MANAGER_PASSWORD,
    )


def test_a_sign_in_with_the_old_password_does_not_outlive_a_password_change(world: World) -> None:
    """The owner takes back a manager's login whose password leaked: every session must end, also
    the one the thief was opening at that moment with the old password."""
    add_manager(world)
    owner = sign_in(world)
    with paused_after_password_check(world) as (reached, release):
        thread, out = in_thread(
            lambda: stub(world).SignIn(
                portal.SignInRequest(email=MANAGER_EMAIL, password=MANAGER_PASSWORD), timeout=20
            )
        )
        assert reached.wait(10), "the thief's sign-in did not pass the password check"
        stub(world).UpdateEmployee(
            bo.UpdateEmployeeRequest(employee_number="51", password="taken-back"), metadata=owner, timeout=20
        )
        release.set()
        thread.join(20)
    if "error" in out:
        return  # refused: nothing opened with the old password
    thief = (("authorization", f"Bearer {out['answer'].token}"),)
    with pytest.raises(grpc.RpcError) as refused:
        listed = stub(world).ListEmployees(bo.ListEmployeesRequest(), metadata=thief, timeout=20)
        pytest.fail(
            "a session opened with the old password outlived the change: "
            f"it lists {len(listed.employees)} users"
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_change_password_with_the_old_password_does_not_undo_a_password_set_meanwhile(
    world: World,
) -> None:
    """The thief, signed in as the manager, changes its password at the moment the owner takes the
    login back: the owner's password must hold and the thief's must open nothing."""
    add_manager(world)
    thief = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    owner = sign_in(world)
    with paused_after_password_check(world) as (reached, release):
        thread, out = in_thread(
            lambda: stub(world).ChangePassword(
                portal.ChangePasswordRequest(current_password=MANAGER_PASSWORD, new_password="thiefs-own"),
                metadata=thief,
                timeout=20,
            )
        )
        assert reached.wait(10), "the thief's ChangePassword did not pass the password check"
        stub(world).UpdateEmployee(
            bo.UpdateEmployeeRequest(employee_number="51", password="taken-back"), metadata=owner, timeout=20
        )
        release.set()
        thread.join(20)
    assert "error" in out, "the thief's ChangePassword was answered OK after the owner set a new password"
    assert sign_in(world, MANAGER_EMAIL, "taken-back")
    with pytest.raises(grpc.RpcError) as refused:
        sign_in(world, MANAGER_EMAIL, "thiefs-own")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_made_up_reset_codes_run_no_more_password_hashes_at_once_than_sign_ins_may(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scrypt = hashlib.scrypt
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def counted(*args: Any, **kwargs: Any) -> bytes:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            time.sleep(0.3)  # long enough for the flood's calls to overlap
            return real_scrypt(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(hashlib, "scrypt", counted)
    start = threading.Barrier(FLOOD)
    answers: list[str] = []

    def attempt(n: int) -> None:
        start.wait()
        request = portal.ResetPasswordRequest(code=f"pr_made-up-{n}", new_password="whatever-1")
        try:
            stub(world).ResetPassword(request, timeout=20)
            answers.append("OK")
        except grpc.RpcError as error:
            answers.append(error.code().name)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(FLOOD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert "OK" not in answers
    allowed = world.server.settings.sign_ins_concurrent_max
    assert in_flight[1] <= allowed, (
        f"{in_flight[1]} password hashes ran at once for made-up reset codes; sign-ins may run {allowed}"
    )


def answer(
    world: World, metadata: object, request: bo.TransactionReportRequest, probed: str
) -> tuple[object, str]:
    code, details = refusal(stub(world).ListTransactions, request, metadata=metadata, timeout=20)
    return code, details.replace(probed, "<id>")


def test_another_merchants_terminal_is_answered_as_no_terminal_at_all(world: World) -> None:
    world.server.core.admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    theirs = sign_in(world, OTHER_EMAIL, OTHER_PASSWORD)
    real = world.terminals[0].terminal_id  # the Shop's, not the Bakery's
    made_up = "trm_0123456789abcdef"
    of_another = answer(world, theirs, bo.TransactionReportRequest(terminal_id=real, **days()), real)
    of_none = answer(world, theirs, bo.TransactionReportRequest(terminal_id=made_up, **days()), made_up)
    assert of_another[0] == grpc.StatusCode.NOT_FOUND
    assert of_another == of_none


def test_another_merchants_location_is_answered_as_no_location_at_all(world: World) -> None:
    world.server.core.admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    theirs = sign_in(world, OTHER_EMAIL, OTHER_PASSWORD)
    (shop,) = world.server.core.admin.list_locations(world.merchant_id)
    real, made_up = shop.location_id, "loc_0123456789abcdef"
    of_another = answer(world, theirs, bo.TransactionReportRequest(location_ids=[real], **days()), real)
    of_none = answer(world, theirs, bo.TransactionReportRequest(location_ids=[made_up], **days()), made_up)
    assert of_another[0] == grpc.StatusCode.NOT_FOUND
    assert of_another == of_none
