"""Refunds and cancels are served from the event loop, not from the blocking pool: a pool busy with
slow calls (activations' password hashes, the acquirer, exports) does not hold up a shop's refund."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import EMPLOYEE, World, new_txn, world_fixture

POOL_THREADS = 2
ANSWER_WITHIN_S = 5.0


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, grpc_workers=POOL_THREADS)


def test_a_refund_and_a_cancel_are_answered_while_every_pool_thread_is_busy(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(10_000)
    first = terminal.redeem(card, 3_000)
    second = terminal.redeem(card, 2_000)
    assert first.response_code == second.response_code == "00"

    release = threading.Event()
    occupied = [world.server._blocking.submit(release.wait) for _ in range(POOL_THREADS)]
    try:
        refund = terminal.stub.Refund(
            pb.RefundRequest(
                transaction_id=new_txn(),
                original_transaction_id=first.transaction_id,
                amount=pb.Amount(amount_minor=1_000, currency="EUR"),
                employee=EMPLOYEE,
            ),
            metadata=terminal.metadata,
            timeout=ANSWER_WITHIN_S,
        )
        cancel = terminal.stub.Cancel(
            pb.CancelRequest(
                transaction_id=new_txn(), original_transaction_id=second.transaction_id, employee=EMPLOYEE
            ),
            metadata=terminal.metadata,
            timeout=ANSWER_WITHIN_S,
        )
        assert not any(future.done() for future in occupied), "the pool was not busy throughout"
    finally:
        release.set()
    assert (refund.response_code, cancel.response_code) == ("00", "00")
    assert terminal.balance(card) == 10_000 - 3_000 - 2_000 + 1_000 + 2_000
