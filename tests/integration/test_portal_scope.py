"""The portal's audit tables: a login of another merchant naming this merchant's ids reads and changes
nothing of it, and a cashier does nothing but the reports and the counter's work (PORTAL_RIGHTS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import EMPLOYEE, World, new_txn, world_fixture
from tests.integration.test_portal import OTHER_EMAIL, OTHER_PASSWORD, days, sign_in, stub

Metadata = tuple[tuple[str, str], ...]
CASHIER_EMAIL, CASHIER_PASSWORD = "till@example.test", "till-password"


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@dataclass(frozen=True)
class Shop:
    """This merchant's ids, as another merchant might name them."""

    merchant_id: str
    location_id: str
    terminal_id: str
    sale_id: str
    card: str


def shop_of(world: World) -> Shop:
    (location,) = world.server.core.admin.list_locations(world.merchant_id)
    card = world.issue(5_000)
    sale_id = new_txn()
    assert world.terminals[0].redeem(card, 1_000, sale_id).response_code == "00"
    return Shop(world.merchant_id, location.location_id, world.terminals[0].terminal_id, sale_id, card)


def code_of(call: Callable[[], object]) -> str:
    """The status's name, or the answer's response code when it is a transaction's."""
    try:
        answer = call()
    except grpc.RpcError as error:
        return str(error.code().name)
    if isinstance(answer, pb.TransactionResponse):
        return answer.response_code
    return "OK"


def export(world: World, metadata: Metadata, report: bo.TransactionReportRequest) -> list[bo.CsvChunk]:
    request = bo.TransactionExportRequest(report=report)
    return list(stub(world).ExportTransactions(request, metadata=metadata, timeout=20))


# One row per way another merchant's login names this merchant's ids; each must be refused.
FOREIGN: list[tuple[str, Callable[[World, Metadata, Shop], object]]] = [
    ("report of its merchant", lambda w, m, s: stub(w).ListTransactions(
        bo.TransactionReportRequest(merchant_id=s.merchant_id, **days()), metadata=m)),
    ("report of its terminal", lambda w, m, s: stub(w).ListTransactions(
        bo.TransactionReportRequest(terminal_id=s.terminal_id, **days()), metadata=m)),
    ("report of its location", lambda w, m, s: stub(w).ListTransactions(
        bo.TransactionReportRequest(location_ids=[s.location_id], **days()), metadata=m)),
    ("export of its merchant", lambda w, m, s: export(
        w, m, bo.TransactionReportRequest(merchant_id=s.merchant_id, **days()))),
    ("export of its terminal", lambda w, m, s: export(
        w, m, bo.TransactionReportRequest(terminal_id=s.terminal_id, **days()))),
    ("its dashboard and payouts", lambda w, m, s: stub(w).GetMerchantSummary(
        bo.MerchantSummaryRequest(merchant_id=s.merchant_id, **days()), metadata=m)),
    ("its devices", lambda w, m, s: stub(w).ListTerminals(
        bo.ListTerminalsRequest(merchant_id=s.merchant_id), metadata=m)),
    ("its day closes", lambda w, m, s: stub(w).ListDayCloses(
        bo.DayCloseListRequest(terminal_id=s.terminal_id), metadata=m)),
    ("its users", lambda w, m, s: stub(w).ListEmployees(
        bo.ListEmployeesRequest(merchant_id=s.merchant_id), metadata=m)),
    ("a user added to it", lambda w, m, s: stub(w).AddEmployee(bo.AddEmployeeRequest(
        merchant_id=s.merchant_id, employee_number="66", name="Mole", pin="2468"), metadata=m)),
    ("its user deactivated", lambda w, m, s: stub(w).UpdateEmployee(bo.UpdateEmployeeRequest(
        merchant_id=s.merchant_id, employee_number=EMPLOYEE.employee_number, active=False), metadata=m)),
    ("its receipt layout set", lambda w, m, s: stub(w).SetReceiptLayout(
        bo.ReceiptLayout(merchant_id=s.merchant_id, header="Mole"), metadata=m)),
    ("its locations", lambda w, m, s: stub(w).ListLocations(
        bo.ListLocationsRequest(merchant_id=s.merchant_id), metadata=m)),
    ("a location added to it", lambda w, m, s: stub(w).AddLocation(
        bo.AddLocationRequest(merchant_id=s.merchant_id, name="Mole"), metadata=m)),
    ("its location's logo removed", lambda w, m, s: stub(w).SetLocationLogo(
        bo.LocationLogo(merchant_id=s.merchant_id, location="Shop", remove_logo=True), metadata=m)),
    ("its location's change asked", lambda w, m, s: stub(w).AskLocationChange(bo.AskLocationChangeRequest(
        merchant_id=s.merchant_id, location_id=s.location_id, name="Mole"), metadata=m)),
    ("its location's change asked as one's own", lambda w, m, s: stub(w).AskLocationChange(
        bo.AskLocationChangeRequest(location_id=s.location_id, name="Mole"), metadata=m)),
    ("its location changes", lambda w, m, s: stub(w).ListLocationChanges(
        bo.ListLocationChangesRequest(merchant_id=s.merchant_id), metadata=m)),
    ("its receipt's preview", lambda w, m, s: stub(w).PreviewReceipt(
        portal.PreviewReceiptRequest(location="Shop"), metadata=m)),
    ("a redemption at its location", lambda w, m, s: stub(w).Redeem(portal.PortalRedeemRequest(
        transaction_id=new_txn(), card=pb.CardRef(card_number=s.card),
        amount=pb.Amount(amount_minor=100, currency="EUR"), location_id=s.location_id), metadata=m)),
    ("its web day closed", lambda w, m, s: stub(w).CloseWebDay(
        portal.CloseWebDayRequest(location_id=s.location_id, period_number=1), metadata=m)),
    ("its sale cancelled at one's own location", lambda w, m, s: stub(w).Cancel(portal.PortalCancelRequest(
        transaction_id=new_txn(), original_transaction_id=s.sale_id, employee=EMPLOYEE), metadata=m)),
    ("its sale refunded at one's own location", lambda w, m, s: stub(w).Refund(portal.PortalRefundRequest(
        transaction_id=new_txn(), original_transaction_id=s.sale_id,
        amount=pb.Amount(amount_minor=100, currency="EUR"), employee=EMPLOYEE), metadata=m)),
]  # fmt: skip


def test_another_merchants_login_reads_and_changes_nothing_of_this_merchant(world: World) -> None:
    shop = shop_of(world)
    admin = world.server.core.admin
    bakery_id = admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    admin.add_location(bakery_id, "Bakery")
    admin.join_programme(bakery_id, world.gift_programme, 250)
    # The Bakery's own employee 7 with the same PIN: only the original's owner can stop a cancel.
    admin.add_employee(bakery_id, EMPLOYEE.employee_number, "Baker", EMPLOYEE.pin, "manager")
    bakery = sign_in(world, OTHER_EMAIL, OTHER_PASSWORD)
    before = seen_by_the_operator(world, shop)
    answered = {case: code_of(lambda: call(world, bakery, shop)) for case, call in FOREIGN}  # noqa: B023
    opened = {case: code for case, code in answered.items() if code in ("OK", "00", "10")}
    assert opened == {}, answered
    assert seen_by_the_operator(world, shop) == before


def seen_by_the_operator(world: World, shop: Shop) -> tuple[object, ...]:
    core = world.server.core
    return (
        [(e.employee_number, e.active, e.role) for e in core.admin.list_employees(shop.merchant_id)],
        [(info.name, info.address, info.has_logo) for info in core.admin.list_locations(shop.merchant_id)],
        [(c.location_id, c.status) for c in core.location_changes.list(shop.merchant_id)],
        core.receipts.layout(shop.merchant_id),
        world.terminals[0].balance(shop.card),
    )


# Every portal call that is neither the reports nor the counter's work, and what it needs.
NOT_A_CASHIERS: list[tuple[str, Callable[[World, Metadata], object]]] = [
    ("payouts", lambda w, m: stub(w).GetMerchantSummary(bo.MerchantSummaryRequest(**days()), metadata=m)),
    ("users", lambda w, m: stub(w).ListEmployees(bo.ListEmployeesRequest(), metadata=m)),
    ("users", lambda w, m: stub(w).AddEmployee(
        bo.AddEmployeeRequest(employee_number="66", name="Mole", pin="2468"), metadata=m)),
    ("users", lambda w, m: stub(w).UpdateEmployee(
        bo.UpdateEmployeeRequest(employee_number=EMPLOYEE.employee_number, active=False), metadata=m)),
    ("settings", lambda w, m: stub(w).GetReceiptLayout(portal.GetReceiptLayoutRequest(), metadata=m)),
    ("settings", lambda w, m: stub(w).SetReceiptLayout(bo.ReceiptLayout(header="Mole"), metadata=m)),
    ("settings", lambda w, m: stub(w).PreviewReceipt(portal.PreviewReceiptRequest(), metadata=m)),
    ("settings", lambda w, m: stub(w).AddLocation(bo.AddLocationRequest(name="Mole"), metadata=m)),
    ("settings", lambda w, m: stub(w).SetLocationLogo(
        bo.LocationLogo(location="Shop", remove_logo=True), metadata=m)),
    ("settings", lambda w, m: stub(w).AskLocationChange(
        bo.AskLocationChangeRequest(location_id="loc_any", name="Mole"), metadata=m)),
]  # fmt: skip


def test_a_cashier_is_refused_every_call_but_the_reports_and_the_counters_work(world: World) -> None:
    shop = shop_of(world)
    admin = world.server.core.admin
    admin.add_employee(
        shop.merchant_id, "21", "Till", "1357", "cashier", email=CASHIER_EMAIL, password=CASHIER_PASSWORD
    )
    cashier = sign_in(world, CASHIER_EMAIL, CASHIER_PASSWORD)
    before = seen_by_the_operator(world, shop)
    answered = [(right, code_of(lambda: call(world, cashier))) for right, call in NOT_A_CASHIERS]  # noqa: B023
    assert answered == [(right, "PERMISSION_DENIED") for right, _ in NOT_A_CASHIERS]
    assert seen_by_the_operator(world, shop) == before
    # What is a cashier's still works: the report.
    report = stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=cashier, timeout=20)
    assert [t.transaction_id for t in report.transactions] == [shop.sale_id]
