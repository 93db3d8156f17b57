"""What a terminal may not send, found by the session 22 audit: each is refused by name and
changes nothing (before, each was judged or stored, and two of them locked out or lost money)."""

from __future__ import annotations

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from tests.integration.harness import EMPLOYEE, MERCHANT_EMAIL, MERCHANT_PASSWORD, World, new_txn


def test_an_id_named_like_a_reversal_is_refused_so_the_reversal_it_names_still_works(world: World) -> None:
    # Before, a redemption "reversal:x" took the id x's reversal is stored under: the reversal of x
    # was then refused 94 and x's money never went back to the card.
    terminal = world.terminals[0]
    card = world.issue(1_000)
    lost = new_txn()
    assert terminal.redeem(card, 100, lost).response_code == "00"  # its answer never reached the till
    for reserved in (f"reversal:{lost}", f"completion:{lost}"):
        with pytest.raises(grpc.RpcError) as refused:
            terminal.redeem(card, 200, reserved)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "transaction_id may not start with" in (refused.value.details() or "")
    reversal = terminal.reversal(lost)
    assert reversal.response_code == "00", reversal.message
    assert terminal.balance(card) == 1_000
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


def test_a_pin_with_a_trailing_newline_is_refused_and_counts_no_wrong_try(world: World) -> None:
    # "4321\n" passed a "^[0-9]{4}$" match: three of them locked the employee out for 15 minutes.
    terminal = world.terminals[0]
    card = world.issue(1_000)
    original = new_txn()
    assert terminal.redeem(card, 100, original).response_code == "00"
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as refused:
            terminal.cancel(original, pin=EMPLOYEE.pin + "\n")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pin" in (refused.value.details() or "")
    right = terminal.cancel(original)
    assert right.response_code == "00", right.message
    assert terminal.balance(card) == 1_000


@pytest.mark.parametrize("number", ["7" * 21, "7\x00"], ids=["too long", "unprintable"])
def test_an_employee_number_no_employee_can_have_is_refused_by_name(world: World, number: str) -> None:
    # Before, any length was judged as a PIN (55) and stored, and each number kept a lock in memory.
    terminal = world.terminals[0]
    txn = new_txn()
    request = pb.RefundRequest(
        transaction_id=txn,
        original_transaction_id=new_txn(),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
        employee=pb.EmployeeAuth(employee_number=number, pin=EMPLOYEE.pin),
    )
    with pytest.raises(grpc.RpcError) as refused:
        terminal.stub.Refund(request, metadata=terminal.metadata, timeout=20)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "employee.employee_number" in (refused.value.details() or "")
    status = terminal.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id=txn), metadata=terminal.metadata, timeout=20
    )
    assert not status.found  # nothing stored


@pytest.mark.parametrize(
    ("device", "location", "named"),
    [("A77-new", "L" * 20_000, "location"), ("A77\x00\n", "Shop", "device_name")],
    ids=["huge location", "unprintable device"],
)
def test_an_activation_with_a_name_no_device_or_location_can_have_is_refused_by_name(
    world: World, device: str, location: str, named: str
) -> None:
    # Before, the whole location was echoed, and past 16 KB the answer outgrew gRPC's metadata.
    request = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD, device_name=device, location=location
    )
    with pytest.raises(grpc.RpcError) as refused:
        pb_grpc.TerminalStub(world.channel).Activate(request, timeout=20)
    details = refused.value.details() or ""
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (refused.value.code(), details[:200])
    assert named in details and len(details) < 200
