"""While the journal's commits wait (another writer holds SQLite's lock for longer than the reply
timeout): what a terminal asks about a transaction still on its way gets a clear answer, and the
other terminals are served meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, sqlite_write_lock_held, world_fixture


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


def test_the_status_of_a_transaction_still_on_its_way_is_unavailable_and_blocks_no_one(world: World) -> None:
    shop, other = world.terminals
    card, other_card = world.issue(1_000), world.issue(500)
    assert other.balance(other_card) == 500  # its card actor is live before the stall
    answers: list[object] = []

    def redeem() -> None:
        try:
            answers.append(shop.redeem(card, 100, "stalled-1").response_code)
        except grpc.RpcError as error:
            answers.append(error.code())

    sender = threading.Thread(target=redeem)
    status_codes: list[grpc.StatusCode] = []

    def ask_status() -> None:
        try:
            shop.stub.TransactionStatus(
                pb.TransactionStatusRequest(transaction_id="stalled-1"), metadata=shop.metadata, timeout=20
            )
        except grpc.RpcError as error:
            status_codes.append(error.code())

    asker = threading.Thread(target=ask_status)
    # Held until both have been answered (after the 1 s reply timeout), then let go: the redemption lands.
    with sqlite_write_lock_held(world):
        sender.start()
        time.sleep(0.3)  # the redemption is decided and waits for its commit
        asker.start()
        time.sleep(0.1)  # the status query now waits for the redemption's outcome
        started = time.monotonic()
        assert other.balance(other_card) == 500
        balance_s = time.monotonic() - started
        asker.join()
        sender.join()
    assert status_codes == [grpc.StatusCode.UNAVAILABLE]
    assert answers == [grpc.StatusCode.UNAVAILABLE]  # "outcome not known yet; ask TransactionStatus"
    assert balance_s < 0.5, f"another terminal's balance waited {balance_s:.2f} s behind the status query"
    landed = shop.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id="stalled-1"), metadata=shop.metadata, timeout=20
    )
    assert (landed.found, landed.status) == (True, "approved")  # decided before the stall, landed after
    assert shop.balance(card) == 900
