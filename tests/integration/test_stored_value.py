"""Stored-value flows through a real gRPC server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import make_card_number, mask
from switch.store.journal import PeriodClose, Write
from tests.integration.harness import EMPLOYEE, World, new_txn

VALID_NUMBER = make_card_number("600101", 2)
UNKNOWN_NUMBER = make_card_number("600101", 999_999_999)


def test_redeem_full_partial_and_over_balance(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    full = terminal.redeem(card, 400)
    assert (full.response_code, full.approved.amount_minor, full.balance.amount_minor) == ("00", 400, 600)
    over = terminal.redeem(card, 700)
    assert over.response_code == "51" and over.balance.amount_minor == 600
    partial = terminal.redeem(card, 700, partial=True)
    assert (partial.response_code, partial.approved.amount_minor, partial.balance.amount_minor) == (
        "10",
        600,
        0,
    )
    assert terminal.balance(card) == 0
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "code"),
    [
        (0, "EUR", "13"),
        (-5, "EUR", "13"),
        (10**12, "EUR", "13"),
        (100, "USD", "12"),
        (100, "XXX", "12"),
    ],
)
def test_bad_amounts_are_declined_and_move_nothing(
    world: World, amount_minor: int, currency: str, code: str
) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    response = terminal.redeem(card, amount_minor, currency=currency)
    assert response.response_code == code and response.message
    assert terminal.balance(card) == 1_000


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (
            pb.RedeemRequest(
                card=pb.CardRef(card_number=VALID_NUMBER),
                amount=pb.Amount(amount_minor=1, currency="EUR"),
            ),
            "transaction_id",
        ),
        (pb.RedeemRequest(transaction_id="t1", amount=pb.Amount(amount_minor=1, currency="EUR")), "card"),
        (
            pb.RedeemRequest(
                transaction_id="t1",
                card=pb.CardRef(card_number="1234"),
                amount=pb.Amount(amount_minor=1, currency="EUR"),
            ),
            "card_number",
        ),
        (pb.RedeemRequest(transaction_id="t1", card=pb.CardRef(card_number=VALID_NUMBER)), "amount"),
        (
            pb.RedeemRequest(
                transaction_id="t1",
                card=pb.CardRef(qr_payload="http://x"),
                amount=pb.Amount(amount_minor=1, currency="EUR"),
            ),
            "qr_payload",
        ),
        (
            pb.RedeemRequest(
                transaction_id="t1",
                card=pb.CardRef(card_number=VALID_NUMBER),
                amount=pb.Amount(amount_minor=1),
            ),
            "currency",
        ),
    ],
)
def test_malformed_requests_name_the_field(
    world: World, request_message: pb.RedeemRequest, field: str
) -> None:
    terminal = world.terminals[0]
    with pytest.raises(grpc.RpcError) as raised:
        terminal.stub.Redeem(request_message, metadata=terminal.metadata, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (raised.value.details() or "")


@pytest.mark.parametrize("method", ["Redeem", "Refund", "Balance"])
@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x05ab"], ids=["garbage", "truncated"])
def test_malformed_protobuf_is_refused_and_changes_nothing(world: World, method: str, payload: bytes) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    raw = world.channel.unary_unary(f"/txswitch.v1.Terminal/{method}", None, None)  # bytes in and out
    with pytest.raises(grpc.RpcError) as raised:
        raw(payload, metadata=terminal.metadata, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == f"the request is not a valid txswitch.v1.{method}Request message"
    assert terminal.balance(card) == 1_000
    ledger = world.ledger()
    assert ledger.unbalanced_entries == 0 and ledger.balance_mismatches == 0


def test_malformed_protobuf_to_the_backoffice_is_refused_by_name(world: World) -> None:
    """The backoffice runs on the thread pool; its malformed requests get the same answer."""
    raw = world.channel.unary_unary("/txswitch.v1.Backoffice/CreateMerchant", None, None)
    with pytest.raises(grpc.RpcError) as raised:
        raw(b"\xff\xff\xff\xff", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "the request is not a valid txswitch.v1.CreateMerchantRequest message"


def test_unknown_card_and_merchant_outside_programme(world: World) -> None:
    terminal = world.terminals[0]
    unknown = terminal.redeem(UNKNOWN_NUMBER, 100)
    assert unknown.response_code == "14"
    foreign = world.issue(1_000, world.foreign_programme)
    assert terminal.redeem(foreign, 100).response_code == "58"


def test_calls_without_valid_credential_are_refused(world: World) -> None:
    stub = world.terminals[0].stub
    request = pb.BalanceRequest(card=pb.CardRef(card_number=UNKNOWN_NUMBER))
    with pytest.raises(grpc.RpcError) as missing:
        stub.Balance(request, timeout=10)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        stub.Balance(request, metadata=(("authorization", "Bearer trm_x.nope"),), timeout=10)
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as bad_login:
        stub.Activate(
            pb.ActivateRequest(
                merchant_email="shop@example.test", password="wrong", device_name="d", location="Shop"
            ),
            timeout=10,
        )
    assert bad_login.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_deactivated_terminal_cannot_transact(world: World) -> None:
    terminal = world.terminals[1]
    card = world.issue(1_000)
    world.backoffice.DeactivateTerminal(
        bo.TerminalRequest(terminal_id=terminal.terminal_id), metadata=world.admin_metadata
    )
    with pytest.raises(grpc.RpcError) as raised:
        terminal.redeem(card, 100)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert world.terminals[0].balance(card) == 1_000


def test_replay_returns_the_first_answer_and_moves_money_once(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    txn = new_txn()
    first = terminal.redeem(card, 300, txn)
    again = terminal.redeem(card, 300, txn)
    assert first.response_code == again.response_code == "00"
    assert first.authorization_code == again.authorization_code
    assert terminal.balance(card) == 700
    conflicting = terminal.redeem(card, 301, txn)
    assert conflicting.response_code == "94"
    assert terminal.balance(card) == 700


def test_replay_after_restart_is_answered_from_the_database(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    txn = new_txn()
    first = terminal.redeem(card, 250, txn)
    world.server.core.terminal_actors.stop_all()  # forget everything held in memory
    world.server.core.terminal_actors._closed = False
    again = terminal.redeem(card, 250, txn)
    assert again.response_code == "00" and again.authorization_code == first.authorization_code
    assert terminal.balance(card) == 750


def test_reversal_after_lost_response_and_its_replays(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    txn = new_txn()
    assert terminal.redeem(card, 400, txn).response_code == "00"  # the terminal never saw this answer
    reversal = terminal.reversal(txn)
    assert reversal.response_code == "00" and terminal.balance(card) == 1_000
    assert terminal.reversal(txn).response_code == "00" and terminal.balance(card) == 1_000
    status = terminal.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id=txn), metadata=terminal.metadata
    )
    assert status.found and status.status == "reversed"
    assert world.ledger().unbalanced_entries == 0


def test_reversal_before_the_original_arrives_refuses_the_late_original(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    txn = new_txn()
    assert terminal.reversal(txn).response_code == "00"
    late = terminal.redeem(card, 400, txn)
    assert late.response_code != "00"
    assert terminal.balance(card) == 1_000
    status = terminal.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id=new_txn()), metadata=terminal.metadata
    )
    assert not status.found


def test_cancel_and_refund_with_employee_pin(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    first, second = new_txn(), new_txn()
    terminal.redeem(card, 300, first)
    terminal.redeem(card, 200, second)
    assert terminal.cancel(first).response_code == "00"
    assert terminal.cancel(first).response_code == "12"  # already cancelled
    assert terminal.refund(second, 150).response_code == "00"
    assert terminal.refund(second, 100).response_code == "13"  # more than is left to refund
    assert terminal.refund(second, 50).response_code == "00"
    assert terminal.balance(card) == 1_000
    assert terminal.refund(new_txn(), 50).response_code == "25"
    assert world.ledger().balance_mismatches == 0


def test_a_cancel_cannot_itself_be_reversed_or_cancelled(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    redemption, cancel = new_txn(), new_txn()
    assert terminal.redeem(card, 300, redemption).response_code == "00"
    assert terminal.cancel(redemption, txn=cancel).response_code == "00"
    reversal = terminal.reversal(cancel)
    assert reversal.response_code == "12" and "cancel" in reversal.message
    assert terminal.cancel(cancel).response_code == "12"
    assert terminal.balance(card) == 1_000
    assert world.ledger().unbalanced_entries == 0 and world.ledger().balance_mismatches == 0


def test_employee_pin_remembered_after_a_match_follows_a_pin_change(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    first, second, third = new_txn(), new_txn(), new_txn()
    for txn in (first, second, third):
        assert terminal.redeem(card, 100, txn).response_code == "00"
    assert terminal.cancel(first).response_code == "00"  # the slow hash, then remembered
    assert terminal.cancel(second, pin="9999").response_code == "55"  # a wrong PIN is never remembered
    assert terminal.cancel(second).response_code == "00"  # the remembered match
    world.server.core.admin.update_employee(world.merchant_id, EMPLOYEE.employee_number, pin="2468")
    assert terminal.cancel(third).response_code == "55"  # the old PIN no longer matches
    assert terminal.cancel(third, pin="2468").response_code == "00"
    assert terminal.balance(card) == 1_000


def test_employee_pin_lockout(world: World) -> None:
    terminal, other = world.terminals
    card = world.issue(1_000)
    txn = new_txn()
    terminal.redeem(card, 100, txn)
    assert terminal.cancel(txn, pin="0000").response_code == "55"
    assert other.cancel(txn, pin="0001").response_code == "55"
    assert terminal.cancel(txn, pin="0002").response_code == "75"  # third wrong PIN locks
    assert terminal.cancel(txn).response_code == "75"  # even the right PIN, while locked
    assert terminal.balance(card) == 900


def test_co_payment_load_records_holder_and_funder_parts(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(0, world.benefit_programme)
    response = terminal.load(card, 500)
    assert response.response_code == "00"
    assert (response.cardholder_part.amount_minor, response.funder_part.amount_minor) == (180, 320)
    more = terminal.load(card, 1_500)  # whole steps of 5.00 (test_benefit_and_payouts)
    assert (more.cardholder_part.amount_minor, more.funder_part.amount_minor) == (540, 960)
    assert terminal.balance(card) == 2_000
    assert world.ledger().unbalanced_entries == 0


def test_lost_card_is_blocked_and_its_balance_moved(world: World) -> None:
    terminal = world.terminals[0]
    lost, replacement = world.issue(2_500), world.issue(100)
    terminal.redeem(lost, 500)
    moved = world.backoffice.ReplaceCard(
        bo.ReplaceCardRequest(
            lost_card=pb.CardRef(card_number=lost),
            replacement_card=pb.CardRef(card_number=replacement),
            request_id="r1",
        ),
        metadata=world.admin_metadata,
    )
    assert moved.moved.amount_minor == 2_000 and moved.lost_card.status == "lost"
    assert moved.replacement_card.balance.amount_minor == 2_100
    assert terminal.redeem(lost, 1).response_code == "41"
    assert terminal.redeem(replacement, 2_100).response_code == "00"
    assert world.ledger().balance_mismatches == 0
    with pytest.raises(grpc.RpcError) as unblocked:
        world.backoffice.UnblockCard(
            bo.CardRequest(card=pb.CardRef(card_number=lost)), metadata=world.admin_metadata, timeout=20
        )
    assert unblocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    replacement_id = moved.replacement_card.card_id
    assert unblocked.value.details() == (
        f"card {mask(lost)} is lost and replaced by {mask(replacement)} ({replacement_id}): "
        "it stays out of use"
    )
    assert terminal.redeem(lost, 1).response_code == "41"


def test_day_close_sequence_numbers_and_totals(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    terminal.redeem(card, 100)
    terminal.redeem(card, 250)
    x_report = terminal.stub.XReport(pb.XReportRequest(), metadata=terminal.metadata)
    assert x_report.sequence_number == 0
    first = terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata)
    assert (first.sequence_number, first.period_number, first.next_period_number) == (1, 1, 2)
    totals = {t.transaction_type: (t.count, t.total.amount_minor) for t in first.totals}
    assert (
        totals
        == {"redemption": (2, 350)}
        == {t.transaction_type: (t.count, t.total.amount_minor) for t in x_report.totals}
    )
    assert (
        terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata).sequence_number
        == 1
    )
    terminal.redeem(card, 10)
    second = terminal.stub.DayClose(pb.DayCloseRequest(close_id="c2"), metadata=terminal.metadata)
    assert (second.sequence_number, second.period_number) == (2, 2)
    assert [(t.count, t.total.amount_minor) for t in second.totals] == [(1, 10)]
    stored = world.backoffice.ListDayCloses(
        bo.DayCloseListRequest(terminal_id=terminal.terminal_id), metadata=world.admin_metadata
    )
    assert [r.sequence_number for r in stored.reports] == [1, 2]


def test_a_day_close_that_landed_after_its_terminal_gave_up_is_caught_up(world: World) -> None:
    """The close's write lands although the terminal actor stopped waiting; the resend catches up."""
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100).period_number == 1
    core = world.server.core
    info = core.store.terminal(terminal.terminal_id)
    assert info is not None
    close = PeriodClose(terminal.terminal_id, "late", 1, info.period_opened_at, info.period_opened_at)
    assert core.write_now(Write(period_close=close)).sequence_number == 1
    resent = terminal.stub.DayClose(pb.DayCloseRequest(close_id="late"), metadata=terminal.metadata)
    assert (resent.sequence_number, resent.next_period_number) == (1, 2)
    assert terminal.redeem(card, 100).period_number == 2
    second = terminal.stub.DayClose(pb.DayCloseRequest(close_id="next"), metadata=terminal.metadata)
    assert (second.sequence_number, second.period_number) == (2, 2)
    assert [(t.count, t.total.amount_minor) for t in second.totals] == [(1, 100)]


def test_a_reversal_that_moved_nothing_is_no_line_of_the_day_close(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100, "sale-1").response_code == "00"
    assert terminal.redeem(card, 40, "sale-2").response_code == "00"
    assert terminal.reversal("sale-2").response_code == "00"
    never = terminal.reversal("sale-that-never-arrived")
    assert (never.response_code, never.message) == ("00", "Approved: original never arrived; nothing moved")
    closed = terminal.stub.DayClose(pb.DayCloseRequest(close_id="c1"), metadata=terminal.metadata)
    totals = {(t.transaction_type, t.undoes): (t.count, t.total.amount_minor) for t in closed.totals}
    # sale-2 stays on its line and its reversal is a line beside it (taken less undone: 1.00, as a
    # cancel would show it); the reversal that moved nothing is no line.
    assert totals == {("redemption", ""): (2, 140), ("reversal", "redemption"): (1, 40)}


@pytest.mark.parametrize(
    ("request_id", "problem"),
    [("", "request_id is missing"), ("r" * 65, "request_id is longer than 64 characters")],
)
def test_a_replacement_without_a_usable_request_id_is_refused_by_name_and_blocks_nothing(
    world: World, request_id: str, problem: str
) -> None:
    lost, replacement = world.issue(2_500), world.issue(100)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.ReplaceCard(
            bo.ReplaceCardRequest(
                lost_card=pb.CardRef(card_number=lost),
                replacement_card=pb.CardRef(card_number=replacement),
                request_id=request_id,
            ),
            metadata=world.admin_metadata,
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == problem
    assert world.terminals[0].balance(lost) == 2_500  # still active: the lost card was not blocked
    assert world.terminals[0].balance(replacement) == 100


def test_a_reversal_of_a_reversal_that_moved_nothing_is_refused(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    first = terminal.reversal("a-sale-that-never-arrived")
    assert first.response_code == "00" and "nothing moved" in first.message
    for _ in range(2):  # once INTERNAL (an assertion), then 12; a reversal's id is no terminal's now
        with pytest.raises(grpc.RpcError) as refused:
            terminal.reversal(first.transaction_id)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "original_transaction_id may not start with reversal:" in (refused.value.details() or "")
    assert terminal.balance(card) == 1_000
    assert world.ledger().unbalanced_entries == 0
