"""A ledger audit of payouts, commission and the benefit card's split, on SQLite and PostgreSQL: every
payout plus its commission is exactly what was redeemed less what was refunded since the last one,
commission is taken on the payout (rounded half up), a refund of a paid redemption is netted by a
later payout that never goes negative, a cycle's end leaves every redemption in exactly one payout,
a load's holder and city parts sum to it, and every kind of journal entry balances."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from protocols import backoffice_service
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from switch.admin import AdminError
from switch.domain import ledger
from switch.domain.programmes import ProgrammeKind, payout_cycle_start
from switch.store.schema import journal_entries, postings
from tests.integration.harness import World, clock_at, new_txn, second_node, world_fixture
from tests.integration.test_settlement import (
    CYCLE_DAYS,
    balance,
    cycle_day,
    payouts,
    settle,
    settle_due,
    switch_clock_on,
)


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@pytest.fixture(params=["sqlite", "postgres"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    shared = "auto" if request.param == "postgres" else "yes"
    yield from world_fixture(request, tmp_path, terminals=1, several_nodes=shared, shared_copy_max_age_s=0.0)


def half_up(amount_minor: int, basis_points: int) -> int:
    """The commission rule written out by hand: amount * basis_points / 10,000, halves up."""
    whole, rest = divmod(amount_minor * basis_points, 10_000)
    return whole + (1 if rest * 2 >= 10_000 else 0)


def entry_sums_by_kind(world: World) -> dict[str, tuple[int, int]]:
    """Per kind of journal entry: (entries, entries whose postings do not sum to zero)."""
    sums = (
        select(postings.c.entry_id, func.sum(postings.c.amount_minor).label("total"))
        .group_by(postings.c.entry_id)
        .subquery()
    )
    query = (
        select(
            journal_entries.c.kind,
            func.count(),
            func.sum(func.abs(sums.c.total)),
        )
        .join(sums, sums.c.entry_id == journal_entries.c.entry_id)
        .group_by(journal_entries.c.kind)
    )
    with world.server.core.store.engine.connect() as conn:
        return {kind: (int(n), int(off)) for kind, n, off in conn.execute(query).all()}


def assert_ledger_balanced(world: World) -> None:
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (
        0,
        0,
        0,
    ), check.problems


@contextmanager
def backoffice_clock_at(at: dt.datetime) -> Iterator[None]:
    """The backoffice's wall clock at the instant `at` (SettleDue's "today" and cycle)."""
    backoffice_service.dt = clock_at(at)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        backoffice_service.dt = dt  # type: ignore[attr-defined]


def settle_due_now(world: World) -> bo.ProgrammeSettlement:
    """SettleDue with no as_of_date (the cron's call), the gift programme's part of the answer."""
    response = world.backoffice.SettleDue(bo.SettleDueRequest(), metadata=world.admin_metadata, timeout=20)
    return {s.programme_id: s for s in response.settlements}[world.gift_programme]


@pytest.mark.parametrize(
    ("redeemed_minor", "refunded_minor", "basis_points"),
    [
        ((1,), (), 250),  # a cent: 0.025 of a cent of commission, none
        ((20,) * 20, (), 250),  # 0.5 a redemption: 20 rounded on each, 10 on the sum
        ((1, 3, 7, 199), (), 333),  # odd cents at an odd rate
        ((199, 1_001), (3,), 250),  # less a refund: commission on what is left
        ((200,), (), 5_000),  # 50 %: the half exactly
        ((1,), (), 5_000),  # half a cent: rounded up, the whole cent is commission
        ((3,), (), 10_000),  # all of it is commission, nothing paid out
    ],
)
def test_a_payout_and_its_commission_are_exactly_what_was_redeemed_less_refunds(
    world: World, redeemed_minor: tuple[int, ...], refunded_minor: tuple[int, ...], basis_points: int
) -> None:
    admin, terminal = world.server.core.admin, world.terminals[0]
    programme = admin.create_programme("Odd", ProgrammeKind.gift, "EUR", "600104", balance_max_minor=100_000)
    admin.join_programme(world.merchant_id, programme, basis_points)
    card = world.issue(50_000, programme)
    originals = []
    for amount_minor in redeemed_minor:
        originals.append(new_txn())
        assert terminal.redeem(card, amount_minor, originals[-1]).response_code == "00"
    for original, amount_minor in zip(originals, refunded_minor, strict=False):
        assert terminal.refund(original, amount_minor).response_code == "00"
    gross_minor = sum(redeemed_minor) - sum(refunded_minor)
    paid = payouts(settle(world, programme, "audit-1"))
    commission = half_up(gross_minor, basis_points)
    assert paid == {world.merchant_id: (gross_minor, commission, gross_minor - commission)}
    assert balance(world, ledger.merchant_payable_account(world.merchant_id, programme)) == 0
    assert balance(world, ledger.commission_account(programme)) == commission
    assert balance(world, ledger.payout_clearing_account(programme)) == gross_minor - commission
    assert_ledger_balanced(world)


def test_commission_in_a_currency_of_no_decimals_is_whole_units(world: World) -> None:
    admin, terminal = world.server.core.admin, world.terminals[0]
    programme = admin.create_programme("Yen", ProgrammeKind.gift, "JPY", "600105", balance_max_minor=100_000)
    admin.join_programme(world.merchant_id, programme, 250)
    card = admin.issue_card(programme, 10_000).card_number
    for amount in (1, 19, 20):
        assert terminal.redeem(card, amount, currency="JPY").response_code == "00"
    # 40 yen at 2.5 %: 1 yen (1.0 exactly); each redemption alone would round to 0, 0 and 1 (0.5)
    assert payouts(settle(world, programme, "yen-1")) == {world.merchant_id: (40, 1, 39)}
    # A currency of three decimals is not one the switch takes: refused by name, nothing made
    with pytest.raises(AdminError, match="currency 'KWD' is not an ISO 4217 code the switch accepts"):
        admin.create_programme("Dinar", ProgrammeKind.gift, "KWD", "600106")
    assert_ledger_balanced(world)


def test_a_refund_of_a_redemption_paid_in_an_earlier_cycle_is_netted_and_no_payout_goes_negative(
    world: World,
) -> None:
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(20_000)
    sale = new_txn()
    assert terminal.redeem(card, 1_000, sale).response_code == "00"
    first = settle_due(world, cycle_day(world, days_in=1))[world.gift_programme]
    assert payouts(first.result) == {shop: (1_000, 25, 975)}
    # The next cycle: 6.00 of the paid sale comes back, 2.00 is redeemed; the shop owes 4.00.
    assert terminal.refund(sale, 600).response_code == "00"
    assert terminal.redeem(card, 200).response_code == "00"
    owing = settle_due(world, cycle_day(world, cycles_on=1, days_in=1))[world.gift_programme]
    assert payouts(owing.result) == {}
    assert [(s.merchant_id, s.gross.amount_minor) for s in owing.result.skipped] == [(shop, -400)]
    assert "owes 4.00" in owing.result.skipped[0].reason
    payable = ledger.merchant_payable_account(shop, world.gift_programme)
    assert balance(world, payable) == -400
    assert terminal.redeem(card, 1_000).response_code == "00"
    netted = settle_due(world, cycle_day(world, cycles_on=2, days_in=1))[world.gift_programme]
    assert payouts(netted.result) == {shop: (600, 15, 585)}
    # Over the three cycles: 16.00 sold less refunds, 2.5 % of it taken, the rest paid out.
    assert balance(world, payable) == 0
    assert balance(world, ledger.commission_account(world.gift_programme)) == 40
    assert balance(world, ledger.payout_clearing_account(world.gift_programme)) == 1_560
    assert_ledger_balanced(world)


def test_a_redemption_at_a_cycles_end_is_paid_out_in_exactly_one_cycle(world: World) -> None:
    shop, terminal = world.merchant_id, world.terminals[0]
    zone = world.server.core.report_zone
    today = dt.datetime.now(zone).date()
    next_start = payout_cycle_start(today, CYCLE_DAYS // 7) + dt.timedelta(days=CYCLE_DAYS)
    cycle_end = dt.datetime.combine(next_start, dt.time(0), zone)  # midnight on the report clock
    last_instant = cycle_end - dt.timedelta(microseconds=1)
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    with backoffice_clock_at(last_instant):
        ending = settle_due_now(world)
    ending_id = f"payout-{payout_cycle_start(today, CYCLE_DAYS // 7).isoformat()}"
    assert (ending.settlement_id, payouts(ending.result)) == (ending_id, {shop: (1_000, 25, 975)})
    assert terminal.redeem(card, 300).response_code == "00"  # after the ending cycle's run
    with backoffice_clock_at(last_instant):
        assert payouts(settle_due_now(world).result) == {}
    with backoffice_clock_at(cycle_end):
        starting = settle_due_now(world)
        again = settle_due_now(world)
    assert starting.settlement_id == f"payout-{next_start.isoformat()}"
    assert payouts(starting.result) == {shop: (300, 8, 292)} and payouts(again.result) == {}
    with backoffice_clock_at(cycle_end), pytest.raises(grpc.RpcError) as refused:
        world.backoffice.SettleDue(  # the ending cycle asked for again: a later one ran, none pays
            bo.SettleDueRequest(as_of_date=last_instant.date().isoformat()),
            metadata=world.admin_metadata,
            timeout=20,
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"payout cycle payout-{next_start.isoformat()} ran since" in str(refused.value.details())
    assert balance(world, ledger.payout_clearing_account(world.gift_programme)) == 975 + 292
    assert balance(world, ledger.merchant_payable_account(shop, world.gift_programme)) == 0
    assert_ledger_balanced(world)


@pytest.mark.parametrize("amount_minor", [500, 1_000, 1_500, 2_500, 4_500, 9_500, 50_000])
def test_every_load_splits_into_a_holder_and_a_city_part_that_sum_to_it(
    world: World, amount_minor: int
) -> None:
    terminal = world.terminals[0]
    card = world.issue(0, world.benefit_programme)
    funder = ledger.funder_account(world.benefit_programme)
    programme_float = ledger.programme_float_account(world.benefit_programme)
    answer = terminal.load(card, amount_minor)
    assert answer.response_code == "00", answer.message
    holder_minor, city_minor = answer.cardholder_part.amount_minor, answer.funder_part.amount_minor
    assert (holder_minor, city_minor) == (amount_minor * 180 // 500, amount_minor - amount_minor * 180 // 500)
    assert (balance(world, programme_float), balance(world, funder)) == (-holder_minor, -city_minor)
    assert terminal.balance(card) == amount_minor
    assert_ledger_balanced(world)


@pytest.mark.parametrize("amount_minor", [1, 180, 499, 501, 1_001, 4_999])
def test_a_load_not_in_whole_steps_is_refused_naming_the_step_and_moves_nothing(
    world: World, amount_minor: int
) -> None:
    terminal = world.terminals[0]
    card = world.issue(500, world.benefit_programme)
    answer = terminal.load(card, amount_minor)
    assert (answer.response_code, answer.message.endswith("loads are in steps of 5.00 EUR")) == ("13", True)
    assert terminal.balance(card) == 500
    assert balance(world, ledger.funder_account(world.benefit_programme)) == -320
    assert_ledger_balanced(world)


def test_every_kind_of_journal_entry_balances(world: World) -> None:
    shop, terminal = world.merchant_id, world.terminals[0]
    benefit = world.issue(1_000, world.benefit_programme)  # issue with a load
    assert terminal.load(benefit, 500).response_code == "00"
    gift = world.issue(5_000)
    sale, other, loaded = new_txn(), new_txn(), new_txn()
    assert terminal.redeem(gift, 1_001, sale).response_code == "00"
    assert terminal.refund(sale, 333).response_code == "00"
    assert terminal.redeem(gift, 7, other).response_code == "00"
    assert terminal.cancel(other).response_code == "00"
    assert terminal.load(gift, 99, loaded).response_code == "00"
    assert terminal.reversal(loaded).response_code == "00"
    replacement = world.issue(0)
    world.backoffice.ReplaceCard(
        bo.ReplaceCardRequest(
            lost_card=pb.CardRef(card_number=gift),
            replacement_card=pb.CardRef(card_number=replacement),
            request_id=new_txn(),
        ),
        metadata=world.admin_metadata,
        timeout=30,
    )
    assert payouts(settle(world, world.gift_programme, "kinds-1")) == {shop: (668, 17, 651)}
    kinds = entry_sums_by_kind(world)
    expected = {"load", "redemption", "refund", "cancel", "reversal", "card_transfer", "settlement"}
    assert expected <= kinds.keys(), kinds
    assert {kind: off for kind, (_, off) in kinds.items() if off} == {}
    assert_ledger_balanced(world)


def test_a_cycles_run_on_two_nodes_at_once_pays_each_merchant_once(two_nodes: World, tmp_path: Path) -> None:
    world, shop, terminal = two_nodes, two_nodes.merchant_id, two_nodes.terminals[0]
    card = world.issue(50_000)
    paid_minor = 0
    with second_node(world, tmp_path / "node-b") as node_b:
        for cycle in range(4):
            assert terminal.redeem(card, 1_000 + cycle).response_code == "00"
            request = bo.SettleDueRequest(as_of_date=cycle_day(world, cycles_on=cycle, days_in=2))
            answers: list[bo.SettleDueResponse] = []

            def run(
                stub: bo_grpc.BackofficeStub,
                request: bo.SettleDueRequest = request,
                answers: list[bo.SettleDueResponse] = answers,
            ) -> None:
                answers.append(stub.SettleDue(request, metadata=world.admin_metadata, timeout=30))

            with switch_clock_on(world, request.as_of_date):
                runs = [
                    threading.Thread(target=run, args=(s,)) for s in (world.backoffice, node_b.backoffice)
                ]
                for thread in runs:
                    thread.start()
                for thread in runs:
                    thread.join()
            made = [
                (p.merchant_id, p.gross.amount_minor)
                for answer in answers
                for s in answer.settlements
                if s.programme_id == world.gift_programme
                for p in s.result.payouts
            ]
            reasons = {
                skip.reason
                for answer in answers
                for s in answer.settlements
                if s.programme_id == world.gift_programme
                for skip in s.result.skipped
            }
            assert (len(answers), made) == (2, [(shop, 1_000 + cycle)]), cycle
            assert reasons <= {"already paid out under this settlement id"}, reasons  # the run second
            paid_minor += 1_000 + cycle
    assert balance(world, ledger.merchant_payable_account(shop, world.gift_programme)) == 0
    assert balance(world, ledger.commission_account(world.gift_programme)) == sum(
        half_up(1_000 + cycle, 250) for cycle in range(4)
    )
    assert (
        balance(world, ledger.payout_clearing_account(world.gift_programme))
        + balance(world, ledger.commission_account(world.gift_programme))
        == paid_minor
    )
    assert_ledger_balanced(world)
