"""The gift-card programme's redemption in the web back office ("afwaarderen via PC": the card number
typed in, the balance shown, then 'Voltooien'), through the portal over real gRPC on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.admin import WEB_BACK_OFFICE
from switch.domain.cards import qr_payload
from tests.integration.harness import (
    EMPLOYEE,
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    World,
    new_txn,
    world_fixture,
)
from tests.integration.test_portal import OTHER_EMAIL, OTHER_PASSWORD, days, refusal, sign_in, stub

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def redeem(
    world: World, metadata: Metadata, card: str, amount_minor: int, txn: str = "", **fields: object
) -> pb.TransactionResponse:
    request = portal.PortalRedeemRequest(
        transaction_id=txn or new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        **fields,  # type: ignore[arg-type]
    )
    answer: pb.TransactionResponse = stub(world).Redeem(request, metadata=metadata, timeout=20)
    return answer


def test_a_merchant_redeems_a_typed_card_number_partly_and_the_report_shows_it(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    shown = stub(world).CardBalance(pb.BalanceRequest(card=pb.CardRef(card_number=card)), metadata=owner)
    assert (shown.response_code, shown.balance.amount_minor, shown.card_status) == ("00", 5_000, "active")
    assert card not in str(shown)  # masked
    txn = new_txn()
    answer = redeem(world, owner, card, 1_250, txn)
    assert (answer.response_code, answer.approved.amount_minor) == ("00", 1_250), answer.message
    assert redeem(world, owner, card, 1_250, txn) == answer  # sent again: the first answer, moved once
    assert world.terminals[0].balance(card) == 3_750
    partial = redeem(world, owner, card, 9_000, allow_partial=True)
    assert (partial.response_code, partial.approved.amount_minor) == ("10", 3_750)
    assert world.terminals[0].balance(card) == 0
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)
    report = stub(world).ListTransactions(
        bo.TransactionReportRequest(types=["redemption"], **days()), metadata=owner, timeout=20
    )
    assert sorted(t.approved.amount_minor for t in report.transactions) == [1_250, 3_750]
    terminals = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=owner, timeout=20)
    (web,) = [t for t in terminals.terminals if t.device_name == WEB_BACK_OFFICE]
    assert {t.terminal_id for t in report.transactions} == {web.terminal_id}
    # The merchant is owed it as for a terminal's redemption (commission 2.5 % at payout).
    summary = stub(world).GetMerchantSummary(bo.MerchantSummaryRequest(**days()), metadata=owner, timeout=20)
    owed = {p.programme_id: p.owed.amount_minor for p in summary.programmes}
    assert owed[world.gift_programme] == 5_000


def test_the_card_rules_hold_as_at_a_terminal(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(1_000)
    assert redeem(world, owner, card, 2_000).response_code == "51"
    foreign = world.issue(1_000, world.foreign_programme)
    assert redeem(world, owner, foreign, 100).response_code == "58"
    by_qr = portal.PortalRedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(qr_payload=qr_payload(card)),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
    )
    assert stub(world).Redeem(by_qr, metadata=owner, timeout=20).response_code == "00"
    txn = new_txn()
    assert redeem(world, owner, card, 100, txn).response_code == "00"
    assert redeem(world, owner, card, 200, txn).response_code == "94"  # the id with other content
    code, details = refusal(stub(world).Redeem, portal.PortalRedeemRequest(), metadata=owner, timeout=20)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "transaction_id is missing" in details
    assert world.terminals[0].balance(card) == 800


def test_a_cashier_redeems_and_nobody_signed_out_or_of_another_merchant_can(world: World) -> None:
    admin = world.server.core.admin
    admin.add_employee(
        world.merchant_id,
        "31",
        "Till",
        "1357",
        "cashier",
        email="till@example.test",
        password="till-password",
    )
    card = world.issue(1_000)
    cashier = sign_in(world, "till@example.test", "till-password")
    assert redeem(world, cashier, card, 100).response_code == "00"
    code, _ = refusal(stub(world).Redeem, portal.PortalRedeemRequest(), timeout=20)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    # Another merchant names this merchant's location: it is none of theirs.
    other_id = admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    admin.add_location(other_id, "Bakery")
    (shop,) = admin.list_locations(world.merchant_id)
    bakery = sign_in(world, OTHER_EMAIL, OTHER_PASSWORD)
    request = portal.PortalRedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
        location_id=shop.location_id,
    )
    code, details = refusal(stub(world).Redeem, request, metadata=bakery, timeout=20)
    assert code is grpc.StatusCode.NOT_FOUND and "no such location of yours" in details
    assert world.terminals[0].balance(card) == 900


def test_with_two_locations_the_redemption_names_where_it_counts(world: World) -> None:
    admin = world.server.core.admin
    second = admin.add_location(world.merchant_id, "Second shop")
    owner = sign_in(world)
    card = world.issue(1_000)
    code, details = refusal(
        stub(world).Redeem,
        portal.PortalRedeemRequest(
            transaction_id=new_txn(),
            card=pb.CardRef(card_number=card),
            amount=pb.Amount(amount_minor=100, currency="EUR"),
        ),
        metadata=owner,
        timeout=20,
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "location_id is missing" in details
    assert redeem(world, owner, card, 100, location_id=second).response_code == "00"


def test_no_device_may_activate_as_the_web_back_office(world: World) -> None:
    request = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL,
        password=MERCHANT_PASSWORD,
        device_name="Web Back Office",
        location="Shop",
    )
    code, details = refusal(pb_grpc.TerminalStub(world.channel).Activate, request, timeout=20)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "web back office" in details


def test_a_web_redemption_is_refunded_or_cancelled_with_an_employees_pin(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    sale, other = new_txn(), new_txn()
    assert redeem(world, owner, card, 1_000, sale).response_code == "00"
    assert redeem(world, owner, card, 300, other).response_code == "00"
    employee = pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin)

    def refund(original: str, amount_minor: int, auth: pb.EmployeeAuth = employee) -> pb.TransactionResponse:
        request = portal.PortalRefundRequest(
            transaction_id=new_txn(),
            original_transaction_id=original,
            amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
            employee=auth,
        )
        answer: pb.TransactionResponse = stub(world).Refund(request, metadata=owner, timeout=20)
        return answer

    wrong = pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin="0000")
    assert refund(sale, 400, wrong).response_code == "55"
    assert refund(sale, 400).response_code == "00"
    assert refund(sale, 700).response_code == "13"  # more than is left of it
    cancel = portal.PortalCancelRequest(
        transaction_id=new_txn(), original_transaction_id=other, employee=employee
    )
    assert stub(world).Cancel(cancel, metadata=owner, timeout=20).response_code == "00"
    assert world.terminals[0].balance(card) == 5_000 - 1_000 + 400
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


def test_each_web_transaction_writes_the_transaction_log_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # A newcomer grepping the log for a web redemption found nothing: only terminals' were logged.
    owner = sign_in(world)
    card = world.issue(1_000)
    caplog.set_level(logging.INFO)
    txn = new_txn()
    assert redeem(world, owner, card, 400, txn).response_code == "00"
    assert redeem(world, owner, card, 5_000).response_code == "51"
    terminals = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=owner, timeout=20)
    (web,) = [t for t in terminals.terminals if t.device_name == WEB_BACK_OFFICE]
    logged = [
        (r.__dict__["terminal_id"], r.__dict__["type"], r.__dict__["response_code"])
        for r in caplog.records
        if r.getMessage() == "transaction"
    ]
    assert logged == [(web.terminal_id, "redemption", "00"), (web.terminal_id, "redemption", "51")]
    assert any(r.__dict__.get("transaction_id") == txn for r in caplog.records)
    assert card not in caplog.text
