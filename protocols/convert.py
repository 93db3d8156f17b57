"""Wire <-> domain: decode requests into commands (naming the bad field), encode outcomes."""

from __future__ import annotations

from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import card_number_from_qr, card_number_problem
from switch.domain.employees import pin_problem
from switch.domain.money import Money
from switch.domain.transactions import TRANSACTION_ID_LENGTH_MAX, EmployeeAuth, Outcome
from switch.store.repository import DayCloseReport


class BadRequestError(ValueError):
    """A request that is malformed; the message names the field and never echoes card data."""


def transaction_id(value: str, field: str = "transaction_id") -> str:
    if not value:
        raise BadRequestError(f"{field} is missing")
    if len(value) > TRANSACTION_ID_LENGTH_MAX:
        raise BadRequestError(f"{field} is longer than {TRANSACTION_ID_LENGTH_MAX} characters")
    if not value.isprintable():
        raise BadRequestError(f"{field} has unprintable characters")
    return value


def amount(message: pb.Amount, present: bool, field: str = "amount") -> Money:
    """The amount's shape only; its value (zero, negative, too large, currency) is the card's rule."""
    if not present:
        raise BadRequestError(f"{field} is missing")
    if not message.currency:
        raise BadRequestError(f"{field}.currency is missing")
    if len(message.currency) != 3 or not message.currency.isalpha() or not message.currency.isupper():
        raise BadRequestError(f"{field}.currency must be a 3-letter ISO 4217 code")
    return Money(message.amount_minor, message.currency)


def card_number(ref: pb.CardRef, present: bool, field: str = "card") -> str:
    if not present:
        raise BadRequestError(f"{field} is missing")
    which = ref.WhichOneof("ref")
    if which is None:
        raise BadRequestError(f"{field} needs card_number or qr_payload")
    if which == "qr_payload":
        number = card_number_from_qr(ref.qr_payload)
        if number is None:
            raise BadRequestError(f"{field}.qr_payload is not a txswitch card QR code")
    else:
        number = ref.card_number
    problem = card_number_problem(number)
    if problem is not None:
        raise BadRequestError(f"{field}.{problem}")
    return number


def employee(message: pb.EmployeeAuth, present: bool) -> EmployeeAuth:
    if not present or not message.employee_number:
        raise BadRequestError("employee.employee_number is missing")
    problem = pin_problem(message.pin)
    if problem is not None:
        raise BadRequestError(f"employee: {problem}")
    return EmployeeAuth(message.employee_number, message.pin)


def money_pb(money: Money | None) -> pb.Amount | None:
    if money is None:
        return None
    return pb.Amount(amount_minor=money.amount_minor, currency=money.currency)


def transaction_response(outcome: Outcome) -> pb.TransactionResponse:
    response = pb.TransactionResponse(
        transaction_id=outcome.transaction_id,
        response_code=outcome.code.iso_code,
        message=outcome.message,
        card_masked=outcome.card_masked,
        authorization_code=outcome.authorization_code,
        period_number=outcome.period_number,
        payment_method="stored_value",
        status=outcome.status.value,
    )
    for name in ("requested", "approved", "balance", "cardholder_part", "funder_part"):
        value = money_pb(getattr(outcome, name))
        if value is not None:
            getattr(response, name).CopyFrom(value)
    return response


def day_close_report(report: DayCloseReport) -> pb.DayCloseReport:
    return pb.DayCloseReport(
        terminal_id=report.terminal_id,
        sequence_number=report.sequence_number,
        period_number=report.period_number,
        opened_at=report.opened_at.isoformat(),
        closed_at=report.closed_at.isoformat(),
        next_period_number=report.next_period_number,
        totals=[
            pb.TypeTotal(
                transaction_type=t.transaction_type,
                payment_method=t.payment_method,
                count=t.count,
                total=pb.Amount(amount_minor=t.total_minor, currency=t.currency),
            )
            for t in report.totals
        ],
    )
