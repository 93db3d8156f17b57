"""What the acquirer answers, taken at its word: a repeated answer, a partial approval, ISO's other
approval codes. Real switch, real TCP acquirer host, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from protocols.wire import terminal_pb2 as pb
from switch.store.payments import card_payments
from tests.integration.harness import new_txn
from tests.integration.payment_harness import VISA_PAN, PaymentWorld, payment_world, wait_until

SAF_SETTLE_S = 0.6  # a reversal, if one was queued, goes out within the SAF interval (100 ms)


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PaymentWorld]:
    with payment_world(tmp_path, request.param) as payment:
        yield payment


def test_an_approval_the_acquirer_sends_twice_is_not_reversed(world: PaymentWorld) -> None:
    world.host.call(lambda: world.host.host.answer_twice_next(1))
    txn = new_txn()
    response = world.terminal.pay(1_000, txn=txn)
    assert (response.response_code, response.status) == ("00", "approved")
    time.sleep(SAF_SETTLE_S)  # the second copy arrives, and a reversal would be sent meanwhile
    assert world.terminal.status(txn).status == "approved"
    assert world.host.record().reversals == (), "the payment answered approved was reversed"
    assert world.saf_pending() == ()
    world.audit()


def test_a_partial_approval_declines_the_payment_and_reverses_what_the_acquirer_holds(
    world: PaymentWorld,
) -> None:
    world.host.call(lambda: world.host.host.approve_next_as("10", approved_minor=600))
    txn = new_txn()
    response = world.terminal.pay(1_000, txn=txn)
    assert response.status == "declined" and response.response_code == "05", response
    assert response.approved.amount_minor == 0
    wait_until(lambda: len(world.host.record().reversals) == 1)
    (reversal,) = world.host.record().reversals
    assert reversal.amount_minor == 600 and reversal.matched_original
    wait_until(lambda: world.saf_pending() == ())
    world.audit()


@pytest.mark.parametrize("field39", ["08", "11", "16"])
def test_the_other_iso_approval_codes_approve(world: PaymentWorld, field39: str) -> None:
    world.host.call(lambda: world.host.host.approve_next_as(field39))
    txn = new_txn()
    response = world.terminal.pay(1_000, txn=txn)
    assert (response.response_code, response.status) == ("00", "approved")
    assert response.approved.amount_minor == 1_000
    time.sleep(SAF_SETTLE_S)
    assert world.host.record().reversals == ()
    world.audit()


def test_a_track2_with_a_lowercase_separator_is_paid_and_leaves_no_pending_row(world: PaymentWorld) -> None:
    txn = new_txn()
    request = world.terminal.request(
        1_500, mode=pb.ENTRY_MODE_MAGSTRIPE, track2=f"{VISA_PAN}d30122010000012345", txn=txn
    )
    response = world.terminal.send(request)
    assert (response.response_code, response.status) == ("00", "approved")
    with world.engine().connect() as conn:
        stages = list(
            conn.execute(select(card_payments.c.stage).where(card_payments.c.transaction_id == txn)).scalars()
        )
    assert stages and "pending" not in stages, stages
    world.audit()
