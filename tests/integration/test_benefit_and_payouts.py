"""Benefit-card top-ups and co-payment, gift-card refunds undone, and payouts: what an audit found
(session 21), each test failing on the code before its fix. Real gRPC server on loopback, on SQLite
and on PostgreSQL (the integration `world`)."""

from __future__ import annotations

import threading

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.domain import ledger
from tests.integration.harness import TerminalClient, World
from tests.integration.test_reports import by_programme, summary
from tests.integration.test_settlement import balance, settle


def assert_ledger_balanced(world: World) -> None:
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (
        0,
        0,
        0,
    ), check.problems


def outsider_terminal(world: World) -> TerminalClient:
    """A terminal of a shop that is not in the taxi programme (not a taxi company of the city)."""
    admin = world.server.core.admin
    outsider = admin.create_merchant("Outsider", "outsider@example.test", "outsider-password")
    admin.add_location(outsider, "Kiosk")
    stub = pb_grpc.TerminalStub(world.channel)
    activated = stub.Activate(
        pb.ActivateRequest(
            merchant_email="outsider@example.test",
            password="outsider-password",
            device_name="A77-x",
            location="Kiosk",
        ),
        timeout=20,
    )
    return TerminalClient(stub, activated.credential, activated.terminal_id)


def test_a_benefit_card_is_loaded_in_whole_steps_of_5_00_so_splitting_cannot_lower_the_co_payment(
    world: World,
) -> None:
    """ "Voor elke 5 euro op jouw kaart, moet je zelf maar 1,80 euro betalen" (seed 002): the holder
    pays 1.80 per 5.00. Session 21 rounded the holder's part of a load up, so cent loads no longer
    cost the holder nothing, but a load of 7.50 still cost a rounded share of a step. A load is a
    whole number of 5.00 steps now, on a terminal and at issue; a gift card has no step."""
    terminal = world.terminals[0]
    card = world.issue(0, world.benefit_programme)
    for amount_minor in (1, 750, 1_250):
        answer = terminal.load(card, amount_minor)
        assert answer.response_code == "13"
        assert answer.message.endswith("loads are in steps of 5.00 EUR"), answer.message
    whole = terminal.load(card, 1_500)
    assert whole.response_code == "00"
    assert (whole.cardholder_part.amount_minor, whole.funder_part.amount_minor) == (540, 960)
    assert terminal.balance(card) == 1_500
    assert balance(world, ledger.funder_account(world.benefit_programme)) == -960
    gift = world.issue(0)
    assert terminal.load(gift, 750).response_code == "00"
    with pytest.raises(grpc.RpcError) as refused:
        world.issue(1_250, world.benefit_programme)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "steps of 5.00 EUR" in str(refused.value.details())
    assert_ledger_balanced(world)


def test_a_shop_outside_the_benefit_programme_cannot_top_up_its_cards_at_the_citys_cost(
    world: World,
) -> None:
    """A redemption by a merchant outside the card's programme is declined 58, and so is a load now:
    before, any merchant with a terminal could load a taxi card, the city paying 3.20 of each 5.00."""
    kiosk = outsider_terminal(world)
    taxi = world.issue(0, world.benefit_programme)
    assert kiosk.redeem(taxi, 1).response_code in ("51", "58")  # it does not take the card
    answer = kiosk.load(taxi, 500)
    assert_ledger_balanced(world)
    assert answer.response_code == "58", (answer.response_code, answer.message)
    assert kiosk.balance(taxi) == 0
    assert balance(world, ledger.funder_account(world.benefit_programme)) == 0


def test_reversing_a_refund_gives_the_redemption_back_its_refundable_amount(world: World) -> None:
    """Redeem 10.00, refund 4.00, reverse that refund: the card and the merchant's payable are
    back where they were after the redemption (10.00 redeemed), and so is the redemption's refunded
    amount: it kept 4.00, so a refund of the full 10.00 was declined and the merchant summary
    reported 6.00 redeemed while 10.00 was owed."""
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 1_000, "sale").response_code == "00"
    assert terminal.refund("sale", 400, txn="refund").response_code == "00"
    assert terminal.reversal("refund").response_code == "00"
    assert terminal.balance(card) == 4_000
    payable = ledger.merchant_payable_account(world.merchant_id, world.gift_programme)
    assert balance(world, payable) == 1_000
    assert_ledger_balanced(world)
    redeemed, owed = by_programme(summary(world))[world.gift_programme][2:]
    assert (redeemed, owed) == (1_000, 1_000)
    again = terminal.refund("sale", 1_000)
    assert again.response_code == "00", (again.response_code, again.message)
    assert_ledger_balanced(world)


def test_two_settlements_at_once_pay_the_merchant_once(world: World) -> None:
    """Settle (or SettleDue on two nodes either side of a cycle start, or a manual Settle next to
    the daily settle-due) under two settlement ids at the same moment: each reads the payable's
    balance, then debits it. The debit was unconditional, so both paid the same redemptions (about
    every other time); it is now made only while the payable holds it. 20 rounds are tried."""
    terminal, merchant = world.terminals[0], world.merchant_id
    card = world.issue(100_000)
    payable = ledger.merchant_payable_account(merchant, world.gift_programme)
    for round_number in range(20):
        assert terminal.redeem(card, 100).response_code == "00"
        answers: list[bo.SettleResponse] = []

        def run(settlement_id: str, answers: list[bo.SettleResponse] = answers) -> None:
            answers.append(settle(world, world.gift_programme, settlement_id))

        threads = [threading.Thread(target=run, args=(f"{k}-{round_number}",)) for k in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        paid = sum(p.gross.amount_minor for answer in answers for p in answer.payouts)
        assert_ledger_balanced(world)
        assert (paid, balance(world, payable)) == (100, 0), f"round {round_number}: paid {paid} of 100"
