"""Bank-card payments end to end: gRPC terminal -> switch -> acquirer host simulator over TCP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SwitchServer
from switch.store.payments import STAGE_ANSWERED, card_payments
from switch.store.schema import transactions
from terminal_sim.acquirer_host import AcquirerHostConfig, OriginalKey
from tests.integration.harness import EMPLOYEE, TerminalClient, new_txn
from tests.integration.payment_harness import (
    MASTERCARD_PAN,
    RESPONSE_TIMEOUT_MS,
    VISA_PAN,
    VISA_PIN_PAN,
    PaymentWorld,
    PayTerminal,
    payment_world,
    wait_until,
)

CHIP = pb.ENTRY_MODE_CHIP
MAGSTRIPE = pb.ENTRY_MODE_MAGSTRIPE


@pytest.fixture(params=["sqlite", "postgres"])
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PaymentWorld]:
    with payment_world(tmp_path, request.param) as world:
        yield world


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[PaymentWorld]:
    with payment_world(tmp_path, "sqlite") as world:
        yield world


def payment_rows(world: PaymentWorld) -> int:
    with world.engine().connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(transactions)
                .where(transactions.c.transaction_type == "payment")
            ).scalar_one()
        )


def host_key(world: PaymentWorld, txn: str) -> OriginalKey:
    (key,) = world._keys(transactions.c.transaction_id == txn)
    return key


def test_contactless_without_pin_is_approved_once_at_the_acquirer(both: PaymentWorld) -> None:
    txn = new_txn()
    response = both.terminal.pay(1_250, txn=txn)
    assert (response.response_code, response.status) == ("00", "approved")
    assert response.payment_method == "contactless"
    assert response.card_masked == "411111****1111"
    assert response.approved.amount_minor == 1_250 and response.authorization_code
    (authorization,) = both.host.record().authorizations
    assert authorization.response_code == "00" and authorization.amount_minor == 1_250
    assert authorization.auth_code == response.authorization_code
    status = both.terminal.status(txn)
    assert status.found and status.status == "approved"
    assert status.transaction.payment_method == "contactless"
    both.audit()


def test_contactless_above_the_limit_needs_a_pin(sqlite: PaymentWorld) -> None:
    at_limit = sqlite.terminal.pay(5_000)
    above = sqlite.terminal.pay(5_001)
    with_pin = sqlite.terminal.pay(5_001, pan=VISA_PIN_PAN, pin="1234")
    assert at_limit.response_code == "00"
    assert (above.response_code, above.status) == ("55", "declined")
    assert "contactless above 50.00 EUR needs an online PIN" in above.message
    assert with_pin.response_code == "00"
    # The PIN-less decline never reached the acquirer.
    assert sorted(a.amount_minor for a in sqlite.host.record().authorizations) == [5_000, 5_001]
    sqlite.audit()


def test_chip_with_pin_in_format_4_and_format_0(both: PaymentWorld) -> None:
    assert both.terminal.pin_format == 4 and both.legacy.pin_format == 0
    aes = both.terminal.pay(2_000, pan=VISA_PIN_PAN, mode=CHIP, pin="1234")
    tdes = both.legacy.pay(2_100, pan=MASTERCARD_PAN, mode=CHIP, pin="4321")
    assert (aes.response_code, aes.payment_method) == ("00", "chip")
    assert (tdes.response_code, tdes.payment_method) == ("00", "chip")
    no_pin = both.terminal.pay(2_200, pan=VISA_PIN_PAN, mode=CHIP)
    assert no_pin.response_code == "55" and "chip payments need an online PIN" in no_pin.message
    assert len(both.host.record().authorizations) == 2
    both.audit()


def test_wrong_pin_and_amount_rule_are_declined_by_the_host(sqlite: PaymentWorld) -> None:
    wrong_pin = sqlite.terminal.pay(3_000, pan=VISA_PIN_PAN, mode=CHIP, pin="9999")
    by_amount = sqlite.terminal.pay(1_051)  # the host declines cents 51 as insufficient funds
    assert (wrong_pin.response_code, wrong_pin.status) == ("55", "declined")
    assert (by_amount.response_code, by_amount.status) == ("51", "declined")
    codes = sorted(a.response_code for a in sqlite.host.record().authorizations)
    assert codes == ["51", "55"]
    sqlite.audit()


def test_magstripe_without_pin_is_approved(sqlite: PaymentWorld) -> None:
    response = sqlite.terminal.pay(1_500, mode=MAGSTRIPE, track2=f"{VISA_PAN}=30122010000012345")
    assert (response.response_code, response.payment_method) == ("00", "magstripe")
    sqlite.audit()


def test_dropped_response_declines_68_and_reversal_is_repeated_until_acknowledged(both: PaymentWorld) -> None:
    both.host.call(lambda: both.host.host.drop_next_responses(1))
    both.host.call(lambda: both.host.host.ignore_next_reversals(2))
    txn = new_txn()
    response = both.terminal.pay(1_000, txn=txn)
    assert (response.response_code, response.status) == ("68", "declined")
    assert "reversal is queued" in response.message
    wait_until(lambda: not both.saf_pending())
    (reversal,) = both.host.record().reversals
    assert reversal.key == host_key(both, txn)
    assert reversal.mtis == ("0420", "0421", "0421")
    both.audit()
    assert both.host.record().approved_not_reversed() == frozenset()


def test_late_response_is_reversed_never_approved(sqlite: PaymentWorld) -> None:
    def slow() -> None:
        sqlite.host.host.config.latency_ms = RESPONSE_TIMEOUT_MS + 300

    sqlite.host.call(slow)
    txn = new_txn()
    response = sqlite.terminal.pay(1_000, txn=txn)
    assert response.response_code == "68"
    key = host_key(sqlite, txn)
    # The host approved it, late; the switch must have reversed exactly that approval.
    wait_until(lambda: key in sqlite.host.record().approved_keys())
    wait_until(lambda: key in sqlite.host.record().reversed_keys() and not sqlite.saf_pending())
    assert sqlite.terminal.status(txn).status == "declined"
    sqlite.audit()


def test_pending_reversals_are_sent_after_a_restart(tmp_path: Path) -> None:
    with payment_world(tmp_path, "sqlite") as world:
        world.host.call(lambda: world.host.host.drop_next_responses(1))
        world.host.call(lambda: world.host.host.ignore_next_reversals(1_000))
        txn = new_txn()
        assert world.terminal.pay(1_000, txn=txn).response_code == "68"
        wait_until(lambda: len(world.host.record().reversals) == 1)
        world.world.channel.close()
        world.world.server.stop()
        (pending,) = world.saf_pending()
        assert pending.attempts >= 1
        before = world.host.record().reversals[0].advices_received

        world.host.call(world.host.host.acknowledge_reversals_again)
        restarted = SwitchServer(world.world.server.settings)
        world.world.server = restarted
        restarted.start()
        world.world.channel = grpc.insecure_channel(restarted.address)
        wait_until(lambda: not world.saf_pending())
        (reversal,) = world.host.record().reversals
        assert reversal.key == host_key(world, txn)
        assert reversal.advices_received > before and reversal.mtis[-1] == "0421"
        world.audit()


def test_replayed_transaction_id_gets_the_same_answer_and_one_authorisation(both: PaymentWorld) -> None:
    request = both.terminal.request(1_700)
    first = both.terminal.send(request)
    again = both.terminal.send(request)
    assert first.response_code == "00"
    assert again == first
    other = both.terminal.request(1_800, txn=request.transaction_id)
    refused = both.terminal.send(other)
    assert refused.response_code == "94"
    assert len(both.host.record().authorizations) == 1
    assert payment_rows(both) == 1
    both.audit()


def test_abort_before_the_payment_keeps_it_from_ever_going_through(sqlite: PaymentWorld) -> None:
    txn = new_txn()
    aborted = sqlite.terminal.abort(txn)
    assert (aborted.response_code, aborted.status) == ("17", "aborted")
    late = sqlite.terminal.pay(1_000, txn=txn)
    assert (late.response_code, late.status) == ("17", "aborted")
    assert sqlite.host.record().authorizations == ()
    sqlite.audit()


def test_abort_after_approval_reverses_at_the_acquirer(sqlite: PaymentWorld) -> None:
    txn = new_txn()
    assert sqlite.terminal.pay(1_000, txn=txn).response_code == "00"
    aborted = sqlite.terminal.abort(txn)
    again = sqlite.terminal.abort(txn)
    assert (aborted.response_code, aborted.status) == ("17", "aborted")
    assert again == aborted
    wait_until(lambda: not sqlite.saf_pending())
    (reversal,) = sqlite.host.record().reversals
    assert reversal.key == host_key(sqlite, txn) and reversal.matched_original
    assert sqlite.terminal.status(txn).status == "aborted"
    sqlite.audit()


def test_reversal_of_an_approved_payment(both: PaymentWorld) -> None:
    txn = new_txn()
    assert both.terminal.pay(2_500, txn=txn).response_code == "00"
    reversed_ = both.terminal.reversal(txn)
    repeated = both.terminal.reversal(txn)
    assert reversed_.response_code == "00" and reversed_.payment_method == "contactless"
    assert repeated.response_code == reversed_.response_code
    assert both.terminal.status(txn).status == "reversed"
    wait_until(lambda: not both.saf_pending())
    (reversal,) = both.host.record().reversals
    assert reversal.key == host_key(both, txn) and reversal.amount_minor == 2_500
    both.audit()


def test_cancel_of_a_payment_with_the_employee_pin_reverses_it_at_the_acquirer(both: PaymentWorld) -> None:
    txn, cancel = new_txn(), new_txn()
    assert both.terminal.pay(3_200, txn=txn).response_code == "00"
    shop = TerminalClient(both.terminal.stub, both.terminal.credential, both.terminal.terminal_id)
    assert shop.cancel(txn, pin="0000").response_code == "55"  # a wrong PIN reverses nothing
    assert both.terminal.status(txn).status == "approved"
    refund = shop.refund(txn, 1_000)
    assert (
        refund.response_code == "12" and "is refunded with RefundCard, the card presented" in refund.message
    )
    cancelled = shop.cancel(txn, txn=cancel)
    assert (cancelled.response_code, cancelled.status) == ("00", "approved")
    assert cancelled.payment_method == "contactless" and cancelled.requested.amount_minor == 3_200
    assert shop.cancel(txn, txn=cancel).response_code == "00"  # the same id: the same answer
    again = shop.cancel(txn)
    assert again.response_code == "12" and "the payment is cancelled" in again.message
    assert both.terminal.reversal(txn).message.endswith("original is cancelled; nothing moved")
    assert both.terminal.status(txn).status == "cancelled"
    wait_until(lambda: not both.saf_pending())
    (reversal,) = both.host.record().reversals
    assert reversal.key == host_key(both, txn) and reversal.amount_minor == 3_200
    totals = {
        (t.transaction_type, t.payment_method): (t.count, t.total.amount_minor)
        for t in both.terminal.x_report().totals
    }
    # As for stored value: the sale stands in the takings, and the cancel beside it nets it out.
    assert totals[("payment", "contactless")] == (1, 3_200)
    assert totals[("cancel", "contactless")] == (1, 3_200)
    assert ("reversal", "contactless") not in totals  # it found nothing to undo: no money, no line
    both.audit()


def card_refund(both: PaymentWorld, amount_minor: int, pin: str = EMPLOYEE.pin) -> pb.CardRefundRequest:
    card = both.terminal.request(amount_minor)
    return pb.CardRefundRequest(
        transaction_id=card.transaction_id,
        sequence_number=card.sequence_number,
        amount=card.amount,
        card=card.card,
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=pin),
    )


def send_refund(both: PaymentWorld, request: pb.CardRefundRequest) -> pb.TransactionResponse:
    terminal = both.terminal
    answer: pb.TransactionResponse = terminal.stub.RefundCard(request, metadata=terminal.metadata, timeout=20)
    return answer


def test_a_refund_to_the_card_needs_the_employee_pin_and_goes_out_with_processing_code_20(
    both: PaymentWorld,
) -> None:
    terminal = both.terminal
    assert terminal.pay(2_500).response_code == "00"  # the takings a refund is paid from
    refund = card_refund(both, 1_500)
    wrong = send_refund(both, card_refund(both, 1_500, pin="0000"))
    assert wrong.response_code == "55" and "nothing was sent to the acquirer" in wrong.message
    assert len(both.host.record().authorizations) == 1
    done = send_refund(both, refund)
    assert (done.response_code, done.status, done.payment_method) == ("00", "approved", "contactless")
    assert done.approved.amount_minor == 1_500 and done.authorization_code
    assert send_refund(both, refund) == done  # a replay gets the same answer, and nothing goes out again
    (_, sent) = both.host.record().authorizations
    assert (sent.processing_code, sent.amount_minor) == ("200000", 1_500)
    assert terminal.status(refund.transaction_id).status == "approved"
    totals = {
        (t.transaction_type, t.payment_method): (t.count, t.total.amount_minor)
        for t in terminal.x_report().totals
    }
    assert totals[("refund", "contactless")] == (1, 1_500)
    both.audit()  # the standing refund is the host's one standing approval
    # The employee may void the refund while the period is open: a 0420 of the refund goes out.
    shop = TerminalClient(terminal.stub, terminal.credential, terminal.terminal_id)
    cancelled = shop.cancel(refund.transaction_id)
    assert cancelled.response_code == "00", cancelled.message
    assert terminal.status(refund.transaction_id).status == "cancelled"
    wait_until(lambda: not both.saf_pending())
    (reversal,) = both.host.record().reversals
    assert reversal.amount_minor == 1_500
    # A refund whose answer the terminal lost is reversed like a payment.
    lost = card_refund(both, 700)
    assert send_refund(both, lost).response_code == "00"
    assert terminal.reversal(lost.transaction_id).response_code == "00"
    assert terminal.status(lost.transaction_id).status == "reversed"
    wait_until(lambda: len(both.host.record().reversals) == 2)
    both.audit()


def test_refunds_to_cards_take_at_most_the_card_takings_of_the_terminals_open_period(
    both: PaymentWorld,
) -> None:
    terminal = both.terminal
    nothing_taken = send_refund(both, card_refund(both, 100))
    assert (nothing_taken.response_code, nothing_taken.status) == ("61", "declined")
    assert "card takings not yet refunded: 0.00 EUR; nothing was sent" in nothing_taken.message
    assert nothing_taken.payment_method == "contactless" and nothing_taken.card_masked == "411111****1111"
    assert terminal.pay(3_000).response_code == "00"
    cancelled_sale = new_txn()
    assert terminal.pay(5_000, txn=cancelled_sale).response_code == "00"
    shop = TerminalClient(terminal.stub, terminal.credential, terminal.terminal_id)
    assert shop.cancel(cancelled_sale).response_code == "00"  # a cancelled sale is no takings
    first = send_refund(both, card_refund(both, 2_000))
    assert first.response_code == "00", first.message
    over = card_refund(both, 1_001)  # 3,000 taken, 2,000 refunded
    refused = send_refund(both, over)
    assert refused.response_code == "61" and "not yet refunded: 10.00 EUR" in refused.message
    other_currency = card_refund(both, 500)
    other_currency.amount.currency = "USD"  # euro takings pay no dollar refund
    assert send_refund(both, other_currency).response_code == "61"
    refunded = {a.amount_minor for a in both.host.record().authorizations if a.processing_code == "200000"}
    assert refunded == {2_000}  # the refused refunds never reached the acquirer
    exact = send_refund(both, card_refund(both, 1_000))
    assert exact.response_code == "00", exact.message
    assert send_refund(both, card_refund(both, 1)).response_code == "61"  # all 3,000 refunded
    assert shop.cancel(exact.transaction_id).response_code == "00"  # a cancelled refund gives it back
    assert send_refund(both, card_refund(both, 1_000)).response_code == "00"
    assert send_refund(both, over) == refused  # a refused refund is stored: its replay, the same answer
    report = {
        (t.transaction_type, t.undoes): (t.count, t.total.amount_minor) for t in terminal.x_report().totals
    }
    # The cancelled refund stands beside its cancel line, which adds back what the refund took and so
    # is a line apart from the cancelled sale's; the refused refunds moved nothing: no line.
    assert report[("refund", "")] == (3, 4_000)
    assert (report[("cancel", "payment")], report[("cancel", "refund")]) == ((1, 5_000), (1, 1_000))
    assert terminal.day_close().sequence_number >= 1
    next_day = send_refund(both, card_refund(both, 100))
    assert next_day.response_code == "61"  # the new period has taken nothing yet
    both.audit()


def test_refunds_on_two_nodes_at_the_same_moment_take_the_takings_once(tmp_path: Path) -> None:
    # Both refunds pass the first check (nothing refunded yet) and are with the acquirer together
    # for 200 ms; only the second check, under the terminal's refund lock where each refund is
    # recorded as sent, sees the other one in flight.
    with payment_world(tmp_path, "postgres", AcquirerHostConfig(latency_ms=200)) as world:
        terminal = world.terminal
        assert terminal.pay(3_000).response_code == "00"
        settings = world.world.server.settings.with_overrides(data_dir=tmp_path / "node-b")
        node_b = SwitchServer(settings)
        node_b.start()
        channel_b = grpc.insecure_channel(node_b.address)
        try:
            stubs = (terminal.stub, pb_grpc.TerminalStub(channel_b))
            together = threading.Barrier(len(stubs))

            def refund(stub: pb_grpc.TerminalStub) -> pb.TransactionResponse:
                request = card_refund(world, 2_000)
                together.wait()
                answer: pb.TransactionResponse = stub.RefundCard(
                    request, metadata=terminal.metadata, timeout=20
                )
                return answer

            with ThreadPoolExecutor(len(stubs)) as pool:
                answers = list(pool.map(refund, stubs))
        finally:
            channel_b.close()
            node_b.stop()
        assert sorted(answer.response_code for answer in answers) == ["00", "61"], [
            a.message for a in answers
        ]
        (refused,) = (answer for answer in answers if answer.response_code == "61")
        assert "not yet refunded: 10.00 EUR; nothing was sent" in refused.message
        assert terminal.status(refused.transaction_id).status == "declined"
        refunds = [a for a in world.host.record().authorizations if a.processing_code == "200000"]
        assert [a.amount_minor for a in refunds] == [2_000]
        world.audit()


def test_a_card_refund_request_names_what_is_wrong(both: PaymentWorld) -> None:
    terminal = both.terminal
    no_employee = card_refund(both, 500)
    no_employee.ClearField("employee")
    no_card = card_refund(both, 500)
    no_card.ClearField("card")
    negative = card_refund(both, 500)
    negative.amount.amount_minor = -500
    for request, named in (
        (no_employee, "employee"),
        (no_card, "card is missing"),
        (negative, "amount.amount_minor must be 1-"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            terminal.stub.RefundCard(request, metadata=terminal.metadata, timeout=20)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert named in (refused.value.details() or ""), refused.value.details()
    assert not both.host.record().authorizations


def test_a_payment_from_a_closed_period_is_not_cancelled(both: PaymentWorld) -> None:
    txn = new_txn()
    assert both.terminal.pay(2_500, txn=txn).response_code == "00"
    both.terminal.day_close()
    shop = TerminalClient(both.terminal.stub, both.terminal.credential, both.terminal.terminal_id)
    refused = shop.cancel(txn)
    assert refused.response_code == "12"
    assert "from period 1, closed by a day close; too late to cancel" in refused.message
    assert both.terminal.status(txn).status == "approved"
    assert not both.saf_pending() and not both.host.record().reversals
    both.audit()


def test_day_close_totals_per_payment_method(both: PaymentWorld) -> None:
    gift_card = both.world.issue(10_000)
    stored_value = TerminalClient(both.terminal.stub, both.terminal.credential, both.terminal.terminal_id)
    assert stored_value.redeem(gift_card, 300).response_code == "00"
    assert both.terminal.pay(1_000).response_code == "00"
    assert both.terminal.pay(1_100).response_code == "00"
    reversed_txn = new_txn()
    assert both.terminal.pay(4_000, txn=reversed_txn).response_code == "00"
    assert both.terminal.reversal(reversed_txn).response_code == "00"
    aborted_txn = new_txn()
    assert both.terminal.pay(4_100, txn=aborted_txn).response_code == "00"
    assert both.terminal.abort(aborted_txn).response_code == "17"
    assert both.terminal.pay(2_000, pan=VISA_PIN_PAN, mode=CHIP, pin="1234").response_code == "00"
    assert both.terminal.pay(1_051).response_code == "51"  # declined: not in the totals
    assert (
        both.terminal.pay(900, mode=MAGSTRIPE, track2=f"{VISA_PAN}=30122010000012345").response_code == "00"
    )

    def totals(report: pb.DayCloseReport) -> dict[tuple[str, str, str], tuple[int, int]]:
        return {
            (t.transaction_type, t.payment_method, t.undoes): (t.count, t.total.amount_minor)
            for t in report.totals
        }

    # The reversed payment stays on its line, its reversal beside it; the aborted one is no line.
    expected = {
        ("redemption", "stored_value", ""): (1, 300),
        ("payment", "contactless", ""): (3, 6_100),
        ("reversal", "contactless", "payment"): (1, 4_000),
        ("payment", "chip", ""): (1, 2_000),
        ("payment", "magstripe", ""): (1, 900),
    }
    assert totals(both.terminal.x_report()) == expected
    close = both.terminal.day_close()
    assert totals(close) == expected
    assert close.next_period_number == close.period_number + 1
    both.audit()


BAD_REQUESTS: list[tuple[str, dict[str, object], str]] = [
    ("Luhn", {"pan": "4111111111111112"}, "card.pan fails the Luhn check"),
    ("short PAN", {"pan": "41111111"}, "card.pan must be 12-19 digits"),
    ("expiry month", {"expiry_yymm": "3013"}, "card.expiry_yymm has a month outside 01-12"),
    ("entry mode", {"entry_mode": pb.ENTRY_MODE_UNSPECIFIED}, "card.entry_mode must be"),
    ("chip without EMV", {"entry_mode": CHIP}, "card.emv is missing"),
    ("magstripe without track", {"entry_mode": MAGSTRIPE}, "card.track2 is missing"),
    ("track on contactless", {"track2": f"{VISA_PAN}=3012201"}, "card.track2 is for magstripe only"),
    # str.isdigit takes a superscript two and an Arabic-Indic one; ISO 8583 then refused field 35 (96)
    (
        "track2 superscript",
        {"entry_mode": MAGSTRIPE, "track2": f"{VISA_PAN}=30122\u00b201"},
        "card.track2 must be",
    ),
    (
        "track2 Arabic-Indic",
        {"entry_mode": MAGSTRIPE, "track2": f"{VISA_PAN}=301220\u0661"},
        "card.track2 must be",
    ),
    ("zero amount", {"amount_minor": 0}, "amount.amount_minor must be"),
    ("currency", {"currency": "XXX"}, "amount.currency is not accepted"),
    ("sequence number", {"sequence_number": 0}, "sequence_number must be"),
    ("PIN block length", {"pin_block": b"\x01" * 8, "pin_block_format": 4}, "pin_block must be 16 bytes"),
    ("PIN block format", {"pin_block": b"\x01" * 8, "pin_block_format": 1}, "pin_block_format must be 0"),
    (
        "format vs key",
        {"pin_block": b"\x01" * 8, "pin_block_format": 0},
        "this terminal's PIN key is for format 4",
    ),
]


def bad_request(terminal: PayTerminal, change: dict[str, object]) -> pb.PayRequest:
    request = terminal.request(1_000)
    for name, value in change.items():
        if name in ("pan", "expiry_yymm", "entry_mode", "track2"):
            setattr(request.card, name, value)
        elif name in ("amount_minor", "currency"):
            setattr(request.amount, name, value)
        else:
            setattr(request, name, value)
    return request


def test_bad_payment_requests_name_the_field_and_change_nothing(sqlite: PaymentWorld) -> None:
    for name, change, expected in BAD_REQUESTS:
        with pytest.raises(grpc.RpcError) as caught:
            sqlite.terminal.send(bad_request(sqlite.terminal, change))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected in (caught.value.details() or ""), name
        assert VISA_PAN not in (caught.value.details() or ""), name
    assert payment_rows(sqlite) == 0
    assert sqlite.host.record().authorizations == ()


def test_expired_card_is_declined_without_the_acquirer(sqlite: PaymentWorld) -> None:
    request = sqlite.terminal.request(1_000)
    request.card.expiry_yymm = "2001"
    response = sqlite.terminal.send(request)
    assert (response.response_code, response.status) == ("54", "declined")
    assert sqlite.host.record().authorizations == ()


def test_many_terminals_pay_at_once_and_the_audit_is_clean(sqlite: PaymentWorld) -> None:
    from concurrent.futures import ThreadPoolExecutor

    terminals = [sqlite.terminal, sqlite.legacy]
    sqlite.host.call(lambda: setattr(sqlite.host.host.config, "drop_share", 0.2))

    def one(index: int) -> str:
        return terminals[index % 2].pay(1_000 + index * 10).response_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(one, range(40)))
    assert set(codes) <= {"00", "68"} and "68" in codes and "00" in codes
    wait_until(lambda: not sqlite.saf_pending())
    sqlite.audit()


def test_abort_while_the_authorisation_is_in_flight_reverses_it(sqlite: PaymentWorld) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sqlite.host.call(lambda: setattr(sqlite.host.host.config, "latency_ms", RESPONSE_TIMEOUT_MS // 2))
    txn = new_txn()
    with ThreadPoolExecutor(max_workers=1) as pool:
        paying = pool.submit(sqlite.terminal.pay, 1_000, txn=txn)
        wait_until(lambda: len(sqlite.host.record().authorizations) == 1)
        aborted = sqlite.terminal.abort(txn)  # the terminal actor finishes the payment first
        paid = paying.result()
    assert paid.response_code == "00"
    assert (aborted.response_code, aborted.status) == ("17", "aborted")
    wait_until(lambda: not sqlite.saf_pending())
    assert sqlite.host.record().reversed_keys() == {host_key(sqlite, txn)}
    sqlite.audit()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_stop_mid_authorisation_answers_68_and_the_next_start_reverses_it(
    tmp_path: Path, database: str
) -> None:
    with payment_world(tmp_path, database) as world:

        def slow() -> None:
            world.host.host.config.latency_ms = 30_000

        def fast() -> None:
            world.host.host.config.latency_ms = 0

        world.host.call(slow)
        txn = new_txn()
        request = world.terminal.request(1_000, txn=txn)
        in_flight = world.terminal.stub.Pay.future(request, metadata=world.terminal.metadata, timeout=20)
        wait_until(lambda: len(world.host.record().authorizations) == 1)
        # A graceful stop: the links close under the waiting authorisation, which then counts as
        # unanswered (68, reversal stored); a kill is tested in test_payment_crash.py.
        world.world.server.stop(grace_s=0.2)
        assert in_flight.exception() is not None or in_flight.result().response_code == "68"
        world.world.channel.close()
        (authorization,) = world.host.record().authorizations
        assert authorization.response_code == "00"
        with world.engine().connect() as conn:
            stages = conn.execute(select(card_payments.c.stage, card_payments.c.reversal_queued)).all()
        assert [tuple(row) for row in stages] == [(STAGE_ANSWERED, True)]

        world.host.call(fast)
        restarted = SwitchServer(world.world.server.settings)
        world.world.server = restarted
        restarted.start()
        world.world.channel = grpc.insecure_channel(restarted.address)
        world.terminal.stub = type(world.terminal.stub)(world.world.channel)
        wait_until(lambda: authorization.key in world.host.record().reversed_keys())
        wait_until(lambda: not world.saf_pending())
        status = world.terminal.status(txn)
        assert (status.status, status.transaction.response_code) == ("declined", "68")
        assert world.terminal.send(request) == status.transaction
        assert len(world.host.record().authorizations) == 1
        world.audit()


def test_pin_required_and_wrong_pin_are_both_55_but_never_confused(sqlite: PaymentWorld) -> None:
    missing = [sqlite.terminal.pay(6_000) for _ in range(3)]  # contactless above the limit, no PIN
    wrong = sqlite.terminal.pay(6_000, pan=VISA_PIN_PAN, mode=CHIP, pin="9999")
    assert {(r.response_code, r.message.split(":")[0]) for r in missing} == {("55", "PIN required")}
    assert (wrong.response_code, wrong.message) == ("55", "Incorrect PIN")
    with sqlite.engine().connect() as conn:
        results = conn.execute(
            select(transactions.c.result, func.count())
            .where(transactions.c.transaction_type == "payment")
            .group_by(transactions.c.result)
        ).all()
    assert sorted(tuple(row) for row in results) == [("incorrect_pin", 1), ("pin_required", 3)]
    # Only the wrong PIN reached the acquirer; the missing ones locked nothing: the right PIN passes.
    assert [a.response_code for a in sqlite.host.record().authorizations] == ["55"]
    assert sqlite.terminal.pay(6_000, pan=VISA_PIN_PAN, mode=CHIP, pin="1234").response_code == "00"
    assert sqlite.terminal.status(missing[0].transaction_id).transaction.message == missing[0].message
    sqlite.audit()


def test_acquirer_latency_reaches_the_metrics_by_acquirer(sqlite: PaymentWorld) -> None:
    from prometheus_client import generate_latest

    for amount_minor in (1_000, 1_100, 1_200):
        assert sqlite.terminal.pay(amount_minor).response_code == "00"
    text = generate_latest(sqlite.world.server.metrics.registry).decode()
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("txswitch_acquirer_request_duration_seconds_count{")
    ]
    assert counts and all('acquirer="' in line for line in counts)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counts) == 3


def test_a_cancel_refused_for_a_wrong_employee_pin_is_stored_under_the_payments_method(
    both: PaymentWorld,
) -> None:
    """The refusal is stored (a replay gets the same answer) as a line of the payment it named: its
    currency and its entry mode, so the report totals it with the other cancels of card payments
    rather than on a stored-value line."""
    txn, refused = new_txn(), new_txn()
    assert both.terminal.pay(3_200, txn=txn, mode=CHIP, pan=VISA_PIN_PAN, pin="1234").response_code == "00"
    shop = TerminalClient(both.terminal.stub, both.terminal.credential, both.terminal.terminal_id)
    assert shop.cancel(txn, pin="0000", txn=refused).response_code == "55"
    stored = both.world.server.core.store.transaction(both.terminal.terminal_id, refused)
    assert stored is not None
    assert (stored.record.currency, stored.record.payment_method) == ("EUR", "chip")
