"""Values longer than their columns: INVALID_ARGUMENT naming the field, as locations do
(`location name is 121 characters; at most 120`), not an internal error (on PostgreSQL the column
refuses them, DataError)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture
from tests.integration.test_portal import refusal, sign_in, stub


@pytest.fixture(params=["postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=0)


@pytest.mark.parametrize(
    ("number", "name"),
    [("9" * 21, "Till"), ("21", "N" * 121)],
    ids=["employee_number of 21", "name of 121"],
)
def test_a_too_long_employee_number_or_name_is_refused_by_name(world: World, number: str, name: str) -> None:
    request = bo.AddEmployeeRequest(employee_number=number, name=name, pin="1357", role="cashier")
    code, details = refusal(stub(world).AddEmployee, request, metadata=sign_in(world), timeout=20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_a_too_long_new_name_of_a_user_is_refused_by_name(world: World) -> None:
    mine = sign_in(world)
    stub(world).AddEmployee(
        bo.AddEmployeeRequest(employee_number="21", name="Till", pin="1357", role="cashier"), metadata=mine
    )
    request = bo.UpdateEmployeeRequest(employee_number="21", name="N" * 121)
    code, details = refusal(stub(world).UpdateEmployee, request, metadata=mine, timeout=20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_a_too_long_device_name_is_refused_by_name(world: World) -> None:
    request = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD, device_name="D" * 121, location="Shop"
    )
    code, details = refusal(pb_grpc.TerminalStub(world.channel).Activate, request, timeout=20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
