"""Merchant payouts through the backoffice, on SQLite and PostgreSQL: per programme, at most once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import delete, select

from protocols import backoffice_service
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain import ledger
from switch.domain.programmes import payout_cycle_start
from switch.server import SwitchServer
from switch.store.engine import make_engine
from switch.store.repository import Store
from switch.store.schema import accounts
from tests.integration.harness import (
    World,
    clock_at,
    journal_write_held_past_a_wait,
    start_world,
    statements_run,
    world_fixture,
)


def settle(world: World, programme_id: str, settlement_id: str) -> bo.SettleResponse:
    request = bo.SettleRequest(programme_id=programme_id, settlement_id=settlement_id)
    response: bo.SettleResponse = world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20)
    return response


def payouts(response: bo.SettleResponse) -> dict[str, tuple[int, int, int]]:
    return {
        p.merchant_id: (p.gross.amount_minor, p.commission.amount_minor, p.net.amount_minor)
        for p in response.payouts
    }


def balance(world: World, account_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        found = conn.execute(select(accounts.c.balance_minor).where(accounts.c.account_id == account_id))
        return int(found.scalar_one())


def test_each_programme_pays_out_its_own_redemptions_less_its_commission(world: World) -> None:
    terminal, merchant = world.terminals[0], world.merchant_id
    gift = world.issue(10_000)
    taxi = world.issue(10_000, world.benefit_programme)
    assert terminal.redeem(gift, 1_001).response_code == "00"
    assert terminal.redeem(taxi, 700).response_code == "00"
    gift_paid = settle(world, world.gift_programme, "s1")
    # 2.5 % of 10.01 is 0.25025: rounded half up to 0.25; the taxi redemption is not in it.
    assert payouts(gift_paid) == {merchant: (1_001, 25, 976)} and not gift_paid.skipped
    assert balance(world, ledger.commission_account(world.gift_programme)) == 25
    assert balance(world, ledger.payout_clearing_account(world.gift_programme)) == 976
    assert balance(world, ledger.merchant_payable_account(merchant, world.benefit_programme)) == 700
    taxi_paid = settle(world, world.benefit_programme, "s1")  # the same id in another programme
    assert payouts(taxi_paid) == {merchant: (700, 0, 700)}
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


def test_a_replayed_settlement_pays_nothing_and_says_why(world: World) -> None:
    terminal, merchant = world.terminals[0], world.merchant_id
    card = world.issue(10_000)
    terminal.redeem(card, 400)
    assert payouts(settle(world, world.gift_programme, "week-1")) == {merchant: (400, 10, 390)}
    terminal.redeem(card, 200)
    replay = settle(world, world.gift_programme, "week-1")
    assert not replay.payouts
    assert [(s.merchant_id, s.gross.amount_minor, s.reason) for s in replay.skipped] == [
        (merchant, 200, "already paid out under this settlement id")
    ]
    assert payouts(settle(world, world.gift_programme, "week-2")) == {merchant: (200, 5, 195)}
    assert not settle(world, world.gift_programme, "week-3").payouts  # nothing owed any more
    assert balance(world, ledger.merchant_payable_account(merchant, world.gift_programme)) == 0


def test_a_payout_the_journal_cannot_take_is_reported_not_dropped(world: World) -> None:
    terminal, merchant = world.terminals[0], world.merchant_id
    terminal.redeem(world.issue(10_000), 300)
    world.server.core.writer.stop()  # as while the switch drains: the journal takes no more writes
    response = settle(world, world.gift_programme, "s1")
    assert not response.payouts
    assert [(s.merchant_id, s.gross.amount_minor, s.reason) for s in response.skipped] == [
        (merchant, 300, "journal stopped")
    ]
    assert balance(world, ledger.merchant_payable_account(merchant, world.gift_programme)) == 300


@pytest.mark.parametrize(
    ("programme", "settlement_id", "message"),
    [
        ("gift", "", "settlement_id is missing"),
        ("", "s1", "programme_id is missing"),
        ("prg_unknown", "s1", "unknown programme prg_unknown"),
    ],
)
def test_bad_settle_requests_are_refused_and_pay_nothing(
    world: World, programme: str, settlement_id: str, message: str
) -> None:
    world.terminals[0].redeem(world.issue(10_000), 300)
    programme_id = world.gift_programme if programme == "gift" else programme
    with pytest.raises(grpc.RpcError) as refused:
        settle(world, programme_id, settlement_id)
    assert message in (refused.value.details() or "")
    assert balance(world, ledger.merchant_payable_account(world.merchant_id, world.gift_programme)) == 300


def test_a_data_directory_with_the_old_shared_payable_is_refused_at_start(tmp_path: Path) -> None:
    world = start_world(tmp_path, "", terminals=0)
    settings = world.server.settings
    payable = ledger.merchant_payable_account(world.merchant_id, world.gift_programme)
    world.channel.close()
    world.server.stop()
    engine = make_engine(settings.effective_database_url)
    with engine.begin() as conn:
        conn.execute(delete(accounts).where(accounts.c.account_id == payable))
    engine.dispose()
    with pytest.raises(SystemExit) as refused:
        SwitchServer(settings)
    assert "1 merchant memberships have no payable account" in str(refused.value)


CYCLE_DAYS = 28  # the gift programme pays every 4 weeks


def cycle_day(world: World, cycles_on: int = 0, days_in: int = 0) -> str:
    """A day of today's payout cycle of the gift programme (days_in after its start), or of a later
    one: a cycle already over is not paid, so the runs are dated from today's."""
    today = dt.datetime.now(world.server.core.report_zone).date()
    start = payout_cycle_start(today, CYCLE_DAYS // 7)
    return (start + dt.timedelta(days=CYCLE_DAYS * cycles_on + days_in)).isoformat()


def settle_due(world: World, as_of_date: str, run_on: str = "") -> dict[str, bo.ProgrammeSettlement]:
    """SettleDue as of as_of_date as the daily cron runs it on the day run_on (the backoffice's clock
    moved there); by default on as_of_date when that is after today (a future day is refused)."""
    today = dt.datetime.now(world.server.core.report_zone).date().isoformat()
    with switch_clock_on(world, run_on or max(as_of_date, today)):
        response = world.backoffice.SettleDue(
            bo.SettleDueRequest(as_of_date=as_of_date), metadata=world.admin_metadata, timeout=20
        )
    return {s.programme_id: s for s in response.settlements}


_clock_lock = threading.Lock()
_clock_holders: list[dt.date] = []  # the day of each call that holds the backoffice's clock moved


@contextmanager
def switch_clock_on(world: World, day_text: str) -> Iterator[None]:
    """The backoffice's wall clock at noon of day_text on the report clock, unless that is today or
    not a date (the `datetime` module of protocols.backoffice_service, as freezegun would set it);
    calls at once (runs side by side) share it, and must name the same day."""
    zone = world.server.core.report_zone
    try:
        day = dt.date.fromisoformat(day_text)
    except ValueError:  # not a date: refused by the switch as it is
        day = dt.datetime.now(zone).date()
    if day == dt.datetime.now(zone).date():
        yield
        return
    with _clock_lock:
        assert not _clock_holders or _clock_holders[0] == day, (_clock_holders, day)
        if not _clock_holders:
            backoffice_service.dt = clock_at(dt.datetime.combine(day, dt.time(12), zone))  # type: ignore[attr-defined]
        _clock_holders.append(day)
    try:
        yield
    finally:
        with _clock_lock:
            _clock_holders.pop()
            if not _clock_holders:
                backoffice_service.dt = dt  # type: ignore[attr-defined]


def test_settle_due_pays_each_programme_once_per_payout_cycle(world: World) -> None:
    terminal, merchant = world.terminals[0], world.merchant_id
    card = world.issue(10_000)
    terminal.redeem(card, 1_000)
    # The gift programme pays every 4 weeks; cycles start on Mondays counted from 2024-01-01.
    first = settle_due(world, cycle_day(world, days_in=18))[world.gift_programme]
    assert first.settlement_id == f"payout-{cycle_day(world)}"
    assert payouts(first.result) == {merchant: (1_000, 25, 975)}
    terminal.redeem(card, 400)
    again = settle_due(world, cycle_day(world, days_in=25))[
        world.gift_programme
    ]  # the same cycle: nothing twice
    assert again.settlement_id == first.settlement_id and not again.result.payouts
    assert [(s.merchant_id, s.gross.amount_minor, s.reason) for s in again.result.skipped] == [
        (merchant, 400, "already paid out under this settlement id")
    ]
    following = settle_due(world, cycle_day(world, cycles_on=1))[
        world.gift_programme
    ]  # the next cycle begins
    assert following.settlement_id == f"payout-{cycle_day(world, cycles_on=1)}"
    assert payouts(following.result) == {merchant: (400, 10, 390)}
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


def test_a_future_as_of_date_is_refused_by_name_and_pays_nothing(world: World) -> None:
    """Session 24: SettleDue as of a day not come yet paid today's balances under that day's payout
    cycle's id, so the merchant had no payout in today's cycle and one in a cycle not begun."""
    terminal, merchant = world.terminals[0], world.merchant_id
    assert terminal.redeem(world.issue(10_000), 1_000).response_code == "00"
    today = dt.datetime.now(world.server.core.report_zone).date()
    for day in (
        today + dt.timedelta(days=1),
        dt.date.fromisoformat(cycle_day(world, cycles_on=1, days_in=3)),
    ):
        request = bo.SettleDueRequest(as_of_date=day.isoformat())
        with pytest.raises(grpc.RpcError) as refused:
            world.backoffice.SettleDue(request, metadata=world.admin_metadata, timeout=20)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        expected = f"as_of_date {day.isoformat()} is after today ({today.isoformat()} "
        assert expected in (refused.value.details() or ""), refused.value.details()
    payable = ledger.merchant_payable_account(merchant, world.gift_programme)
    assert balance(world, payable) == 1_000, "a refused run paid"
    today_run = settle_due(world, today.isoformat())[world.gift_programme]
    assert today_run.settlement_id == f"payout-{cycle_day(world)}"
    assert payouts(today_run.result) == {merchant: (1_000, 25, 975)}


def test_settle_due_names_a_bad_date(world: World) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        settle_due(world, "30-11-2026")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "as_of_date '30-11-2026' is not a date" in (refused.value.details() or "")


def test_joining_a_programme_again_is_already_exists_and_the_commission_stays(world: World) -> None:
    again = bo.JoinProgrammeRequest(
        merchant_id=world.merchant_id, programme_id=world.gift_programme, commission_basis_points=900
    )
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.JoinProgramme(again, metadata=world.admin_metadata, timeout=20)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (
        refused.value.details()
        == f"merchant {world.merchant_id} is in programme {world.gift_programme} already"
    )
    assert world.terminals[0].redeem(world.issue(10_000), 1_000).response_code == "00"
    assert payouts(settle(world, world.gift_programme, "s1")) == {world.merchant_id: (1_000, 25, 975)}


# --- session 22 audit: what a settlement's answer tells the foundation, which pays what it lists ---


@pytest.fixture(params=["sqlite"])
def slow_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, reply_timeout_s=1.0, ask_timeout_s=1.0)


def test_a_payout_slower_than_the_reply_timeout_is_listed_as_made(slow_journal: World) -> None:
    # Before, it was answered skipped ("journal did not answer in time") and then landed: no
    # answer ever listed it, so the foundation never transferred what the ledger shows as paid.
    world = slow_journal
    terminal, merchant = world.terminals[0], world.merchant_id
    assert terminal.redeem(world.issue(10_000), 1_000).response_code == "00"
    payable = ledger.merchant_payable_account(merchant, world.gift_programme)
    # The payout's journal write waits until its wait for the journal has outlasted the reply timeout.
    with journal_write_held_past_a_wait(world, world.server.settings.reply_timeout_s, "write_and_wait"):
        started = time.monotonic()
        answer = settle(world, world.gift_programme, "s1")
    assert time.monotonic() - started > 1.0  # it did wait past the reply timeout
    assert payouts(answer) == {merchant: (1_000, 25, 975)} and not answer.skipped
    assert balance(world, payable) == 0
    again = settle(world, world.gift_programme, "s1")
    assert not again.payouts and not again.skipped


def test_a_merchant_whose_refunds_exceed_what_it_was_owed_is_listed_with_the_reason(world: World) -> None:
    terminal, merchant = world.terminals[0], world.merchant_id
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000, "sale").response_code == "00"
    assert payouts(settle(world, world.gift_programme, "week-1")) == {merchant: (1_000, 25, 975)}
    assert terminal.refund("sale", 1_000).response_code == "00"
    payable = ledger.merchant_payable_account(merchant, world.gift_programme)
    assert balance(world, payable) == -1_000
    answer = settle(world, world.gift_programme, "week-2")
    assert not answer.payouts
    (skipped,) = answer.skipped
    assert (skipped.merchant_id, skipped.gross.amount_minor) == (merchant, -1_000)
    assert skipped.reason.startswith(
        "owes 10.00 (cleared by a bank transfer of 9.75, the 2.5 % commission on it given back): "
        "refunds exceed redemptions since the last payout; later redemptions pay it back"
    )
    assert skipped.reason.endswith("record the transfer with record-repayment --amount 9.75")
    assert balance(world, payable) == -1_000  # nothing written


def test_a_payout_interval_below_one_week_is_refused_by_name(world: World) -> None:
    # Before, -2 was taken, and every SettleDue then failed on an assertion: no programme was paid.
    bad = bo.CreateProgrammeRequest(
        name="Odd",
        kind=bo.PROGRAMME_KIND_GIFT,
        currency="EUR",
        card_prefix="600199",
        payout_interval_weeks=-2,
    )
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.CreateProgramme(bad, metadata=world.admin_metadata, timeout=20)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "payout_interval_weeks must be 1 or more"


def test_a_redemption_of_a_closed_day_is_not_reversed_as_it_is_not_cancelled(world: World) -> None:
    # A Reversal needs no employee PIN: before, one weeks later took a closed, paid-out redemption
    # back from the merchant. Like a cancel, it is refused once the period is closed: refund instead.
    terminal, merchant = world.terminals[0], world.merchant_id
    card = world.issue(5_000)
    assert terminal.redeem(card, 1_000, "sale").response_code == "00"
    terminal.stub.DayClose(pb.DayCloseRequest(close_id="day-1"), metadata=terminal.metadata, timeout=20)
    assert payouts(settle(world, world.gift_programme, "week-1")) == {merchant: (1_000, 25, 975)}
    for undo in (terminal.cancel("sale"), terminal.reversal("sale")):
        assert undo.response_code == "12" and undo.message.endswith("period is closed; refund instead")
    payable = ledger.merchant_payable_account(merchant, world.gift_programme)
    assert (terminal.balance(card), balance(world, payable)) == (4_000, 0)


def test_the_start_check_for_old_payables_reads_no_account_it_does_not_need(world: World) -> None:
    """Session 24: every start read every account id into a set, one per card ever issued, to find
    the memberships with no payable account. It is one query now, the accounts looked up by key."""
    for _ in range(5):
        world.issue(1_000)
    engine = make_engine(world.server.settings.effective_database_url)
    store = Store(engine)
    try:
        with statements_run(engine) as statements:
            assert store.memberships_without_payable_count() == 0
        (statement,) = statements
        assert "NOT (EXISTS" in statement, statement
        payable = ledger.merchant_payable_account(world.merchant_id, world.benefit_programme)
        with engine.begin() as conn:
            conn.execute(delete(accounts).where(accounts.c.account_id == payable))
        assert store.memberships_without_payable_count() == 1
    finally:
        engine.dispose()
