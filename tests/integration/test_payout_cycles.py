"""SettleDue (the daily cron's `settle-due`) pays each merchant once per payout cycle of the programme,
what it was owed when the cycle's payout ran; SQLite and PostgreSQL.

Before, a second run in the cycle paid every merchant not yet paid under the cycle's settlement id:
a shop owed nothing at the cycle's run was paid mid-cycle for what it redeemed since, and then
again at the next cycle's start, while the others waited the whole cycle.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from sqlalchemy import update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.core import SwitchCore
from switch.domain import ledger
from switch.domain.programmes import ProgrammeKind
from switch.server import SwitchServer
from switch.store.journal import Write, WriteResult
from switch.store.schema import programmes
from tests.integration.harness import TerminalClient, World, world_fixture
from tests.integration.test_settlement import balance, cycle_day, payouts, settle, settle_due

BAKERY_EMAIL, BAKERY_PASSWORD = "bakery@example.test", "bakery-password"
ALREADY_PAID = "already paid out under this settlement id"
WAITS = "owed nothing when this cycle's payout ran; waits for the next cycle"
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def bakery(world: World) -> tuple[str, TerminalClient]:
    """A second merchant in the gift programme (2.5 %), with a terminal of its own."""
    admin = world.server.core.admin
    merchant_id = admin.create_merchant("Bakery", BAKERY_EMAIL, BAKERY_PASSWORD)
    admin.add_location(merchant_id, "Bakery")
    admin.join_programme(merchant_id, world.gift_programme, 250)
    stub = pb_grpc.TerminalStub(world.channel)
    activated = stub.Activate(
        pb.ActivateRequest(
            merchant_email=BAKERY_EMAIL, password=BAKERY_PASSWORD, device_name="A77-B", location="Bakery"
        ),
        timeout=20,
    )
    return merchant_id, TerminalClient(stub, activated.credential, activated.terminal_id)


def skipped(result: bo.SettleResponse) -> dict[str, tuple[int, str]]:
    return {s.merchant_id: (s.gross.amount_minor, s.reason) for s in result.skipped}


def assert_balanced(world: World) -> None:
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches, check.negative_card_balances) == (0, 0, 0)


def test_a_merchant_owed_nothing_at_the_cycles_run_is_paid_at_the_next_cycle_not_mid_cycle(
    world: World,
) -> None:
    shop, shop_terminal = world.merchant_id, world.terminals[0]
    baker, baker_terminal = bakery(world)
    card = world.issue(10_000)
    assert shop_terminal.redeem(card, 1_000).response_code == "00"
    # Today's cycle runs: the shop is owed 10.00, the bakery nothing.
    first = settle_due(world, cycle_day(world, days_in=18))[world.gift_programme]
    assert first.settlement_id == f"payout-{cycle_day(world)}"
    assert payouts(first.result) == {shop: (1_000, 25, 975)} and not first.result.skipped
    assert baker_terminal.redeem(card, 400).response_code == "00"
    assert shop_terminal.redeem(card, 300).response_code == "00"
    again = settle_due(world, cycle_day(world, days_in=25))[
        world.gift_programme
    ]  # the same cycle, a later day
    assert payouts(again.result) == {}, "a later run in the cycle paid a merchant"
    assert skipped(again.result) == {shop: (300, ALREADY_PAID), baker: (400, WAITS)}
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]  # the next cycle's run
    assert following.settlement_id == f"payout-{cycle_day(world, cycles_on=1)}"
    assert payouts(following.result) == {shop: (300, 8, 292), baker: (400, 10, 390)}
    for merchant in (shop, baker):
        assert balance(world, ledger.merchant_payable_account(merchant, world.gift_programme)) == 0
    assert balance(world, ledger.payout_clearing_account(world.gift_programme)) == 975 + 292 + 390
    assert_balanced(world)


def restarted(world: World) -> TerminalClient:
    """The switch stopped and started again on its database; world's first terminal on the new one."""
    settings, terminal = world.server.settings, world.terminals[0]
    world.channel.close()
    world.server.stop()
    world.server = SwitchServer(settings)
    world.server.start()
    world.channel = grpc.insecure_channel(world.server.address)
    world.backoffice = bo_grpc.BackofficeStub(world.channel)
    return TerminalClient(pb_grpc.TerminalStub(world.channel), terminal.credential, terminal.terminal_id)


def test_a_payout_that_failed_at_the_cycles_run_is_made_later_for_what_was_owed_then(world: World) -> None:
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    world.server.core.writer.stop()  # as while the switch drains: the journal takes no more writes
    failed = settle_due(world, cycle_day(world, days_in=18))[world.gift_programme]
    assert payouts(failed.result) == {} and skipped(failed.result) == {shop: (1_000, "journal stopped")}
    terminal = restarted(world)
    assert terminal.redeem(card, 500).response_code == "00"  # after the cycle's run: the next cycle's
    retried = settle_due(world, cycle_day(world, days_in=19))[world.gift_programme]
    # One line a merchant: the payout; the 5.00 redeemed since the cycle's run waits, unlisted.
    assert payouts(retried.result) == {shop: (1_000, 25, 975)} and not retried.result.skipped
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (500, 13, 487)}
    assert_balanced(world)


def test_two_runs_at_once_in_a_new_cycle_pay_each_merchant_once(world: World) -> None:
    shop, shop_terminal = world.merchant_id, world.terminals[0]
    baker, baker_terminal = bakery(world)
    card = world.issue(10_000)
    for day in [cycle_day(world, cycles_on=n, days_in=18) for n in range(5)]:
        assert shop_terminal.redeem(card, 100).response_code == "00"
        assert baker_terminal.redeem(card, 200).response_code == "00"
        answers: list[bo.ProgrammeSettlement] = []

        def settle(day: str = day, answers: list[bo.ProgrammeSettlement] = answers) -> None:
            answers.append(settle_due(world, day)[world.gift_programme])

        runs = [threading.Thread(target=settle) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
        paid = sorted((p.merchant_id, p.gross.amount_minor) for a in answers for p in a.result.payouts)
        assert paid == sorted([(shop, 100), (baker, 200)]), day
        reasons = {reason for answer in answers for _, reason in skipped(answer.result).values()}
        assert reasons <= {ALREADY_PAID}, day  # the run that came second, had it read first
    assert_balanced(world)


def test_a_merchant_already_paid_this_cycle_is_not_a_warning_every_day(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 23: "already paid" was logged at WARNING, every day of the cycle, for every merchant
    paid at the cycle's run that redeemed since: the daily cron's log full of warnings for the
    usual case. It is the answer's, not a fault: DEBUG."""
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    assert payouts(settle_due(world, cycle_day(world))[world.gift_programme].result) == {
        shop: (1_000, 25, 975)
    }
    assert terminal.redeem(card, 300).response_code == "00"
    with caplog.at_level(logging.DEBUG):
        for days_in in (1, 2, 3):
            again = settle_due(world, cycle_day(world, days_in=days_in))[world.gift_programme]
            assert skipped(again.result) == {shop: (300, ALREADY_PAID)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], warnings
    told = [r for r in caplog.records if "payout to" in r.getMessage() and ALREADY_PAID in r.getMessage()]
    assert told and {r.levelno for r in told} == {logging.DEBUG}


def test_a_past_cycle_whose_payout_never_ran_is_refused_by_name_and_pays_nothing(world: World) -> None:
    """Session 23: SettleDue for a cycle already over with no record of its run paid today's
    balances under that cycle's id (a second payout in today's cycle, under a past one's name)."""
    shop, terminal = world.merchant_id, world.terminals[0]
    assert terminal.redeem(world.issue(10_000), 1_000).response_code == "00"
    past = cycle_day(world, cycles_on=-1, days_in=3)
    past_id = f"payout-{cycle_day(world, cycles_on=-1)}"
    with pytest.raises(grpc.RpcError) as refused:
        settle_due(world, past)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert past_id in (refused.value.details() or ""), refused.value.details()
    payable = ledger.merchant_payable_account(shop, world.gift_programme)
    assert balance(world, payable) == 1_000, "a refused run paid"
    today = settle_due(world, cycle_day(world))[world.gift_programme]
    assert payouts(today.result) == {shop: (1_000, 25, 975)}
    assert_balanced(world)


PAID_BY_MANUAL = "paid under settlement manual-1 in this cycle; waits for the next cycle"


def test_a_manual_settle_after_the_cycles_failed_payout_is_the_cycles_payout(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 23: after the cycle's payout failed and the operator paid by hand (Settle), a later
    SettleDue in the cycle paid what was redeemed since: a second payout in the cycle. One payout a
    cycle: the manual one counts as the cycle's."""
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    world.server.core.writer.stop()  # as while the switch drains: the journal takes no more writes
    failed = settle_due(world, cycle_day(world, days_in=1))[world.gift_programme]
    assert skipped(failed.result) == {shop: (1_000, "journal stopped")}
    terminal = restarted(world)
    assert payouts(settle(world, world.gift_programme, "manual-1")) == {shop: (1_000, 25, 975)}
    assert terminal.redeem(card, 500).response_code == "00"
    caplog.clear()
    later = settle_due(world, cycle_day(world, days_in=2))[world.gift_programme]
    assert payouts(later.result) == {}, "a second payout in the cycle"
    assert skipped(later.result) == {shop: (500, PAID_BY_MANUAL)}
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], "the daily answer"
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (500, 13, 487)}
    assert_balanced(world)


def test_a_manual_settle_before_the_cycles_run_is_the_cycles_payout(world: World) -> None:
    shop, terminal = world.merchant_id, world.terminals[0]
    baker, baker_terminal = bakery(world)
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    assert payouts(settle(world, world.gift_programme, "manual-1")) == {shop: (1_000, 25, 975)}
    assert terminal.redeem(card, 300).response_code == "00"
    assert baker_terminal.redeem(card, 400).response_code == "00"
    run = settle_due(world, cycle_day(world, days_in=1))[world.gift_programme]
    assert payouts(run.result) == {}, "a second payout in the cycle"
    assert skipped(run.result) == {shop: (300, PAID_BY_MANUAL), baker: (400, WAITS)}
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (300, 8, 292), baker: (400, 10, 390)}
    assert_balanced(world)


@contextmanager
def paused_at_payout(
    core: SwitchCore, settlement_id: str, after: bool = True
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, release): the server thread making a payout under settlement_id waits just after it
    committed (or just before it is written) until release is set: what a run beside it, or a crash
    then, finds. Only the first such payout is held."""
    write_now = core.write_now
    reached, release = threading.Event(), threading.Event()

    def hold(write: Write) -> None:
        entry = write.entry
        if entry is not None and f":{settlement_id}:" in entry.idempotency_key and not reached.is_set():
            reached.set()
            release.wait(20)

    def paused(write: Write) -> WriteResult:
        if not after:
            hold(write)
        result = write_now(write)
        if after:
            hold(write)
        return result

    core.write_now = paused  # type: ignore[method-assign]
    try:
        yield reached, release
    finally:
        release.set()
        del core.write_now


def in_thread(call: Callable[[], T]) -> tuple[threading.Thread, list[T]]:
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_a_run_just_after_a_manual_settles_payout_pays_nothing_more_in_the_cycle(world: World) -> None:
    """Session 24: the mark that a Settle was the cycle's payout (paid_by) was written after its
    payouts had committed, in a transaction of its own: a SettleDue in between (or a crash, which
    left no mark at all) paid what was redeemed since, a second payout in the cycle. The mark now
    commits with the payout."""
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    world.server.core.writer.stop()  # the cycle's run is recorded (owed 10.00), its payout fails
    failed = settle_due(world, cycle_day(world, days_in=1))[world.gift_programme]
    assert skipped(failed.result) == {shop: (1_000, "journal stopped")}
    terminal = restarted(world)
    with paused_at_payout(world.server.core, "manual-1") as (reached, release):
        manual, answers = in_thread(lambda: settle(world, world.gift_programme, "manual-1"))
        assert reached.wait(20), "the manual payout was not made"
        assert terminal.redeem(card, 500).response_code == "00"
        between = settle_due(world, cycle_day(world, days_in=2))[world.gift_programme]
        release.set()
        manual.join(20)
    assert payouts(answers[0]) == {shop: (1_000, 25, 975)}
    assert payouts(between.result) == {}, "a second payout in the cycle"
    assert skipped(between.result) == {shop: (500, PAID_BY_MANUAL)}
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (500, 13, 487)}
    assert_balanced(world)


def test_a_manual_settle_while_a_run_is_about_to_pay_keeps_the_run_from_paying(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 24: SettleDue read that no Settle had paid the merchant in the cycle, then a Settle paid
    it and the merchant redeemed as much again before the run's payout was written: the run paid too,
    a second payout in the cycle. The run's payout is now refused once a Settle's mark is there.
    Session 25: that refusal read "refused by the ledger" at WARNING; it is the ordinary answer to a
    merchant a Settle paid in the cycle, at INFO like it."""
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    cycle_id = f"payout-{cycle_day(world)}"
    with (
        caplog.at_level(logging.DEBUG),
        paused_at_payout(world.server.core, cycle_id, after=False) as (reached, release),
    ):
        run, answers = in_thread(lambda: settle_due(world, cycle_day(world, days_in=1)))
        assert reached.wait(20), "the run planned no payout"
        assert payouts(settle(world, world.gift_programme, "manual-1")) == {shop: (1_000, 25, 975)}
        assert terminal.redeem(card, 1_000).response_code == "00"
        release.set()
        run.join(20)
    (refused,) = answers[0][world.gift_programme].result.skipped
    assert payouts(answers[0][world.gift_programme].result) == {}, "a second payout in the cycle"
    assert (refused.merchant_id, refused.gross.amount_minor) == (shop, 1_000)
    assert refused.reason == PAID_BY_MANUAL, refused.reason
    told = [r for r in caplog.records if "payout to" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in told] == [
        (logging.INFO, f"payout to {shop} not made: {PAID_BY_MANUAL}")
    ]
    payable = ledger.merchant_payable_account(shop, world.gift_programme)
    assert balance(world, payable) == 1_000, "the redeemed since waits for the next cycle"
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (1_000, 25, 975)}
    assert_balanced(world)


def test_a_past_cycle_runs_for_the_programmes_that_ran_it_and_names_the_others(world: World) -> None:
    """Session 24: a past cycle's payout that failed could not be made again once a programme with no
    record of that cycle existed (one created since): the whole SettleDue was refused. Each programme
    that ran the cycle runs it again; one that did not is listed, with why, and pays nothing."""
    shop, terminal = world.merchant_id, world.terminals[0]
    assert terminal.redeem(world.issue(10_000), 1_000).response_code == "00"
    past = cycle_day(world, cycles_on=-1, days_in=3)
    world.server.core.writer.stop()  # the past cycle's run is recorded (owed 10.00), its payout fails
    failed = settle_due(world, past, run_on=past)[world.gift_programme]
    assert skipped(failed.result) == {shop: (1_000, "journal stopped")}
    restarted(world)
    later = world.server.core.admin.create_programme("Later", ProgrammeKind.gift, "EUR", "600104")
    world.server.core.admin.join_programme(shop, later, 250)
    again = settle_due(world, past)
    past_id, today_id = f"payout-{cycle_day(world, cycles_on=-1)}", f"payout-{cycle_day(world)}"
    assert again[world.gift_programme].settlement_id == past_id
    assert payouts(again[world.gift_programme].result) == {shop: (1_000, 25, 975)}
    assert again[world.gift_programme].not_run_reason == ""
    created_on = dt.datetime.now(world.server.core.report_zone).date().isoformat()
    assert (again[later].settlement_id, again[later].not_run_reason) == (
        past_id,
        f"payout cycle {past_id} was over when this programme was created ({created_on}); "
        f"what is owed now is paid in today's cycle ({today_id})",
    )
    assert not again[later].result.payouts and not again[later].result.skipped
    assert_balanced(world)


@pytest.mark.parametrize(
    ("created_days_before_the_cycle", "reason_start"),
    [
        (None, "is over and has no run of this programme (created on a day not recorded: it may not"),
        (1, "is over and never ran for this programme"),
        (-3, "is over and never ran for this programme"),  # created in the cycle: the cron runs it then
    ],
    ids=["created before creation times were kept", "created before the cycle", "created in the cycle"],
)
def test_a_past_cycle_says_whether_a_programme_with_no_run_of_it_existed_then(
    world: World, created_days_before_the_cycle: int | None, reason_start: str
) -> None:
    """Session 25: programmes had no creation time, so a past cycle's answer for one with no run of
    it said "never ran" of a programme created after the cycle was over too."""
    admin = world.server.core.admin
    past_start = dt.date.fromisoformat(cycle_day(world, cycles_on=-1))
    past_id, today_id = f"payout-{past_start}", f"payout-{cycle_day(world)}"
    admin.record_cycle_run(world.gift_programme, past_id)  # the gift programme ran the past cycle
    created_after = admin.create_programme("Later", ProgrammeKind.gift, "EUR", "600104")
    older = admin.create_programme("Older", ProgrammeKind.gift, "EUR", "600105")
    created_at = None
    if created_days_before_the_cycle is not None:
        created_on = past_start - dt.timedelta(days=created_days_before_the_cycle)
        created_at = dt.datetime.combine(created_on, dt.time(12), world.server.core.report_zone)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(programmes).where(programmes.c.programme_id == older).values(created_at=created_at)
        )
    again = settle_due(world, cycle_day(world, cycles_on=-1, days_in=3))
    paid_today = f"what is owed now is paid in today's cycle ({today_id})"
    today = dt.datetime.now(world.server.core.report_zone).date().isoformat()
    assert again[created_after].not_run_reason == (
        f"payout cycle {past_id} was over when this programme was created ({today}); {paid_today}"
    )
    reason = again[older].not_run_reason
    assert reason.startswith(f"payout cycle {past_id} {reason_start}"), reason
    assert reason.endswith(paid_today), reason
    assert again[world.gift_programme].not_run_reason == ""


def test_a_merchant_first_paid_by_a_manual_settle_after_the_run_is_told_so(world: World) -> None:
    """Session 24: a merchant owed nothing at the cycle's run (no due row), then paid by a Settle,
    was told by the next SettleDue it was "owed nothing when this cycle's payout ran": the Settle's
    mark had no row to go on. It is told the settlement that paid it in the cycle."""
    shop, terminal = world.merchant_id, world.terminals[0]
    baker, baker_terminal = bakery(world)
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    run = settle_due(world, cycle_day(world, days_in=1))[world.gift_programme]
    assert payouts(run.result) == {shop: (1_000, 25, 975)}
    assert baker_terminal.redeem(card, 400).response_code == "00"
    assert payouts(settle(world, world.gift_programme, "manual-1")) == {baker: (400, 10, 390)}
    assert baker_terminal.redeem(card, 300).response_code == "00"
    later = settle_due(world, cycle_day(world, days_in=2))[world.gift_programme]
    assert payouts(later.result) == {}
    assert skipped(later.result) == {baker: (300, PAID_BY_MANUAL)}
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {baker: (300, 8, 292)}
    assert_balanced(world)


def test_a_past_cycle_run_again_after_a_later_cycles_run_pays_nothing_more(world: World) -> None:
    """Session 24 review: a past cycle whose payout failed was run again (SettleDue as of its day)
    after today's cycle had run: today's run had paid what the past run was owed (it was still on
    the payable), so the past cycle's run paid what was redeemed since today's run, under the past
    cycle's id: a second payout in today's cycle. A later cycle's run, or a Settle, supersedes it."""
    shop, terminal = world.merchant_id, world.terminals[0]
    card = world.issue(10_000)
    assert terminal.redeem(card, 1_000).response_code == "00"
    past = cycle_day(world, cycles_on=-1, days_in=3)
    past_id, today_id = f"payout-{cycle_day(world, cycles_on=-1)}", f"payout-{cycle_day(world)}"
    world.server.core.writer.stop()  # the past cycle's run is recorded (owed 10.00), its payout fails
    failed = settle_due(world, past, run_on=past)[world.gift_programme]
    assert skipped(failed.result) == {shop: (1_000, "journal stopped")}
    terminal = restarted(world)
    today = settle_due(world, cycle_day(world))[world.gift_programme]
    assert payouts(today.result) == {shop: (1_000, 25, 975)}, "today's run pays what the past one was owed"
    assert terminal.redeem(card, 500).response_code == "00"  # after today's run: the next cycle's
    with pytest.raises(grpc.RpcError) as refused:
        settle_due(world, past)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    assert today_id in (refused.value.details() or ""), refused.value.details()
    payable = ledger.merchant_payable_account(shop, world.gift_programme)
    assert balance(world, payable) == 500, "a second payout in today's cycle"
    following = settle_due(world, cycle_day(world, cycles_on=1))[world.gift_programme]
    assert payouts(following.result) == {shop: (500, 13, 487)}
    assert past_id != today_id
    assert_balanced(world)


@pytest.mark.parametrize(
    "settlement_id",
    ["s" * 52, "manual\n1", "payout-2099-01-05"],
    ids=["longer than its key holds", "unprintable", "a payout cycle's"],
)
def test_a_settle_with_a_settlement_id_it_cannot_store_is_refused_and_changes_nothing(
    world: World, settlement_id: str
) -> None:
    """Session 24 review: Settle checked only that its settlement_id was not empty, and since this
    session a Settle records today's payout cycle's run (what each merchant is owed in it) before it
    pays. One longer than the journal's key holds recorded the run, then failed every payout
    (PostgreSQL: "a value does not fit its column"; SQLite stored the over-long key). One named as a
    payout cycle's (payout-<cycle start>) took that cycle's payout key: a later cycle's run found it
    "already paid" and what the merchant was owed then waited a cycle more."""
    shop, terminal = world.merchant_id, world.terminals[0]
    assert terminal.redeem(world.issue(10_000), 1_000).response_code == "00"
    with pytest.raises(grpc.RpcError) as refused:
        settle(world, world.gift_programme, settlement_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "settlement_id" in (refused.value.details() or ""), refused.value.details()
    assert settlement_id not in (refused.value.details() or "")
    admin = world.server.core.admin
    assert not admin.cycle_ran(world.gift_programme, f"payout-{cycle_day(world)}"), "the cycle's run recorded"
    assert balance(world, ledger.merchant_payable_account(shop, world.gift_programme)) == 1_000
    assert payouts(settle(world, world.gift_programme, "manual-1")) == {shop: (1_000, 25, 975)}
    assert_balanced(world)
