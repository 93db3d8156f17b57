"""Merchant users and their 4-digit PINs: added, listed, changed, deactivated; SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from switch import cli
from switch.store.schema import employees
from tests.integration.harness import ADMIN_TOKEN, EMPLOYEE, MERCHANT_EMAIL, MERCHANT_PASSWORD, World


def update(world: World, **fields: object) -> bo.Employee:
    request = bo.UpdateEmployeeRequest(merchant_id=world.merchant_id, **fields)  # type: ignore[arg-type]
    updated: bo.Employee = world.backoffice.UpdateEmployee(request, metadata=world.admin_metadata, timeout=20)
    return updated


def failed_tries(world: World, number: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        return int(
            conn.execute(
                select(employees.c.failed_tries).where(
                    employees.c.merchant_id == world.merchant_id, employees.c.employee_number == number
                )
            ).scalar_one()
        )


def test_a_deactivated_users_pin_refunds_nothing_until_it_is_active_again(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 2_000, "sale-1").response_code == "00"
    off = update(world, employee_number=EMPLOYEE.employee_number, active=False)
    assert (off.active, off.role) == (False, "manager")
    refused = terminal.refund("sale-1", 500)
    assert refused.response_code == "55"
    assert failed_tries(world, EMPLOYEE.employee_number) == 0  # not a wrong PIN: nothing to lock
    on = update(world, employee_number=EMPLOYEE.employee_number, active=True)
    assert on.active
    assert terminal.refund("sale-1", 500).response_code == "00"


def test_a_new_pin_replaces_the_old_one_and_clears_the_lock(world: World) -> None:
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(5_000), 2_000, "sale-1").response_code == "00"
    answers = [terminal.refund("sale-1", 100, pin="0000").response_code for _ in range(3)]
    assert answers == ["55", "55", "75"]  # the third wrong PIN locks the employee
    listed = world.backoffice.ListEmployees(
        bo.ListEmployeesRequest(merchant_id=world.merchant_id), metadata=world.admin_metadata
    )
    (locked,) = listed.employees
    assert locked.locked_until and "pin" not in str(listed).lower()
    changed = update(world, employee_number=EMPLOYEE.employee_number, pin="2468")
    assert not changed.locked_until
    assert terminal.refund("sale-1", 100, pin=EMPLOYEE.pin).response_code == "55"
    assert terminal.refund("sale-1", 100, pin="2468").response_code == "00"


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"employee_number": "404", "active": False}, grpc.StatusCode.NOT_FOUND, "employee_number '404'"),
        (
            {"employee_number": "7", "pin": "12a4"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be exactly 4 digits",
        ),
        (
            {"employee_number": "7", "role": "owner"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "role 'owner' is not one of",
        ),
        ({"employee_number": ""}, grpc.StatusCode.INVALID_ARGUMENT, "employee_number is missing"),
    ],
)
def test_a_bad_change_names_what_is_wrong_and_changes_nothing(
    world: World, fields: dict[str, object], status: grpc.StatusCode, named: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        update(world, **fields)
    assert refused.value.code() == status
    assert named in (refused.value.details() or "")
    assert world.terminals[0].redeem(world.issue(1_000), 100, "s").response_code == "00"
    assert world.terminals[0].refund("s", 100).response_code == "00"  # PIN and role as they were


def test_a_user_number_in_use_is_already_exists_naming_it_and_the_first_user_keeps_its_pin(
    world: World,
) -> None:
    stub = portal_grpc.PortalStub(world.channel)
    token = stub.SignIn(portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD)).token
    again = bo.AddEmployeeRequest(
        merchant_id=world.merchant_id, employee_number=EMPLOYEE.employee_number, name="Twin", pin="9999"
    )
    for call, metadata in (
        (world.backoffice.AddEmployee, world.admin_metadata),
        (stub.AddEmployee, (("authorization", f"Bearer {token}"),)),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call(again, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert refused.value.details() == f"employee number '{EMPLOYEE.employee_number}' exists already"
    (user,) = world.server.core.admin.list_employees(world.merchant_id)
    assert user.name != "Twin"
    assert world.terminals[0].redeem(world.issue(1_000), 100, "s").response_code == "00"
    assert world.terminals[0].refund("s", 100, pin="9999").response_code == "55"
    assert world.terminals[0].refund("s", 100).response_code == "00"


def test_the_merchant_manages_its_own_users_in_the_portal(world: World) -> None:
    stub = portal_grpc.PortalStub(world.channel)
    other = world.server.core.admin.create_merchant("Bakery", "bakery@example.test", "bakery-password")
    world.server.core.admin.add_employee(other, "1", "Baker", "1111", "manager")
    token = stub.SignIn(portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD)).token
    mine = (("authorization", f"Bearer {token}"),)
    added = stub.AddEmployee(
        bo.AddEmployeeRequest(employee_number="8", name="Bo", pin="8888", role="cashier"), metadata=mine
    )
    assert (added.merchant_id, added.active, added.role) == (world.merchant_id, True, "cashier")
    numbers = [
        e.employee_number for e in stub.ListEmployees(bo.ListEmployeesRequest(), metadata=mine).employees
    ]
    assert numbers == ["7", "8"]
    assert not stub.UpdateEmployee(
        bo.UpdateEmployeeRequest(employee_number="8", active=False), metadata=mine
    ).active
    with pytest.raises(grpc.RpcError) as refused:  # the other merchant's user 1 is not ours
        stub.UpdateEmployee(bo.UpdateEmployeeRequest(employee_number="1", active=False), metadata=mine)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListEmployees(bo.ListEmployeesRequest(merchant_id=other), metadata=mine)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [e.active for e in world.server.core.admin.list_employees(other)] == [True]


def test_the_admin_command_takes_true_and_false(world: World, tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    base = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address, "update-employee"]
    assert cli.main([*base, f"merchant_id={world.merchant_id}", "employee_number=7", "active=false"]) == 0
    assert [e.active for e in world.server.core.admin.list_employees(world.merchant_id)] == [False]
    assert cli.main([*base, f"merchant_id={world.merchant_id}", "employee_number=7", "active=maybe"]) == 2
