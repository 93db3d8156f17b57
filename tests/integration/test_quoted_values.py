"""A card number sent where an RPC expects something else is never quoted back in its refusal: each
field whose bad value the answer names, sent a Luhn-valid card number of 16 and 19 digits, in a
row and in groups of four split by spaces, dots, underscores or slashes; the refusal names the field
and holds no 12 digits of the number. One table of cases, on a real switch on loopback, on SQLite
and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import luhn_check_digit
from switch.domain.employees import EMPLOYEE_NUMBER_MAX
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture
from tests.integration.test_portal import days
from tests.integration.test_session23_bad_input import (
    PSP_TOKEN,
    Scene,
    euros,
    export,
    report,
    scene,
)

PAN_DIGITS_MIN = 12  # the shortest card number: no run this long of the number may be in an answer
ALREADY = grpc.StatusCode.ALREADY_EXISTS
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def luhn_valid(body: str) -> str:
    return body + luhn_check_digit(body)


def grouped(number: str, separator: str = " ") -> str:
    return separator.join(number[start : start + 4] for start in range(0, len(number), 4))


PLAIN = [luhn_valid("411111111111111"), luhn_valid("600102987654321012")]  # 16 and 19 digits
NUMBERS = PLAIN + [grouped(number, separator) for number in PLAIN for separator in (" ", ".", "_", "/")]


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request,
        tmp_path,
        terminals=1,
        cardholder_lookups_per_minute_max=10_000,
        psp_token=PSP_TOKEN,
        smtp_host="127.0.0.1",  # receipts on (none is sent: the mail server is never reached)
        smtp_port=9,
    )


Answer = tuple[grpc.StatusCode, str]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    code: grpc.StatusCode
    begins: str  # the details begin so, naming the field
    send: Callable[[Scene, str], Answer]  # the scene, the number as typed
    refused_for: Callable[[str], bool] = lambda number: True  # the numbers the field takes not


def refused(call: Callable[..., object], request: object, **kwargs: object) -> Answer:
    try:
        answered = call(request, timeout=30, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, str(answered)


def listed(s: Scene, number: str) -> Answer:
    return refused(s.world.backoffice.ListTopUps, bo.ListTopUpsRequest(status=number), metadata=s.admin)


def web_day_closed(s: Scene, number: str) -> Answer:
    request = portal.CloseWebDayRequest(location_id=number)
    return refused(s.portal.CloseWebDay, request, metadata=s.login)


def settled(s: Scene, number: str) -> Answer:
    request = bo.SettleDueRequest(as_of_date=number)
    return refused(s.world.backoffice.SettleDue, request, metadata=s.admin)


def exported(**fields: object) -> Callable[[Scene, str], Answer]:
    """The backoffice's export with each field set to the number (`[]` for a list of it)."""

    def send(s: Scene, number: str) -> Answer:
        values = {name: [number] if value == [] else number for name, value in fields.items()}
        call = export(s.world.backoffice)
        return refused(call, report(**values), metadata=s.admin)

    return send


def portal_listed(**fields: object) -> Callable[[Scene, str], Answer]:
    def send(s: Scene, number: str) -> Answer:
        values = {name: [number] if value == [] else number for name, value in fields.items()}
        request = bo.TransactionReportRequest(**{**days(), **values})
        return refused(s.portal.ListTransactions, request, metadata=s.login)

    return send


def summary(s: Scene, number: str) -> Answer:
    request = bo.MerchantSummaryRequest(merchant_id=number, **days())
    return refused(s.world.backoffice.GetMerchantSummary, request, metadata=s.admin)


def mistyped(number: str) -> str:
    """The number with its check digit wrong: an id the switch stores, where a Luhn-valid card
    number is refused as it comes in (tests/integration/test_card_numbers_in_ids.py); its refusals
    still mask it, as a mistyped card number."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def started_twice(s: Scene, number: str) -> Answer:
    """A top-up started with the number as its request id, then the same id for another amount."""
    number = mistyped(number)

    def start(amount_minor: int) -> Answer:
        request = ch.StartTopUpRequest(
            card=pb.CardRef(card_number=s.taxi), amount=euros(amount_minor), request_id=number
        )
        return refused(s.holder.StartTopUp, request)

    assert start(500)[0] == grpc.StatusCode.OK
    return start(1_500)


def confirmed_elsewhere(s: Scene, number: str) -> Answer:
    """The number as the psp_reference of one confirmed top-up, then of the pending one."""
    number = mistyped(number)
    first = _confirmed_with(s, number)
    assert first[0] == grpc.StatusCode.OK, first
    return _confirm(s, s.pending, number, 180)


def confirmed_again_for_another_amount(s: Scene, number: str) -> Answer:
    """The top-up confirmed with the number as its psp_reference, confirmed again for more."""
    number = mistyped(number)
    top_up_id = _started(s, f"r-first-{number}")  # the same request: the same top-up
    assert _confirm(s, top_up_id, number, 180)[0] == grpc.StatusCode.OK  # first or again
    return _confirm(s, top_up_id, number, 190)


def _started(s: Scene, request_id: str) -> str:
    request = ch.StartTopUpRequest(
        card=pb.CardRef(card_number=s.other_taxi), amount=euros(500), request_id=request_id
    )
    return str(s.holder.StartTopUp(request, timeout=20).top_up_id)


def _confirmed_with(s: Scene, number: str) -> Answer:
    return _confirm(s, _started(s, f"r-first-{number}"), number, 180)


def _confirm(s: Scene, top_up_id: str, reference: str, paid_minor: int) -> Answer:
    request = bo.ConfirmTopUpRequest(
        top_up_id=top_up_id, psp_reference=reference, amount_paid=euros(paid_minor)
    )
    return refused(s.world.backoffice.ConfirmTopUp, request, metadata=s.admin)


def day_closes_listed(s: Scene, number: str) -> Answer:
    request = bo.TerminalRequest(terminal_id=number)
    return refused(s.world.backoffice.ListDayCloses, request, metadata=s.admin)


def deactivated(s: Scene, number: str) -> Answer:
    request = bo.TerminalRequest(terminal_id=number)
    return refused(s.world.backoffice.DeactivateTerminal, request, metadata=s.admin)


def locations_listed(s: Scene, number: str) -> Answer:
    request = bo.ListLocationsRequest(merchant_id=number)
    return refused(s.world.backoffice.ListLocations, request, metadata=s.admin)


def receipt_sent(s: Scene, number: str) -> Answer:
    terminal = s.world.terminals[0]
    request = pb.SendReceiptRequest(transaction_id=number, email="holder@example.test")
    return refused(terminal.stub.SendReceipt, request, metadata=terminal.metadata)


def activated(**fields: object) -> Callable[[Scene, str], Answer]:
    def send(s: Scene, number: str) -> Answer:
        request = pb.ActivateRequest(
            merchant_email=MERCHANT_EMAIL,
            password=MERCHANT_PASSWORD,
            device_name="till-9",
            location="Shop",
        )
        for name in fields:
            setattr(request, name, number)
        return refused(s.world.terminals[0].stub.Activate, request)

    return send


def employee_added_twice(s: Scene, number: str) -> Answer:
    """A user added with the number as its employee number, then another under the same number."""
    number = mistyped(number)
    request = bo.AddEmployeeRequest(
        merchant_id=s.world.merchant_id, employee_number=number, name="Twin", pin="9999"
    )
    assert refused(s.world.backoffice.AddEmployee, request, metadata=s.admin)[0] == grpc.StatusCode.OK
    return refused(s.world.backoffice.AddEmployee, request, metadata=s.admin)


def email_of(number: str, domain: str) -> str:
    """The number as a mailbox takes it: grouped by dashes, not spaces."""
    return f"{number.replace(' ', '-')}@{domain}"


def merchant_created(s: Scene, email: str) -> Answer:
    request = bo.CreateMerchantRequest(name="Copy", email=email, password="copy-password")
    return refused(s.world.backoffice.CreateMerchant, request, metadata=s.admin)


def user_added(s: Scene, number: str, email: str) -> Answer:
    request = bo.AddEmployeeRequest(
        merchant_id=s.world.merchant_id,
        employee_number=number,
        name="Login",
        pin="9999",
        email=email,
        password="login-password",
    )
    return refused(s.world.backoffice.AddEmployee, request, metadata=s.admin)


def merchant_created_twice(s: Scene, number: str) -> Answer:
    """A merchant signing in with the number as its e-mail, then another with the same address."""
    email = email_of(number, "twice.example.test")
    assert merchant_created(s, email)[0] == grpc.StatusCode.OK
    return merchant_created(s, email)


def user_added_with_a_merchants_email(s: Scene, number: str) -> Answer:
    email = email_of(number, "merchant.example.test")
    assert merchant_created(s, email)[0] == grpc.StatusCode.OK
    return user_added(s, f"m{NUMBERS.index(number)}", email)


def merchant_created_with_a_users_email(s: Scene, number: str) -> Answer:
    email = email_of(number, "user.example.test")
    assert user_added(s, f"u{NUMBERS.index(number)}", email)[0] == grpc.StatusCode.OK
    return merchant_created(s, email)


CASES = [
    Case("ListTopUps status", INVALID, "status ", listed),
    Case("CloseWebDay location_id", NOT_FOUND, "location_id ", web_day_closed),
    Case("SettleDue as_of_date", INVALID, "as_of_date ", settled),
    Case("export dialect", INVALID, "dialect ", exported(dialect="")),
    Case("export time_zone", INVALID, "time_zone ", exported(time_zone="")),
    Case("export from_date", INVALID, "from_date ", exported(from_date="")),
    Case("export types", INVALID, "types: ", exported(types=[])),
    Case("export statuses", INVALID, "statuses: ", exported(statuses=[])),
    Case("export payment_methods", INVALID, "payment_methods: ", exported(payment_methods=[])),
    Case("export merchant_id", NOT_FOUND, "merchant_id ", exported(merchant_id="")),
    Case("export terminal_id", NOT_FOUND, "terminal_id ", exported(terminal_id="")),
    Case("export location_ids", NOT_FOUND, "location_ids: ", exported(location_ids=[])),
    # Up to 18 digits is a page token's shape (a row's key): only the others are refused.
    Case(
        "report page_token",
        INVALID,
        "page_token ",
        portal_listed(page_token=""),
        lambda number: not number.isdigit() or len(number) > 18,
    ),
    Case("report terminal_id", NOT_FOUND, "terminal_id ", portal_listed(terminal_id="")),
    Case("summary merchant_id", NOT_FOUND, "merchant_id ", summary),
    Case("StartTopUp request_id again", ALREADY, "request_id ", started_twice),
    Case("ConfirmTopUp psp_reference of another", ALREADY, "psp_reference ", confirmed_elsewhere),
    Case(
        "ConfirmTopUp psp_reference, another amount",
        PRECONDITION,
        "psp_reference ",
        confirmed_again_for_another_amount,
    ),
    Case("ListDayCloses terminal_id", NOT_FOUND, "no terminal ", day_closes_listed),
    Case("DeactivateTerminal terminal_id", INVALID, "no terminal ", deactivated),
    Case("ListLocations merchant_id", INVALID, "no merchant ", locations_listed),
    Case("SendReceipt transaction_id", NOT_FOUND, "transaction_id ", receipt_sent),
    Case("Activate location", INVALID, "merchant has no location named ", activated(location="")),
    Case(
        "AddEmployee employee_number again",
        ALREADY,
        "employee number ",
        employee_added_twice,
        lambda number: len(number) <= EMPLOYEE_NUMBER_MAX,
    ),
    Case("CreateMerchant email again", ALREADY, "a merchant with e-mail ", merchant_created_twice),
    Case("AddEmployee email of a merchant", ALREADY, "email ", user_added_with_a_merchants_email),
    Case("CreateMerchant email of a user", ALREADY, "email ", merchant_created_with_a_users_email),
]


def digits_of(number: str, text: str) -> str:
    """A run of PAN_DIGITS_MIN digits of the number in text, separators aside; "" if none."""
    bare, digits = re.sub(r"[ ._/-]", "", text), re.sub(r"[ ._/]", "", number)
    runs = (digits[start : start + PAN_DIGITS_MIN] for start in range(len(digits) - PAN_DIGITS_MIN + 1))
    return next((run for run in runs if run in bare), "")


def test_no_card_number_is_quoted_back_in_a_refusal(world: World) -> None:
    s = scene(world)
    wrong = []
    for number in NUMBERS:
        for case in (case for case in CASES if case.refused_for(number)):
            code, details = case.send(s, number)
            if (code, details.startswith(case.begins)) != (case.code, True):
                wrong.append(f"{case.name} ({number}): {code} {details[:200]!r}")
            if digits_of(number, details):
                wrong.append(f"{case.name} ({number}): the number in {details!r}")
    assert not wrong, "\n".join(wrong)
