"""Bank-card payments with two nodes on one database and one acquirer host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import trio

from actors.acquirer_gateway import AcquirerGateway
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.server import SwitchServer
from switch.store.payments import STAGE_ANSWERED
from switch.store.saf import SafStore
from terminal_sim.acquirer_host import AcquirerHostConfig
from tests.integration.harness import EMPLOYEE, new_txn
from tests.integration.payment_harness import (
    MASTERCARD_PAN,
    RESPONSE_TIMEOUT_MS,
    VISA_PAN,
    VISA_PIN_PAN,
    PaymentWorld,
    PayTerminal,
    activate,
    payment_world,
    wait_until,
)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[PaymentWorld, PayTerminal]]:
    """Node A (the payment world) and node B; the same terminal connected to each."""
    with payment_world(tmp_path, "postgres") as paying:
        node_b = SwitchServer(paying.world.server.settings.with_overrides(data_dir=tmp_path / "node-b"))
        node_b.start()
        channel_b = grpc.insecure_channel(node_b.address)
        try:
            t = paying.terminal
            yield (
                paying,
                PayTerminal(
                    pb_grpc.TerminalStub(channel_b), t.credential, t.terminal_id, t.pin_key, t.pin_format
                ),
            )
        finally:
            channel_b.close()
            node_b.stop()


def cancel(terminal: PayTerminal, original: str) -> pb.TransactionResponse:
    request = pb.CancelRequest(
        transaction_id=new_txn(),
        original_transaction_id=original,
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin),
    )
    answer: pb.TransactionResponse = terminal.stub.Cancel(request, metadata=terminal.metadata, timeout=20)
    return answer


def card_refund_request(terminal: PayTerminal, amount_minor: int) -> pb.CardRefundRequest:
    card = terminal.request(amount_minor)
    return pb.CardRefundRequest(
        transaction_id=card.transaction_id,
        sequence_number=card.sequence_number,
        amount=card.amount,
        card=card.card,
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin),
    )


def refund_to_card(terminal: PayTerminal, amount_minor: int) -> pb.TransactionResponse:
    request = card_refund_request(terminal, amount_minor)
    answer: pb.TransactionResponse = terminal.stub.RefundCard(request, metadata=terminal.metadata, timeout=20)
    return answer


def test_a_payment_of_a_period_closed_on_node_b_is_not_cancelled_at_the_acquirer_by_node_a(
    two: tuple[PaymentWorld, PayTerminal],
) -> None:
    paying, on_b = two
    on_a = paying.terminal
    paid = on_a.pay(1_000)
    assert paid.response_code == "00"
    on_b.day_close()  # the payment's period goes to settlement
    time.sleep(1.2)  # older than any copy may be
    refused = cancel(on_b, paid.transaction_id)
    assert refused.response_code == "12" and "too late to cancel" in refused.message
    answer = cancel(on_a, paid.transaction_id)
    assert answer.response_code == "12", f"node A: {answer.response_code} {answer.message}"
    assert not paying.host.record().reversals


def test_a_refund_to_a_card_on_node_a_counts_only_the_takings_of_the_period_node_b_opened(
    two: tuple[PaymentWorld, PayTerminal],
) -> None:
    paying, on_b = two
    on_a = paying.terminal
    assert on_a.pay(1_000).response_code == "00"
    on_b.day_close()  # the new period has no takings yet
    time.sleep(1.2)
    assert refund_to_card(on_b, 1_000).response_code == "61"
    answer = refund_to_card(on_a, 1_000)
    assert answer.response_code == "61", f"node A: {answer.response_code} {answer.message}"


def test_a_node_that_starts_leaves_a_payment_the_other_node_is_waiting_for_alone(tmp_path: Path) -> None:
    # Before, a start recovered every pending payment on the database, whoever was waiting for it:
    # node B reversed node A's approval in flight and node A answered its terminal 68.
    with payment_world(tmp_path, "postgres", AcquirerHostConfig(latency_ms=2_500), 20_000) as paying:
        on_a = paying.terminal
        request = on_a.request(1_000)
        in_flight = on_a.stub.Pay.future(request, metadata=on_a.metadata, timeout=30)
        wait_until(lambda: len(paying.host.record().authorizations) == 1)
        node_b = SwitchServer(paying.world.server.settings.with_overrides(data_dir=tmp_path / "node-b"))
        node_b.start()
        try:
            answer = in_flight.result()
            assert (answer.response_code, answer.status) == ("00", "approved"), answer.message
            assert not paying.host.record().reversals
            assert paying.stages(request.transaction_id) == [STAGE_ANSWERED]
        finally:
            node_b.stop()


def test_a_running_node_does_not_reverse_its_own_payment_while_it_waits_for_its_answer(
    tmp_path: Path,
) -> None:
    # The sweep once took this node's own pending rows at any age, as a start rightly does: with a
    # response timeout of 4 s and no grace it runs every 2 s, and the host answers after 3 s.
    with payment_world(tmp_path, "postgres", AcquirerHostConfig(latency_ms=3_000), 4_000, 0) as paying:
        request = paying.terminal.request(1_000)
        answer = paying.terminal.send(request)
        assert (answer.response_code, answer.status) == ("00", "approved"), answer.message
        assert paying.stages(request.transaction_id) == [STAGE_ANSWERED]
        assert not paying.host.record().reversals


# --- session 22 audit: the acquirer link when two nodes answer one terminal --------------------


@contextmanager
def payments_and_node_b(
    tmp_path: Path, host: AcquirerHostConfig | None = None, response_timeout_ms: int = RESPONSE_TIMEOUT_MS
) -> Iterator[tuple[PaymentWorld, SwitchServer, PayTerminal]]:
    """Node A (the payment world on PostgreSQL) and node B, with the world's terminal on each."""
    with payment_world(tmp_path, "postgres", host, response_timeout_ms) as paying:
        node_b = SwitchServer(paying.world.server.settings.with_overrides(data_dir=tmp_path / "node-b"))
        node_b.start()
        channel = grpc.insecure_channel(node_b.address)
        t = paying.terminal
        try:
            yield (
                paying,
                node_b,
                PayTerminal(
                    pb_grpc.TerminalStub(channel), t.credential, t.terminal_id, t.pin_key, t.pin_format
                ),
            )
        finally:
            channel.close()
            node_b.stop()


def stan_counter(gateway: AcquirerGateway, value: int | None = None) -> int:
    """The gateway's next-STAN counter, read (or set) on its own loop, which owns it."""
    token = gateway._token
    assert token is not None

    def at() -> int:
        if value is not None:
            gateway._stan = value
        return gateway._stan

    return trio.from_thread.run_sync(at, trio_token=token)


def test_two_nodes_never_send_two_payments_under_one_acquirer_name(tmp_path: Path) -> None:
    # Each node counts its STANs from its own random start, and the acquirer names a payment by
    # terminal, STAN and field 7 (to the second). Node B's counter set to node A's, as two random
    # starts may have it: before, node B's payment in the same second was taken for node A's (its
    # answer, A's; a different amount reversed A's approval). The row now reserves the name.
    with payments_and_node_b(tmp_path) as (paying, node_b, on_b):
        acquiring_a, acquiring_b = paying.world.server.acquiring, node_b.acquiring
        assert acquiring_a is not None and acquiring_b is not None
        for _ in range(10):
            stan_counter(acquiring_b.gateway, stan_counter(acquiring_a.gateway))
            paid_a = paying.terminal.pay(1_000, pan=VISA_PAN)
            paid_b = on_b.pay(2_000, pan=MASTERCARD_PAN)
            names = paying.names(paid_a.transaction_id, paid_b.transaction_id)
            assert len(set(names)) == 2, f"two payments under one name: {names}"
            assert (paid_a.response_code, paid_b.response_code) == ("00", "00"), (paid_a, paid_b)
            if names[0][2] == names[1][2]:  # the same second: B's first STAN was A's
                break
        else:
            pytest.fail("the two payments never fell in one second")
        wait_until(lambda: not paying.saf_pending(), timeout_s=5)
        # Every approval a terminal saw stands at the acquirer, once.
        assert paying.host.record().approved_not_reversed() == paying.approved_keys()


def test_a_payment_sent_again_through_node_b_gets_node_as_answer(tmp_path: Path) -> None:
    # Before, node B lost the race for the payment's row, stored a 96 for the id, and node A then
    # found the id answered and reversed its approval: both answered 96 and the sale was lost.
    with payments_and_node_b(tmp_path, AcquirerHostConfig(latency_ms=1_500), 5_000) as (paying, _, on_b):
        on_a = paying.terminal
        request = on_a.request(1_000)
        in_flight = on_a.stub.Pay.future(request, metadata=on_a.metadata, timeout=20)
        wait_until(lambda: len(paying.host.record().authorizations) == 1)  # node A's 0200 is out
        repeat = on_b.send(request)  # the same id and content, through node B
        first = in_flight.result()
        assert (first.response_code, first.status) == ("00", "approved"), first.message
        assert repeat == first  # node B waited for node A's answer
        assert not paying.host.record().reversals


def test_a_refund_sent_again_through_node_b_gets_node_as_answer(tmp_path: Path) -> None:
    # Its first copy, in flight on node A, counted against the takings node B checked: node B
    # stored 61 for the id, and node A then found it answered and reversed its approved refund.
    with payments_and_node_b(tmp_path, AcquirerHostConfig(latency_ms=1_500), 5_000) as (paying, _, on_b):
        on_a = paying.terminal
        assert on_a.pay(1_000).response_code == "00"  # the takings the refund is paid from
        request = card_refund_request(on_a, 1_000)
        in_flight = on_a.stub.RefundCard.future(request, metadata=on_a.metadata, timeout=20)
        wait_until(lambda: len(paying.host.record().authorizations) == 2)  # the refund's 0200 is out
        repeat = on_b.stub.RefundCard(request, metadata=on_b.metadata, timeout=20)
        first = in_flight.result()
        assert (first.response_code, first.status) == ("00", "approved"), first.message
        assert repeat == first
        assert not paying.host.record().reversals


def test_the_sale_a_refund_was_paid_from_cannot_be_cancelled(tmp_path: Path) -> None:
    # Before, the cancel's reversal went out first and the takings were not counted: the terminal
    # had then taken nothing from cards and refunded 10.00 to one. On one node too.
    with payments_and_node_b(tmp_path) as (paying, _, on_b):
        on_a = paying.terminal
        sale = on_a.pay(1_000)
        assert sale.response_code == "00"
        assert refund_to_card(on_b, 1_000).response_code == "00"  # all of the period's card takings
        for undo in (cancel(on_a, sale.transaction_id), on_a.reversal(sale.transaction_id)):
            assert undo.response_code == "12" and "refunds to cards were paid from this sale" in undo.message
        aborted = on_a.abort(sale.transaction_id)
        assert aborted.response_code == "12" and "refund instead" in aborted.message
        wait_until(lambda: not paying.saf_pending(), timeout_s=5)
        assert not paying.host.record().reversals
        paying.audit()


def test_two_nodes_never_queue_two_reversal_advices_under_one_name(tmp_path: Path) -> None:
    # The advices' own STANs come from the same counters: with node B's set to node A's, a cancel
    # on each queued two advices of one terminal under one STAN, and a late 0430 for either then
    # acknowledged neither. The row reserves the advice's name now, as it does an authorisation's.
    with payments_and_node_b(tmp_path) as (paying, node_b, on_b):
        acquiring_a, acquiring_b = paying.world.server.acquiring, node_b.acquiring
        assert acquiring_a is not None and acquiring_b is not None
        paid_a = paying.terminal.pay(1_000, pan=VISA_PAN)
        paid_b = on_b.pay(2_000, pan=MASTERCARD_PAN)
        assert (paid_a.response_code, paid_b.response_code) == ("00", "00"), (paid_a, paid_b)
        stan_counter(acquiring_b.gateway, stan_counter(acquiring_a.gateway))
        cancelled_a = cancel(paying.terminal, paid_a.transaction_id)
        cancelled_b = cancel(on_b, paid_b.transaction_id)
        assert (cancelled_a.response_code, cancelled_b.response_code) == ("00", "00"), (
            cancelled_a.message,
            cancelled_b.message,
        )
        advices = SafStore(paying.engine()).all_entries()
        names = [(advice.acquirer, advice.terminal_id, advice.reversal_stan) for advice in advices]
        assert len(names) == 2 and len(set(names)) == 2, f"two advices under one name: {names}"
        wait_until(lambda: not paying.saf_pending(), timeout_s=5)
        assert paying.host.record().approved_not_reversed() == paying.approved_keys() == frozenset()


def test_a_terminal_activated_anew_on_node_a_has_its_pin_read_under_its_new_key_on_node_b(
    two: tuple[PaymentWorld, PayTerminal],
) -> None:
    """Audit after session 23: node B kept the terminal's PIN key it had read once, for good, so after
    an activation on node A (a new key) every PIN from that terminal was a wrong PIN on node B."""
    paying, on_b = two
    chip = pb.ENTRY_MODE_CHIP
    assert on_b.pay(2_000, pan=VISA_PIN_PAN, mode=chip, pin="1234").response_code == "00"  # B read the key
    again = activate(paying.world.channel, "A77-pay")  # on node A: a new credential and a new PIN key
    assert again.terminal_id == on_b.terminal_id and again.pin_key != on_b.pin_key
    time.sleep(1.2)  # older than any copy may be
    anew_on_b = PayTerminal(
        on_b.stub, again.credential, again.terminal_id, again.pin_key, again.pin_format, on_b.sequence_number
    )
    answer = anew_on_b.pay(2_100, pan=VISA_PIN_PAN, mode=chip, pin="1234")
    assert (answer.response_code, answer.status) == ("00", "approved"), answer.message
