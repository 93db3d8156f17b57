"""A card number typed as an id the switch stores as given (a settlement id, a request id, a PSP's
reference, an employee number, a terminal's or the web back office's transaction id) is refused by
name, nothing is stored, and the number is nowhere in the database file; ids with 12 digits or fewer
in a row, or a longer run failing Luhn, still work. A real switch on loopback, on a SQLite file
whose bytes are scanned."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import portal_pb2 as portal_pb
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import luhn_check_digit
from switch.store.schema import Base
from terminal_sim.acquirer_host import HostThread
from tests.integration.harness import (
    EMPLOYEE,
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    TerminalClient,
    World,
    new_txn,
    start_world,
)
from tests.integration.payment_harness import MASTER_KEY_HEX, PayTerminal, acquirers_file, activate

PSP_TOKEN = "test-psp-token"
_serials = itertools.count(1)

Call = Callable[[], object]
Prepare = Callable[[World, str], Call]  # sets the scene for one id, gives the call that sends it


def card_number(length: int = 16) -> str:
    """A Luhn-valid number, another each time (so a case's number is found only if it stored it)."""
    body = "4" + f"{next(_serials):0{length - 2}d}"
    return body + luhn_check_digit(body)


def not_luhn(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def grouped(number: str, separator: str = " ") -> str:
    return separator.join(number[index : index + 4] for index in range(0, len(number), 4))


def euros(amount_minor: int) -> pb.Amount:
    return pb.Amount(amount_minor=amount_minor, currency="EUR")


# The bank-card terminal of each world (Pay, Abort and RefundCard need an acquirer), by id(world).
_pay_terminals: dict[int, PayTerminal] = {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("ids")
    with HostThread() as host:
        assert host.host.port is not None
        world = start_world(
            data_dir,
            "",
            terminals=1,
            cardholder_lookups_per_minute_max=10_000,
            psp_token=PSP_TOKEN,
            acquirers_file=acquirers_file(data_dir / "acquirers.toml", host.host.port),
            master_key_hex=MASTER_KEY_HEX,
        )
        _pay_terminals[id(world)] = activate(world.channel, "A77-pay")
        try:
            yield world
        finally:
            del _pay_terminals[id(world)]
            world.channel.close()
            world.server.stop()


def settle(world: World, settlement_id: str) -> Call:
    card = world.issue(5_000)
    assert world.terminals[0].redeem(card, 1_000).response_code == "00"  # a payout is owed
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id=settlement_id)
    return lambda: world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20)


def issue_card(world: World, request_id: str) -> Call:
    request = bo.IssueCardRequest(
        programme_id=world.gift_programme, initial_load=euros(1_000), request_id=request_id
    )
    return lambda: world.backoffice.IssueCard(request, metadata=world.admin_metadata, timeout=20)


def replace_card(world: World, request_id: str) -> Call:
    lost, replacement = world.issue(2_000), world.issue(0)
    request = bo.ReplaceCardRequest(
        lost_card=pb.CardRef(card_number=lost),
        replacement_card=pb.CardRef(card_number=replacement),
        request_id=request_id,
    )
    return lambda: world.backoffice.ReplaceCard(request, metadata=world.admin_metadata, timeout=20)


def start_top_up(world: World, request_id: str) -> Call:
    card = world.issue(0, world.benefit_programme)
    request = ch.StartTopUpRequest(
        card=pb.CardRef(card_number=card), amount=euros(500), request_id=request_id
    )
    return lambda: ch_grpc.CardholderStub(world.channel).StartTopUp(request, timeout=20)


def _started_top_up(world: World) -> str:
    card = world.issue(0, world.benefit_programme)
    request = ch.StartTopUpRequest(
        card=pb.CardRef(card_number=card), amount=euros(500), request_id=f"r-{next(_serials)}"
    )
    return str(ch_grpc.CardholderStub(world.channel).StartTopUp(request, timeout=20).top_up_id)


def confirm_top_up(world: World, psp_reference: str) -> Call:
    request = bo.ConfirmTopUpRequest(
        top_up_id=_started_top_up(world), psp_reference=psp_reference, amount_paid=euros(180)
    )
    return lambda: world.backoffice.ConfirmTopUp(request, metadata=world.admin_metadata, timeout=30)


def mark_refunded(world: World, refund_reference: str) -> Call:
    top_up_id = _started_top_up(world)
    short = bo.ConfirmTopUpRequest(
        top_up_id=top_up_id, psp_reference=f"p-{next(_serials)}", amount_paid=euros(1)
    )
    assert (
        world.backoffice.ConfirmTopUp(short, metadata=world.admin_metadata, timeout=30).status == "refund_due"
    )
    request = bo.MarkTopUpRefundedRequest(top_up_id=top_up_id, refund_reference=refund_reference)
    return lambda: world.backoffice.MarkTopUpRefunded(request, metadata=world.admin_metadata, timeout=20)


def add_employee(world: World, employee_number: str) -> Call:
    request = bo.AddEmployeeRequest(
        merchant_id=world.merchant_id, employee_number=employee_number, name="Till", pin="2468"
    )
    return lambda: world.backoffice.AddEmployee(request, metadata=world.admin_metadata, timeout=20)


def database_bytes(world: World) -> bytes:
    files = sorted(Path(world.server.settings.data_dir).glob("txswitch.sqlite*"))
    assert files, "no SQLite file to scan"
    return b"".join(path.read_bytes() for path in files)


def rows(world: World) -> dict[str, list[str]]:
    with world.server.core.store.engine.connect() as conn:
        return {
            table.name: sorted(str(tuple(row)) for row in conn.execute(select(table)).all())
            for table in Base.metadata.sorted_tables
        }


# Transaction ids of the terminals and the web back office: stored as given in the transaction's
# row, its journal keys, a day close's row.
def _terminal(world: World) -> TerminalClient:
    return world.terminals[0]


def redeem(world: World, transaction_id: str) -> Call:
    card = world.issue(2_000)
    return lambda: _terminal(world).redeem(card, 500, transaction_id)


def load(world: World, transaction_id: str) -> Call:
    card = world.issue(0)
    return lambda: _terminal(world).load(card, 500, transaction_id)


def _sale(world: World) -> str:
    sale = new_txn()
    assert _terminal(world).redeem(world.issue(2_000), 500, sale).response_code == "00"
    return sale


def refund(world: World, transaction_id: str) -> Call:
    sale = _sale(world)
    return lambda: _terminal(world).refund(sale, 100, txn=transaction_id)


def refund_of(world: World, original_transaction_id: str) -> Call:
    return lambda: _terminal(world).refund(original_transaction_id, 100)


def cancel(world: World, transaction_id: str) -> Call:
    sale = _sale(world)
    return lambda: _terminal(world).cancel(sale, txn=transaction_id)


def cancel_of(world: World, original_transaction_id: str) -> Call:
    return lambda: _terminal(world).cancel(original_transaction_id)


def reversal_of(world: World, original_transaction_id: str) -> Call:
    return lambda: _terminal(world).reversal(original_transaction_id)


def day_close(world: World, close_id: str) -> Call:
    _sale(world)
    terminal = _terminal(world)
    request = pb.DayCloseRequest(close_id=close_id)
    return lambda: terminal.stub.DayClose(request, metadata=terminal.metadata, timeout=20)


def web_redeem(world: World, transaction_id: str) -> Call:
    portal = portal_grpc.PortalStub(world.channel)
    session = portal.SignIn(
        portal_pb.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20
    )
    request = portal_pb.PortalRedeemRequest(
        transaction_id=transaction_id, card=pb.CardRef(card_number=world.issue(2_000)), amount=euros(500)
    )
    login = (("authorization", f"Bearer {session.token}"),)
    return lambda: portal.Redeem(request, metadata=login, timeout=20)


def _pay_terminal(world: World) -> PayTerminal:
    return _pay_terminals[id(world)]


def pay(world: World, transaction_id: str) -> Call:
    request = _pay_terminal(world).request(1_000, txn=transaction_id)
    return lambda: _pay_terminal(world).send(request)


def abort(world: World, transaction_id: str) -> Call:
    return lambda: _pay_terminal(world).abort(transaction_id)


def refund_card(world: World, transaction_id: str) -> Call:
    terminal = _pay_terminal(world)
    card = terminal.request(1_000, txn=transaction_id)
    request = pb.CardRefundRequest(
        transaction_id=card.transaction_id,
        sequence_number=card.sequence_number,
        amount=card.amount,
        card=card.card,
        employee=EMPLOYEE,
    )
    return lambda: terminal.stub.RefundCard(request, metadata=terminal.metadata, timeout=20)


# (field, its RPC, the id sent with the card number in it): bare, inside other text, grouped.
IDS: list[tuple[str, Prepare, Callable[[str], str]]] = [
    ("settlement_id", settle, lambda number: number),
    ("settlement_id", settle, lambda number: f"settle-{grouped(number, '-')}"),
    ("request_id", issue_card, lambda number: f"issue {number}"),
    ("request_id", replace_card, lambda number: f"replace-{grouped(number)}"),
    ("request_id", start_top_up, lambda number: number),
    ("employee_number", add_employee, lambda number: number),
    ("transaction_id", redeem, lambda number: number),
    ("transaction_id", redeem, lambda number: f"pos-{grouped(number, '-')}"),
    ("transaction_id", redeem, lambda number: f"pos.{grouped(number, '.')}"),
    ("request_id", issue_card, lambda number: f"issue_{grouped(number, '_')}"),
    ("transaction_id", load, lambda number: f"load{number}"),
    ("transaction_id", refund, lambda number: number),
    ("original_transaction_id", refund_of, lambda number: number),
    ("transaction_id", cancel, lambda number: number),
    ("original_transaction_id", cancel_of, lambda number: f"sale {number}"),
    ("original_transaction_id", reversal_of, lambda number: number),
    ("close_id", day_close, lambda number: f"close-{number}"),
    ("transaction_id", web_redeem, lambda number: number),
    ("transaction_id", pay, lambda number: number),
    ("transaction_id", pay, lambda number: f"pay-{grouped(number)}"),
    ("transaction_id", abort, lambda number: f"abort{number}"),
    ("transaction_id", refund_card, lambda number: number),
]


@pytest.mark.parametrize(
    ("field", "prepare", "id_of"), IDS, ids=[f"{p.__name__}-{index}" for index, (_, p, _) in enumerate(IDS)]
)
@pytest.mark.parametrize("length", [13, 16, 19])
def test_a_card_number_in_a_stored_id_is_refused_and_stored_nowhere(
    world: World, field: str, prepare: Prepare, id_of: Callable[[str], str], length: int
) -> None:
    number = card_number(length)
    value = id_of(number)
    if field == "employee_number" and len(value) > 20:
        pytest.skip("employee_number holds 20 characters")
    call = prepare(world, value)
    before = rows(world)
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details == f"{field} has the shape of a card number", details
    assert rows(world) == before
    stored = database_bytes(world)
    assert number.encode() not in stored and value.encode() not in stored


# Ids that must still work: a date and a counter (12 digits in a row, with or without dashes), and a
# card number's length of digits that fails the Luhn check.
ACCEPTED: list[Callable[[], str]] = [
    lambda: f"2026-12-07-{next(_serials):04d}",
    lambda: f"20261207{next(_serials):04d}",
    lambda: not_luhn(card_number(16)),
]
FIELDS = list(dict.fromkeys((field, prepare) for field, prepare, _ in IDS))


@pytest.mark.parametrize(("field", "prepare"), FIELDS, ids=[prepare.__name__ for _, prepare in FIELDS])
@pytest.mark.parametrize("value_of", ACCEPTED, ids=["dashed date", "date and counter", "not Luhn"])
def test_an_id_without_a_card_number_is_taken_and_stored(
    world: World, field: str, prepare: Prepare, value_of: Callable[[], str]
) -> None:
    value = value_of()
    prepare(world, value)()
    assert value.encode() in database_bytes(world), field


# A PSP's own references are not typed by a person, and some PSPs give 16 digits: one in ten of those
# passes the card number test, and refusing it would leave a paid top-up that cannot be confirmed.
PSP_REFERENCES: list[tuple[str, Prepare]] = [
    ("psp_reference", confirm_top_up),
    ("refund_reference", mark_refunded),
]


@pytest.mark.parametrize(("field", "prepare"), PSP_REFERENCES, ids=[field for field, _ in PSP_REFERENCES])
def test_a_psps_reference_of_sixteen_digits_is_taken_even_in_a_card_numbers_shape(
    world: World, field: str, prepare: Prepare
) -> None:
    reference = card_number(16)
    prepare(world, reference)()
    assert reference.encode() in database_bytes(world), field
