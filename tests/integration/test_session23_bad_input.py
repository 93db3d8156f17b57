"""Bad input on the RPCs of session 23 (online top-ups, the web day's close, the export, payout
cycles): each is refused with the status that fits and details naming the field, never quoting
card data or the whole of a huge value, and changes nothing. One table of cases, on a real switch
on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest
from sqlalchemy import Table, select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import luhn_check_digit, mask
from switch.store.schema import (
    accounts,
    day_closes,
    journal_entries,
    payout_cycle_dues,
    payout_cycles,
    postings,
    terminals,
    top_ups,
    transactions,
)
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, new_txn, world_fixture
from tests.integration.test_portal import days, refusal

PSP_TOKEN = "test-psp-token"
OTHER_EMAIL, OTHER_PASSWORD = "bakery@example.test", "bakery-password"
MEGABYTE = "x" * (1 << 20)  # well within gRPC's 4 MiB message limit
DETAILS_CHARS_MAX = 300  # an answer names what is wrong; it never carries the value back whole
MONEY_TABLES: tuple[Table, ...] = (
    top_ups,
    transactions,
    journal_entries,
    postings,
    accounts,
    payout_cycles,
    payout_cycle_dues,
    day_closes,
    terminals,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_A_TOP_UP_ID = "top_up_id is not a top-up's id (tup_ and 16 hex digits)"
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request, tmp_path, terminals=1, cardholder_lookups_per_minute_max=10_000, psp_token=PSP_TOKEN
    )


def euros(amount_minor: int, currency: str = "EUR") -> pb.Amount:
    return pb.Amount(amount_minor=amount_minor, currency=currency)


def card_number_not_issued() -> str:
    """A number of the benefit programme's range with a good check digit (issued numbers are random)."""
    body = "600102" + "987654321"
    return body + luhn_check_digit(body)


@dataclasses.dataclass
class Scene:
    """The world the bad requests are sent into: a top-up in each state, another merchant's
    location, a portal session, and the cards' numbers (which no answer may quote)."""

    world: World
    holder: ch_grpc.CardholderStub
    portal: portal_grpc.PortalStub
    login: tuple[tuple[str, str], ...]
    taxi: str
    other_taxi: str
    blocked: str  # blocked after a top-up of it was started (r-blocked), before it was paid
    pending: str
    loaded: str
    refund_due: str
    others_loaded: str  # other_taxi's, confirmed by p-other
    foreign_location: str
    foreign_terminal: str
    unused_location: str  # the shop's, never used in the web back office

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return self.world.admin_metadata


def scene(world: World) -> Scene:
    core = world.server.core
    holder = ch_grpc.CardholderStub(world.channel)
    portal_stub = portal_grpc.PortalStub(world.channel)
    taxi = world.issue(0, world.benefit_programme)
    other_taxi = world.issue(0, world.benefit_programme)

    blocked = world.issue(0, world.benefit_programme)

    def started(amount_minor: int, request_id: str, card: str = taxi) -> str:
        request = ch.StartTopUpRequest(
            card=pb.CardRef(card_number=card), amount=euros(amount_minor), request_id=request_id
        )
        return str(holder.StartTopUp(request, timeout=20).top_up_id)

    def confirmed(top_up_id: str, reference: str, paid_minor: int) -> str:
        request = bo.ConfirmTopUpRequest(
            top_up_id=top_up_id, psp_reference=reference, amount_paid=euros(paid_minor)
        )
        return str(world.backoffice.ConfirmTopUp(request, metadata=world.admin_metadata, timeout=30).status)

    pending = started(500, "r-pending")
    loaded, refund_due = started(500, "r-loaded"), started(1_000, "r-short")
    assert confirmed(loaded, "p-loaded", 180) == "loaded"
    assert confirmed(refund_due, "p-short", 100) == "refund_due"
    others_loaded = started(500, "r-other", other_taxi)
    assert confirmed(others_loaded, "p-other", 180) == "loaded"
    started(500, "r-blocked", blocked)
    block = bo.BlockCardRequest(card=pb.CardRef(card_number=blocked), reason="stolen")
    world.backoffice.BlockCard(block, metadata=world.admin_metadata, timeout=20)
    bakery = core.admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    foreign_location = core.admin.add_location(bakery, "Bakery")
    foreign_terminal = core.web_terminal(bakery, foreign_location)
    session = portal_stub.SignIn(
        portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20
    )
    login = (("authorization", f"Bearer {session.token}"),)
    # The shop's web back office exists, with a closed day: CloseWebDay has a terminal to find.
    redeem = portal.PortalRedeemRequest(
        transaction_id=new_txn(), card=pb.CardRef(card_number=taxi), amount=euros(100)
    )
    assert portal_stub.Redeem(redeem, metadata=login, timeout=20).response_code == "00"
    portal_stub.CloseWebDay(portal.CloseWebDayRequest(period_number=1), metadata=login, timeout=20)
    unused_location = core.admin.add_location(world.merchant_id, "Shop Noord")
    return Scene(
        world,
        holder,
        portal_stub,
        login,
        taxi,
        other_taxi,
        blocked,
        pending,
        loaded,
        refund_due,
        others_loaded,
        foreign_location,
        foreign_terminal,
        unused_location,
    )


def state(world: World) -> dict[str, list[str]]:
    """Every row that holds money, a top-up, a payout cycle or a terminal's period."""
    with world.server.core.store.engine.connect() as conn:
        return {
            table.name: sorted(str(tuple(row)) for row in conn.execute(select(table)).all())
            for table in MONEY_TABLES
        }


def export(stub: Any) -> Callable[..., list[bytes]]:
    def call(request: bo.TransactionExportRequest, **kwargs: Any) -> list[bytes]:
        return [chunk.csv for chunk in stub.ExportTransactions(request, **kwargs)]

    return call


def report(**fields: Any) -> bo.TransactionExportRequest:
    """An export of today's report with `fields` changed (`dialect` is the export's own)."""
    dialect = fields.pop("dialect", "")
    return bo.TransactionExportRequest(
        report=bo.TransactionReportRequest(**{**days(), **fields}), dialect=dialect
    )


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    call: Callable[..., Any]
    request: object
    code: grpc.StatusCode
    begins: str  # the details begin so, naming the field
    metadata: tuple[tuple[str, str], ...] = ()


def cases(s: Scene) -> list[Case]:
    start, get = s.holder.StartTopUp, s.holder.GetTopUp
    confirm, listed, refunded = (
        s.world.backoffice.ConfirmTopUp,
        s.world.backoffice.ListTopUps,
        (s.world.backoffice.MarkTopUpRefunded),
    )
    close, settle = s.portal.CloseWebDay, s.world.backoffice.SettleDue
    exports = {"backoffice": (export(s.world.backoffice), s.admin), "portal": (export(s.portal), s.login)}
    admin, login = s.admin, s.login

    def starting(card: str = s.taxi, amount: pb.Amount | None = None, request_id: str = "r-new") -> object:
        request = ch.StartTopUpRequest(card=pb.CardRef(card_number=card), request_id=request_id)
        request.amount.CopyFrom(amount or euros(500))
        return request

    def told(top_up_id: str = s.pending, reference: str = "p-new", paid: pb.Amount | None = None) -> object:
        request = bo.ConfirmTopUpRequest(top_up_id=top_up_id, psp_reference=reference)
        request.amount_paid.CopyFrom(paid or euros(180))
        return request

    def marking(top_up_id: str = s.refund_due, reference: str = "rf-new") -> object:
        return bo.MarkTopUpRefundedRequest(top_up_id=top_up_id, refund_reference=reference)

    table = [
        # Cardholder.StartTopUp
        Case(
            "start: a 1 MB request_id", start, starting(request_id=MEGABYTE), INVALID, "request_id is longer"
        ),
        Case("start: a 1 MB card number", start, starting(card=MEGABYTE), INVALID, "card.card_number"),
        Case(
            "start: a 1 MB QR payload",
            start,
            ch.StartTopUpRequest(card=pb.CardRef(qr_payload=MEGABYTE), amount=euros(500), request_id="r"),
            INVALID,
            "card.qr_payload is not a txswitch card QR code",
        ),
        Case("start: 2**63 - 1", start, starting(amount=euros(2**63 - 1)), INVALID, "amount above 99999999"),
        Case("start: -2**63", start, starting(amount=euros(-(2**63))), INVALID, "amount must be positive"),
        Case("start: XXX", start, starting(amount=euros(500, "XXX")), INVALID, "amount.currency: unknown"),
        Case(
            "start: a 1 MB currency",
            start,
            starting(amount=euros(500, MEGABYTE)),
            INVALID,
            "amount.currency must be a 3-letter",
        ),
        Case(
            "start: the request_id again, another amount",
            start,
            starting(amount=euros(1_500), request_id="r-pending"),
            grpc.StatusCode.ALREADY_EXISTS,
            "request_id 'r-pending' started another top-up already",
        ),
        Case(
            "start: an unknown card", start, starting(card=card_number_not_issued()), NOT_FOUND, "card 600102"
        ),
        Case("start: an empty request", start, ch.StartTopUpRequest(), INVALID, "request_id is missing"),
        Case("start: 0", start, starting(amount=euros(0)), INVALID, "amount must be positive"),
        Case("start: -500", start, starting(amount=euros(-500)), INVALID, "amount must be positive"),
        Case(
            "start: another currency",
            start,
            starting(amount=euros(500, "USD")),
            INVALID,
            "amount.currency: card is in EUR, request in USD",
        ),
        Case(
            "start: a blocked card",
            start,
            starting(card=s.blocked),
            PRECONDITION,
            f"card {mask(s.blocked)}: card is blocked",
        ),
        Case(
            "start: the request_id again, another currency",
            start,
            starting(amount=euros(500, "USD"), request_id="r-pending"),
            INVALID,
            "amount.currency: card is in EUR, request in USD",
        ),
        Case(
            "start: the request_id again, 2**63 - 1",
            start,
            starting(amount=euros(2**63 - 1), request_id="r-pending"),
            INVALID,
            "amount above 99999999 minor units",
        ),
        Case(
            "start: the other card's request_id again, another amount",
            start,
            starting(card=s.other_taxi, amount=euros(1_000), request_id="r-other"),
            grpc.StatusCode.ALREADY_EXISTS,
            "request_id 'r-other' started another top-up already",
        ),
        Case(
            "start: the request_id again, another amount, the card blocked since",
            start,
            starting(card=s.blocked, amount=euros(1_000), request_id="r-blocked"),
            grpc.StatusCode.ALREADY_EXISTS,
            "request_id 'r-blocked' started another top-up already",
        ),
        # Cardholder.GetTopUp
        Case("get: no id", get, ch.TopUpRequest(), INVALID, "top_up_id is missing"),
        Case("get: a 1 MB id", get, ch.TopUpRequest(top_up_id=MEGABYTE), INVALID, "top_up_id is longer"),
        Case("get: a NUL", get, ch.TopUpRequest(top_up_id="tup_\0"), INVALID, "top_up_id has characters"),
        # A holder who types the card's number where the top-up's id goes: refused, never quoted.
        Case(
            "get: a card number as the id", get, ch.TopUpRequest(top_up_id=s.taxi), INVALID, NOT_A_TOP_UP_ID
        ),
        Case("get: another shape", get, ch.TopUpRequest(top_up_id="tup_XYZ"), INVALID, NOT_A_TOP_UP_ID),
        Case(
            "get: an unknown id",
            get,
            ch.TopUpRequest(top_up_id="tup_0000aaaa0000aaaa"),
            NOT_FOUND,
            "top_up_id 'tup_0000aaaa0000aaaa': no such top-up",
        ),
        # Backoffice.ConfirmTopUp
        Case("confirm: a 1 MB id", confirm, told(MEGABYTE), INVALID, "top_up_id is longer", admin),
        Case(
            "confirm: a 1 MB reference", confirm, told(reference=MEGABYTE), INVALID, "psp_reference is", admin
        ),
        Case(
            "confirm: a lower-case currency",
            confirm,
            told(paid=euros(180, "eur")),
            INVALID,
            "amount_paid.currency must be a 3-letter",
            admin,
        ),
        Case(
            "confirm: no currency",
            confirm,
            told(paid=pb.Amount(amount_minor=180)),
            INVALID,
            "amount_paid.currency is missing",
            admin,
        ),
        Case(
            "confirm: 2**63 - 1 paid",
            confirm,
            told(paid=euros(2**63 - 1)),
            INVALID,
            "amount_paid above 99999999 minor units",
            admin,
        ),
        Case(
            "confirm: 10**8 paid",
            confirm,
            told(paid=euros(10**8)),
            INVALID,
            "amount_paid above 99999999 minor units",
            admin,
        ),
        Case("confirm: a card number as the id", confirm, told(s.taxi), INVALID, NOT_A_TOP_UP_ID, admin),
        Case(
            "confirm: an empty request",
            confirm,
            bo.ConfirmTopUpRequest(),
            INVALID,
            "top_up_id is missing",
            admin,
        ),
        Case(
            "confirm: no amount_paid",
            confirm,
            bo.ConfirmTopUpRequest(top_up_id=s.pending, psp_reference="p-new"),
            INVALID,
            "amount_paid is missing",
            admin,
        ),
        Case("confirm: 0 paid", confirm, told(paid=euros(0)), INVALID, "amount_paid must be positive", admin),
        Case(
            "confirm: -180 paid",
            confirm,
            told(paid=euros(-180)),
            INVALID,
            "amount_paid must be positive",
            admin,
        ),
        Case(
            "confirm: -2**63 paid",
            confirm,
            told(paid=euros(-(2**63))),
            INVALID,
            "amount_paid must be positive",
            admin,
        ),
        Case(
            "confirm: an unknown currency",
            confirm,
            told(paid=euros(180, "XYZ")),
            INVALID,
            "amount_paid.currency: unknown currency 'XYZ'",
            admin,
        ),
        Case(
            "confirm: another card's reference for the pending one",
            confirm,
            told(reference="p-other"),
            grpc.StatusCode.ALREADY_EXISTS,
            "psp_reference 'p-other' confirmed another top-up already",
            admin,
        ),
        Case(
            "confirm: another card's loaded one, another payment",
            confirm,
            told(s.others_loaded),
            PRECONDITION,
            f"top-up {s.others_loaded} was confirmed with another psp_reference",
            admin,
        ),
        Case(
            "confirm: another card's loaded one, its reference, another amount",
            confirm,
            told(s.others_loaded, "p-other", euros(360)),
            PRECONDITION,
            f"psp_reference 'p-other' confirmed top-up {s.others_loaded} already, with amount_paid 1.80 EUR",
            admin,
        ),
        Case(
            "confirm: the refund_due one, another payment",
            confirm,
            told(s.refund_due),
            PRECONDITION,
            f"top-up {s.refund_due} was confirmed with another psp_reference",
            admin,
        ),
        Case(
            "confirm: an unknown id",
            confirm,
            told("tup_0000aaaa0000aaaa"),
            NOT_FOUND,
            "top_up_id 'tup_0000aaaa0000aaaa': no such top-up",
            admin,
        ),
        Case(
            "confirm: a loaded one's reference for the pending one",
            confirm,
            told(reference="p-loaded"),
            grpc.StatusCode.ALREADY_EXISTS,
            "psp_reference 'p-loaded' confirmed another top-up already",
            admin,
        ),
        Case(
            "confirm: the loaded one, another payment",
            confirm,
            told(s.loaded),
            PRECONDITION,
            f"top-up {s.loaded} was confirmed with another psp_reference",
            admin,
        ),
        # Backoffice.ListTopUps
        Case(
            "list: a 1 MB status",
            listed,
            bo.ListTopUpsRequest(status=MEGABYTE),
            INVALID,
            "status 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxx' is not one of",
            admin,
        ),
        # Backoffice.MarkTopUpRefunded
        Case("refunded: no id", refunded, marking(""), INVALID, "top_up_id is missing", admin),
        Case(
            "refunded: no reference", refunded, marking(reference=""), INVALID, "refund_reference is", admin
        ),
        Case(
            "refunded: 1 MB reference",
            refunded,
            marking(reference=MEGABYTE),
            INVALID,
            "refund_reference",
            admin,
        ),
        Case("refunded: a card number as the id", refunded, marking(s.taxi), INVALID, NOT_A_TOP_UP_ID, admin),
        Case(
            "refunded: an unknown id",
            refunded,
            marking("tup_0000aaaa0000aaaa"),
            NOT_FOUND,
            "top_up_id 'tup_0000aaaa0000aaaa': no such top-up",
            admin,
        ),
        Case(
            "refunded: a pending one",
            refunded,
            marking(s.pending),
            PRECONDITION,
            f"top-up {s.pending} is",
            admin,
        ),
        Case(
            "refunded: a loaded one",
            refunded,
            marking(s.loaded),
            PRECONDITION,
            f"top-up {s.loaded} is",
            admin,
        ),
        # Portal.CloseWebDay
        Case(
            "close: another merchant's location",
            close,
            portal.CloseWebDayRequest(location_id=s.foreign_location),
            NOT_FOUND,
            "location_id",
            login,
        ),
        Case(
            "close: a 1 MB location",
            close,
            portal.CloseWebDayRequest(location_id=MEGABYTE),
            NOT_FOUND,
            "location_id",
            login,
        ),
        Case(
            "close: no location, the shop having two",
            close,
            portal.CloseWebDayRequest(),
            INVALID,
            "location_id is missing",
            login,
        ),
        Case(
            "close: a location of the shop's never used on the web",
            close,
            portal.CloseWebDayRequest(location_id=s.unused_location),
            PRECONDITION,
            "no web transaction at this location yet: nothing to close",
            login,
        ),
        # Backoffice.SettleDue
        Case(
            "settle: a 1 MB day",
            settle,
            bo.SettleDueRequest(as_of_date=MEGABYTE),
            INVALID,
            "as_of_date",
            admin,
        ),
        Case(
            "settle: month 13",
            settle,
            bo.SettleDueRequest(as_of_date="2026-13-01"),
            INVALID,
            "as_of_date '2026-13-01' is not a date",
            admin,
        ),
        Case(
            "settle: year 1",
            settle,
            bo.SettleDueRequest(as_of_date="0001-01-01"),
            INVALID,
            "as_of_date 0001-01-01 is outside",
            admin,
        ),
    ]
    for who, (call, metadata) in exports.items():
        table += [
            Case(
                f"{who} export: no from_date",
                call,
                bo.TransactionExportRequest(),
                INVALID,
                "from_date is missing",
                metadata,
            ),
            Case(
                f"{who} export: paged", call, report(page_token="5"), INVALID, "report.page_token", metadata
            ),
            Case(
                f"{who} export: page_size -1", call, report(page_size=-1), INVALID, "page_size -1", metadata
            ),
            Case(
                f"{who} export: page_size 2**31-1",
                call,
                report(page_size=2**31 - 1),
                INVALID,
                "page_size",
                metadata,
            ),
            Case(
                f"{who} export: to_date before from_date",
                call,
                report(from_date="2026-01-02", to_date="2026-01-01"),
                INVALID,
                "to_date 2026-01-01 is before",
                metadata,
            ),
            Case(
                f"{who} export: two years",
                call,
                report(from_date="2024-01-01", to_date="2025-12-31"),
                INVALID,
                "from_date to to_date spans",
                metadata,
            ),
            Case(
                f"{who} export: an unknown dialect",
                call,
                report(dialect="csv"),
                INVALID,
                "dialect 'csv'",
                metadata,
            ),
            Case(
                f"{who} export: a 1 MB time zone",
                call,
                report(time_zone=MEGABYTE),
                INVALID,
                f"time_zone '{'x' * 44}...{'x' * 20}' is not a known time zone",
                metadata,
            ),
            Case(
                f"{who} export: a region, not a zone",
                call,
                report(time_zone="Europe"),
                INVALID,
                "time_zone 'Europe' is not a known time zone",
                metadata,
            ),
            Case(
                f"{who} export: a 1 MB dialect",
                call,
                report(dialect=MEGABYTE),
                INVALID,
                "dialect is longer",
                metadata,
            ),
            Case(
                f"{who} export: a 1 MB terminal_id",
                call,
                report(terminal_id=MEGABYTE),
                INVALID,
                "terminal_id is longer than 40 characters",
                metadata,
            ),
            Case(
                f"{who} export: a 1 MB location id",
                call,
                report(location_ids=[MEGABYTE]),
                INVALID,
                "location_ids is longer than 40 characters",
                metadata,
            ),
            Case(
                f"{who} export: a NUL in terminal_id",
                call,
                report(terminal_id="trm_\0"),
                INVALID,
                "terminal_id has characters other than printable ASCII",
                metadata,
            ),
            Case(
                f"{who} export: 1,000 locations",
                call,
                report(location_ids=[f"loc_{index}" for index in range(1_000)]),
                INVALID,
                "location_ids: 1000 locations",
                metadata,
            ),
        ]
    table += [
        Case(
            "backoffice export: a 1 MB merchant_id",
            exports["backoffice"][0],
            report(merchant_id=MEGABYTE),
            INVALID,
            "merchant_id is longer than 40 characters",
            admin,
        ),
        Case(
            "portal export: another merchant",
            exports["portal"][0],
            report(merchant_id=MEGABYTE),
            grpc.StatusCode.PERMISSION_DENIED,
            "merchant_id: the portal shows only your own merchant",
            login,
        ),
        Case(
            "portal export: another merchant's location",
            exports["portal"][0],
            report(location_ids=[s.foreign_location]),
            NOT_FOUND,
            f"location_ids: {s.foreign_location!r}: no such location of merchant",
            login,
        ),
        Case(
            "portal export: another merchant's terminal",
            exports["portal"][0],
            report(terminal_id=s.foreign_terminal),
            NOT_FOUND,
            f"terminal_id {s.foreign_terminal!r}: no such terminal of merchant",
            login,
        ),
    ]
    return table


def answer(call: Callable[..., Any], request: object, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    """The status and details of a call that should be refused; OK and the answer if it was not."""
    try:
        answered = call(request, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, str(answered)


def test_each_bad_input_is_refused_naming_the_field_and_changes_nothing(world: World) -> None:
    s = scene(world)
    numbers = (s.taxi, s.other_taxi, s.blocked, card_number_not_issued())
    before = state(world)
    wrong = []
    for case in cases(s):
        kwargs: dict[str, Any] = {"timeout": 30}
        if case.metadata:
            kwargs["metadata"] = case.metadata
        code, details = answer(case.call, case.request, **kwargs)
        if (code, details.startswith(case.begins)) != (case.code, True) or len(details) > DETAILS_CHARS_MAX:
            wrong.append(f"{case.name}: {code} {details[:200]!r}")
        if any(number in details for number in numbers):
            wrong.append(f"{case.name}: a card number in {details!r}")
    assert not wrong, "\n".join(wrong)
    assert state(world) == before
    # Nothing a refusal did stands in the way: the pending top-up is confirmed, in euros, by p-new.
    paid = bo.ConfirmTopUpRequest(top_up_id=s.pending, psp_reference="p-new", amount_paid=euros(180))
    assert world.backoffice.ConfirmTopUp(paid, metadata=s.admin, timeout=30).status == "loaded"


# What a client sends that is not protobuf at all: each method names the message it expected.
RAW_METHODS = [
    ("Cardholder", "StartTopUp", "StartTopUpRequest"),
    ("Cardholder", "GetTopUp", "TopUpRequest"),
    ("Backoffice", "ConfirmTopUp", "ConfirmTopUpRequest"),
    ("Backoffice", "ListTopUps", "ListTopUpsRequest"),
    ("Backoffice", "MarkTopUpRefunded", "MarkTopUpRefundedRequest"),
    ("Backoffice", "SettleDue", "SettleDueRequest"),
    ("Portal", "CloseWebDay", "CloseWebDayRequest"),
    ("Backoffice", "ExportTransactions", "TransactionExportRequest"),
    ("Portal", "ExportTransactions", "TransactionExportRequest"),
]


@pytest.mark.parametrize(("service", "method", "message"), RAW_METHODS)
@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x05ab"], ids=["garbage", "truncated"])
def test_malformed_protobuf_is_refused_by_name_and_changes_nothing(
    world: World, service: str, method: str, message: str, payload: bytes
) -> None:
    metadata = world.admin_metadata
    if service == "Portal":
        session = portal_grpc.PortalStub(world.channel).SignIn(
            portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20
        )
        metadata = (("authorization", f"Bearer {session.token}"),)
    before = state(world)
    path = f"/txswitch.v1.{service}/{method}"
    streamed = method == "ExportTransactions"
    raw = (world.channel.unary_stream if streamed else world.channel.unary_unary)(path, None, None)

    def send() -> object:
        answer = raw(payload, metadata=metadata, timeout=20)  # bytes in and out
        return list(answer) if streamed else answer

    code, details = refusal(send)
    assert (code, details) == (INVALID, f"the request is not a valid txswitch.v1.{message} message")
    assert state(world) == before


@pytest.fixture(params=["sqlite"])
def sqlite_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request, tmp_path, terminals=1, cardholder_lookups_per_minute_max=10_000, psp_token=PSP_TOKEN
    )


def test_the_card_number_is_nowhere_after_the_new_rpcs(
    sqlite_world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder's card number, sent to every new RPC that takes one (and to some that do not),
    is in no file of the database, no log line, no metric, no answer, no export: only masked."""
    caplog.set_level(logging.DEBUG)
    world = sqlite_world
    s = scene(world)  # top-ups of s.taxi started, confirmed, refunded; a web day closed
    card, masked = s.taxi, f"{s.taxi[:6]}******{s.taxi[-4:]}"
    answers: list[str] = []

    def refused(call: Callable[..., Any], request: object, **kwargs: Any) -> None:
        answers.append(refusal(call, request, timeout=30, **kwargs)[1])

    full = ch.StartTopUpRequest(card=pb.CardRef(card_number=card), amount=euros(100_000), request_id="r-full")
    refused(s.holder.StartTopUp, full)
    refused(s.holder.StartTopUp, ch.StartTopUpRequest(card=pb.CardRef(card_number=card), request_id="r"))
    wrong_digit = card[:-1] + str((int(card[-1]) + 1) % 10)
    refused(s.holder.StartTopUp, ch.StartTopUpRequest(card=pb.CardRef(card_number=wrong_digit)))
    answers.append(str(world.backoffice.ListTopUps(bo.ListTopUpsRequest(), metadata=s.admin, timeout=20)))
    answers.append(str(s.holder.GetTopUp(ch.TopUpRequest(top_up_id=s.loaded), timeout=20)))
    refused(s.holder.GetTopUp, ch.TopUpRequest(top_up_id=card))
    csv = b"".join(export(world.backoffice)(report(), metadata=s.admin, timeout=30)).decode()
    csv += b"".join(export(s.portal)(report(), metadata=s.login, timeout=30)).decode()
    assert masked in csv and "tup_" in csv, "the export holds the top-up's load and the web redemption"
    metrics = generate_latest(world.server.metrics.registry).decode()
    files = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    database = b"".join(content for path, content in files.items() if path.name.startswith("txswitch.sqlite"))
    assert masked.encode() in database, "the scan sees the top-ups' rows"
    logs = "\n".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in caplog.records)
    texts = {"answers": "\n".join(answers), "export": csv, "metrics": metrics, "logs": logs}
    for number in (card, wrong_digit):
        for path, content in files.items():
            assert number.encode() not in content, path.name
        for where, text in texts.items():
            assert number not in text, where
