"""A sign-in, or a terminal activation, whose password check passed at the moment the login's address,
role or state changed opens nothing (audit after session 22: only a new password was checked for
again, so a sign-in of a user whose address was changed meanwhile got a working session, and one
deactivated and reactivated meanwhile too; an activation checked nothing again at all).

The interleaving is made deterministic as in test_portal_races.py: the server thread that has just
passed the password check waits before its next transaction while the test changes the login.
Real gRPC on loopback, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from tests.integration.harness import World, world_fixture
from tests.integration.test_portal import days, sign_in, stub
from tests.integration.test_portal_races import (
    MANAGER_EMAIL,
    MANAGER_PASSWORD,
    add_manager,
    in_thread,
    paused_after_password_check,
)

# What the owner does to the manager's login while its sign-in waits: each one signs it out everywhere.
CHANGES = {
    "new address": [bo.UpdateEmployeeRequest(employee_number="51", email="moved@example.test")],
    "deactivation": [bo.UpdateEmployeeRequest(employee_number="51", active=False)],
    "deactivation, then reactivation": [
        bo.UpdateEmployeeRequest(employee_number="51", active=False),
        bo.UpdateEmployeeRequest(employee_number="51", active=True),
    ],
    "new role": [bo.UpdateEmployeeRequest(employee_number="51", role="cashier")],
}


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def change_while_paused(
    world: World, call: object, changes: list[bo.UpdateEmployeeRequest]
) -> dict[str, object]:
    owner = sign_in(world)
    with paused_after_password_check(world) as (reached, release):
        thread, out = in_thread(call)  # type: ignore[arg-type]
        assert reached.wait(10), "the manager's call did not pass the password check"
        for change in changes:
            stub(world).UpdateEmployee(change, metadata=owner, timeout=20)
        release.set()
        thread.join(20)
    assert not thread.is_alive()
    return out


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_sign_in_checked_before_a_change_of_the_login_opens_no_session(world: World, change: str) -> None:
    add_manager(world)
    out = change_while_paused(
        world,
        lambda: stub(world).SignIn(
            portal.SignInRequest(email=MANAGER_EMAIL, password=MANAGER_PASSWORD), timeout=20
        ),
        CHANGES[change],
    )
    if "error" in out:
        assert out["error"] == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
        return
    session = (("authorization", f"Bearer {out['answer'].token}"),)  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as refused:
        stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=session, timeout=20)
        pytest.fail(f"a session opened by a password checked before the {change} works")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("change", ["new address", "deactivation", "deactivation, then reactivation"])
def test_an_activation_checked_before_a_change_of_the_login_yields_no_terminal(
    world: World, change: str
) -> None:
    add_manager(world)
    terminal = pb_grpc.TerminalStub(world.channel)
    request = pb.ActivateRequest(
        merchant_email=MANAGER_EMAIL, password=MANAGER_PASSWORD, device_name="till-9", location="Shop"
    )
    out = change_while_paused(world, lambda: terminal.Activate(request, timeout=20), CHANGES[change])
    assert "error" in out, f"an activation by a password checked before the {change} was answered OK"
    assert out["error"][0] == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[index]
    listed = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=sign_in(world), timeout=20)
    assert "till-9" not in [t.device_name for t in listed.terminals]


def test_a_sign_in_with_nothing_changed_meanwhile_opens_a_session(world: World) -> None:
    add_manager(world)
    out = change_while_paused(
        world,
        lambda: stub(world).SignIn(
            portal.SignInRequest(email=MANAGER_EMAIL, password=MANAGER_PASSWORD), timeout=20
        ),
        [bo.UpdateEmployeeRequest(employee_number="51", name="Renamed")],  # not a change of the login
    )
    session = (("authorization", f"Bearer {out['answer'].token}"),)  # type: ignore[attr-defined]
    assert stub(world).ListEmployees(bo.ListEmployeesRequest(), metadata=session, timeout=20).employees
