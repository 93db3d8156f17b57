"""No double spend: many terminals race for one card whose balance covers only some of them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from protocols.wire import terminal_pb2 as pb
from tests.integration.harness import World, new_txn

TERMINALS = 20
REDEMPTIONS = 200
COVERED = 50
AMOUNT_MINOR = 100


def test_200_concurrent_redemptions_from_20_terminals_approve_exactly_50(world: World) -> None:
    terminals = [world.activate(f"race-{index}") for index in range(TERMINALS)]
    card = world.issue(COVERED * AMOUNT_MINOR)

    def redeem(index: int) -> pb.TransactionResponse:
        return terminals[index % TERMINALS].redeem(card, AMOUNT_MINOR, new_txn())

    with ThreadPoolExecutor(max_workers=REDEMPTIONS) as pool:
        responses = list(pool.map(redeem, range(REDEMPTIONS)))
    codes = [r.response_code for r in responses]
    assert codes.count("00") == COVERED
    assert codes.count("51") == REDEMPTIONS - COVERED
    assert world.terminals[0].balance(card) == 0
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0), (
        check.problems
    )


def test_replays_racing_each_other_move_money_once(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    txn = new_txn()
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda _: terminal.redeem(card, 100, txn), range(16)))
    assert {r.response_code for r in responses} == {"00"}
    assert len({r.authorization_code for r in responses}) == 1
    assert terminal.balance(card) == 900
