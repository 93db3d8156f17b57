"""The web back office's day closes by itself: its terminal has no one to press "day close", so the
switch closes a period that holds transactions of an earlier day (on the report time zone's clock)
before the web terminal's first transaction of a new day, and in `txswitch serve` once a day.

Each test failed before the fix (the web terminal's period stayed open for ever: no stored close,
and a web redemption of an earlier day could still be cancelled). "An earlier day" is made by
moving the web terminal's rows and its period's opening back to yesterday noon in the report
zone, the state a day later, rather than by faking the switch's clock (the journal, in a process
of its own, stamps the rows).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select, text, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from switch.admin import WEB_BACK_OFFICE
from switch.core import utc_now
from switch.domain.money import Money
from switch.domain.transactions import Redeem
from switch.store.schema import terminals, transactions
from switch.web_days import WebDays
from tests.integration.harness import EMPLOYEE, World, new_txn, on_statement, start_world, world_fixture
from tests.integration.nodes.conftest import Nodes, two_nodes
from tests.integration.test_portal import refusal, sign_in, stub
from tests.integration.test_portal_redeem import Metadata, redeem


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def web_terminal_id(world: World, metadata: Metadata) -> str:
    listed = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=metadata, timeout=20)
    (web,) = [t for t in listed.terminals if t.device_name == WEB_BACK_OFFICE]
    return str(web.terminal_id)


def day_closes(world: World, metadata: Metadata, terminal_id: str) -> list[pb.DayCloseReport]:
    listed = stub(world).ListDayCloses(
        bo.DayCloseListRequest(terminal_id=terminal_id), metadata=metadata, timeout=20
    )
    return list(listed.reports)


def as_of_yesterday(world: World, terminal_id: str) -> None:
    """The web terminal's transactions so far, and its open period, moved to yesterday noon on the
    report zone's clock: what the database holds a day later."""
    core = world.server.core
    noon = dt.datetime.combine(core.today() - dt.timedelta(days=1), dt.time(12), core.report_zone)
    with core.store.engine.begin() as conn:
        conn.execute(update(transactions).where(transactions.c.source == terminal_id).values(created_at=noon))
        conn.execute(
            update(terminals).where(terminals.c.terminal_id == terminal_id).values(period_opened_at=noon)
        )


def lines(report: pb.DayCloseReport) -> dict[tuple[str, str], tuple[int, int]]:
    return {(t.transaction_type, t.undoes): (t.count, t.total.amount_minor) for t in report.totals}


def cancel(world: World, metadata: Metadata, original: str) -> pb.TransactionResponse:
    request = portal.PortalCancelRequest(
        transaction_id=new_txn(),
        original_transaction_id=original,
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin),
    )
    answer: pb.TransactionResponse = stub(world).Cancel(request, metadata=metadata, timeout=20)
    return answer


def test_yesterdays_web_redemptions_are_closed_before_the_first_of_today(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    first, second = new_txn(), new_txn()
    assert redeem(world, owner, card, 1_000, first).response_code == "00"
    assert redeem(world, owner, card, 300, second).response_code == "00"
    web = web_terminal_id(world, owner)
    assert day_closes(world, owner, web) == []  # the day is not over
    as_of_yesterday(world, web)
    txn = new_txn()
    today = redeem(world, owner, card, 200, txn)
    assert today.response_code == "00", today.message
    (close,) = day_closes(world, owner, web)
    assert (close.sequence_number, close.period_number) == (1, 1)
    # Yesterday's two, each once; today's is in the next period.
    assert lines(close) == {("redemption", ""): (2, 1_300)}
    assert today.period_number == close.period_number + 1
    # Sent again, today's answer is the same: nothing closed twice, nothing moved twice.
    assert redeem(world, owner, card, 200, txn) == today
    assert len(day_closes(world, owner, web)) == 1
    assert world.terminals[0].balance(card) == 5_000 - 1_500


def test_a_web_redemption_of_a_closed_day_is_refunded_not_cancelled(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    sale = new_txn()
    assert redeem(world, owner, card, 1_000, sale).response_code == "00"
    as_of_yesterday(world, web_terminal_id(world, owner))
    refused = cancel(world, owner, sale)
    # Its day was closed before the cancel counted: as at a terminal, 12 (refund instead).
    assert refused.response_code == "12", refused.message
    assert world.terminals[0].balance(card) == 4_000
    refund = portal.PortalRefundRequest(
        transaction_id=new_txn(),
        original_transaction_id=sale,
        amount=pb.Amount(amount_minor=1_000, currency="EUR"),
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin),
    )
    assert stub(world).Refund(refund, metadata=owner, timeout=20).response_code == "00"
    assert world.terminals[0].balance(card) == 5_000


@contextmanager
def midnight_after_the_check(world: World, terminal_id: str) -> Iterator[None]:
    """The next web transaction's check for an earlier day (WebDays.close_if_due) finds none; just
    after it, the day turns: the web terminal's rows so far move to yesterday (as_of_yesterday), so
    the transaction commits on the day after the one it was checked on."""
    engine = world.server.core.store.engine
    armed = threading.Event()
    armed.set()

    def after_execute(_cursor: Any, statement: str, _parameters: Any) -> None:
        flat = " ".join(statement.split()).upper()
        checking = (
            flat.startswith("SELECT TERMINALS.TERMINAL_ID, TERMINALS.PERIOD_NUMBER") and "EXISTS" in flat
        )
        if checking and armed.is_set():
            armed.clear()
            as_of_yesterday(world, terminal_id)

    with on_statement(engine, "after", after_execute):
        yield
    assert not armed.is_set(), "no check for an earlier day was seen"


def stored_periods(world: World, terminal_id: str) -> dict[str, int]:
    with world.server.core.store.engine.connect() as conn:
        query = select(transactions.c.transaction_id, transactions.c.period_number).where(
            transactions.c.source == terminal_id
        )
        return {str(txn): int(period) for txn, period in conn.execute(query)}


def test_a_web_sale_checked_before_midnight_and_committed_after_counts_in_the_new_day(world: World) -> None:
    """Session 23 audit: the check for an earlier day and the write were apart; a web sale checked
    at 23:59:59 and committed at 00:00:00 landed in the period holding the day before, and was
    counted in that day's close (once). The period is now decided as the write commits, in its
    own transaction: the day before is closed first, and the sale opens the next period."""
    owner = sign_in(world)
    card = world.issue(5_000)
    yesterdays = new_txn()
    assert redeem(world, owner, card, 1_000, yesterdays).response_code == "00"
    web = web_terminal_id(world, owner)
    todays = new_txn()
    with midnight_after_the_check(world, web):
        answer = redeem(world, owner, card, 300, todays)
    assert answer.response_code == "00", answer.message
    assert stored_periods(world, web) == {yesterdays: 1, todays: 2}
    (close,) = day_closes(world, owner, web)  # closed as the sale committed, not by a pass
    assert (close.period_number, lines(close)) == (1, {("redemption", ""): (1, 1_000)})
    assert world.server.core.close_web_days() == []  # nothing of an earlier day is left open
    assert answer.period_number == 2  # the period the sale is stored in
    today = stub(world).CloseWebDay(portal.CloseWebDayRequest(period_number=2), metadata=owner, timeout=20)
    assert lines(today) == {("redemption", ""): (1, 300)}
    assert day_closes(world, owner, web) == [close, today]  # each sale in one close, once
    assert world.terminals[0].balance(card) == 5_000 - 1_300


def card_of(world: World, terminal_id: str, transaction_id: str) -> str:
    with world.server.core.store.engine.connect() as conn:
        query = select(transactions.c.card_id).where(
            transactions.c.source == terminal_id, transactions.c.transaction_id == transaction_id
        )
        return str(conn.execute(query).scalar_one())


def test_a_web_cancel_checked_before_midnight_and_committed_after_is_declined_12(world: World) -> None:
    """Audit after session 24: the cancel's check of its original's period was the web terminal's
    actor's, made before midnight; its write, committed after, closed the day before (WebDayRule)
    and then undid a sale counted in that close. The journal now refuses an undo whose period is
    no longer open as it commits: 12, refund instead, nothing moved."""
    owner = sign_in(world)
    card = world.issue(5_000)
    sale = new_txn()
    assert redeem(world, owner, card, 1_000, sale).response_code == "00"
    web = web_terminal_id(world, owner)
    with midnight_after_the_check(world, web):
        refused = cancel(world, owner, sale)
    assert refused.response_code == "12", refused.message
    assert "refund instead" in refused.message
    # Refused: nothing stored, nothing moved (the close its write made is kept: the next test).
    assert stored_periods(world, web) == {sale: 1}
    assert world.terminals[0].balance(card) == 4_000
    again = cancel(world, owner, sale)  # the day before is closed first now, then checked: 12 still
    assert again.response_code == "12", again.message
    (close,) = day_closes(world, owner, web)
    assert (close.period_number, lines(close)) == (1, {("redemption", ""): (1, 1_000)})
    assert world.terminals[0].balance(card) == 4_000


def open_period(world: World, terminal_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        query = select(terminals.c.period_number).where(terminals.c.terminal_id == terminal_id)
        return int(conn.execute(query).scalar_one())


def test_a_web_cancel_refused_after_midnight_keeps_the_close_of_the_day_before(world: World) -> None:
    """Session 24 audit: the write of a cancel committed after midnight closed the day before in its
    own transaction (WebDayRule); the cancel refused, that close was rolled back with it, and the
    day before stayed open until the next web call or the pass. The close is now made again on its
    own once the write is refused: the day before is closed as the refusal is answered."""
    owner = sign_in(world)
    card = world.issue(5_000)
    sale = new_txn()
    assert redeem(world, owner, card, 1_000, sale).response_code == "00"
    web = web_terminal_id(world, owner)
    with midnight_after_the_check(world, web):
        refused = cancel(world, owner, sale)
    assert refused.response_code == "12", refused.message
    # No web call and no pass since: the close is the refused write's own.
    (close,) = day_closes(world, owner, web)
    assert (close.sequence_number, close.period_number) == (1, 1)
    assert lines(close) == {("redemption", ""): (1, 1_000)}
    assert open_period(world, web) == 2
    assert stored_periods(world, web) == {sale: 1}  # the cancel stored nothing, moved nothing
    assert world.terminals[0].balance(card) == 4_000
    assert world.server.core.close_web_days() == []  # nothing left for the pass
    assert len(day_closes(world, owner, web)) == 1


@contextmanager
def web_day_turning_after_the_check(world: World) -> Iterator[None]:
    """The web back office's day (WebDays, the same class on a clock of its own) reads a moment
    before today's midnight until its check for an earlier day has run, then the time now: the day
    turns between a web write's check and its answer. Only that check's clock is moved; the journal,
    in a process of its own, stamps and judges on the real one (nothing here reaches it)."""
    core = world.server.core
    real = core.web_days
    just_before_midnight = dt.datetime.combine(core.today(), dt.time(0), core.report_zone) - dt.timedelta(
        seconds=1
    )
    turned = threading.Event()

    def clock() -> dt.datetime:
        return utc_now() if turned.is_set() else just_before_midnight

    def after_execute(_cursor: Any, statement: str, _parameters: Any) -> None:
        flat = " ".join(statement.split()).upper()
        if flat.startswith("SELECT TERMINALS.TERMINAL_ID, TERMINALS.PERIOD_NUMBER") and "EXISTS" in flat:
            turned.set()

    core.web_days = WebDays(
        core.store.engine,
        core.report_zone,
        clock,
        core._close_web_period,
        core.settings.web_day_close_interval_s,
    )
    try:
        with on_statement(core.store.engine, "after", after_execute):
            yield
    finally:
        core.web_days = real
    assert turned.is_set(), "no check for an earlier day was seen"


def portal_cancel(
    world: World, metadata: Metadata, original: str, location_id: str
) -> pb.TransactionResponse:
    request = portal.PortalCancelRequest(
        transaction_id=new_txn(),
        original_transaction_id=original,
        employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=EMPLOYEE.pin),
        location_id=location_id,
    )
    answer: pb.TransactionResponse = stub(world).Cancel(request, metadata=metadata, timeout=20)
    return answer


REFUSED_BEFORE_THE_JOURNAL = {  # how the write is refused: (its id held by, response code)
    # The web terminal's actor knows the id with other content: 94, nothing written.
    "the id again with another amount": ("here", "94"),
    # The portal finds the id at another of the merchant's locations: 94, never submitted.
    "an id of another location": ("elsewhere", "94"),
}


@pytest.mark.parametrize("refusal_kind", REFUSED_BEFORE_THE_JOURNAL)
def test_a_web_write_refused_before_the_journal_after_midnight_closes_the_day_before(
    world: World, refusal_kind: str
) -> None:
    """Session 25 audit: a web write checked before midnight and refused after it, before its
    transaction reached the journal (where it would have closed the day before), left the day before
    open until the next web write or the pass (every web_day_close_interval_s): no close in the
    list, its sales not handed on, however long no one wrote. The close is now made as the refusal
    is answered. (A cancel of the day before's sale sent meanwhile was answered 12 already: its own
    check closes the day first; it is asserted here all the same.)"""
    core = world.server.core
    owner = sign_in(world)
    card = world.issue(5_000)
    (here,) = [location.location_id for location in core.admin.list_locations(world.merchant_id)]
    elsewhere = core.admin.add_location(world.merchant_id, "Second shop")
    sale, taken = new_txn(), new_txn()
    held_by, code = REFUSED_BEFORE_THE_JOURNAL[refusal_kind]
    assert redeem(world, owner, card, 1_000, sale, location_id=here).response_code == "00"
    assert (
        redeem(
            world, owner, card, 100, taken, location_id={"here": here, "elsewhere": elsewhere}[held_by]
        ).response_code
        == "00"
    )
    web = core.web_terminal(world.merchant_id, here)
    as_of_yesterday(world, web)
    with web_day_turning_after_the_check(world):
        refused = redeem(world, owner, card, 200, taken, location_id=here)
    assert refused.response_code == code, refused.message
    # No web call and no pass since: the close was made as the refusal was answered.
    closes = day_closes(world, owner, web)
    assert [(c.sequence_number, c.period_number) for c in closes] == [(1, 1)]
    counted = 2 if held_by == "here" else 1
    assert lines(closes[0]) == {("redemption", ""): (counted, 1_000 + 100 * (counted - 1))}
    assert open_period(world, web) == 2
    assert core.close_web_days() == []  # nothing left for the pass
    undo = portal_cancel(world, owner, sale, here)
    assert undo.response_code == "12", undo.message  # its day is over: refund instead
    assert len(day_closes(world, owner, web)) == 1
    assert world.terminals[0].balance(card) == 5_000 - 1_100


def test_a_web_cancel_reaching_an_actor_behind_a_close_made_by_a_write_is_declined_12(world: World) -> None:
    """Audit after session 24: a web sale's write closed the day before (WebDayRule) and its
    terminal's actor read its row again only later (a Reload told after the answer); a cancel of
    the day before's sale that reached the actor first was judged against the closed period and
    approved. The sale here is submitted as submit_web submits it, without the Reload after."""
    owner = sign_in(world)
    card = world.issue(5_000)
    sale = new_txn()
    assert redeem(world, owner, card, 1_000, sale).response_code == "00"
    web = web_terminal_id(world, owner)
    as_of_yesterday(world, web)
    core = world.server.core
    todays = new_txn()
    command = Redeem(todays, card_of(world, web, sale), Money(300, "EUR"), allow_partial=False)
    assert core.submit(web, command).code.approves
    assert stored_periods(world, web) == {sale: 1, todays: 2}  # the write closed period 1
    refused = cancel(world, owner, sale)
    assert refused.response_code == "12", refused.message
    (close,) = day_closes(world, owner, web)
    assert lines(close) == {("redemption", ""): (1, 1_000)}
    assert world.terminals[0].balance(card) == 5_000 - 1_300


def test_a_period_of_todays_transactions_only_or_none_is_not_closed(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    assert redeem(world, owner, card, 100).response_code == "00"
    web = web_terminal_id(world, owner)
    core = world.server.core
    assert core.close_web_days() == []  # today's only: the day is not over
    # A period opened long ago that held nothing before today is no earlier day: not closed.
    with core.store.engine.begin() as conn:
        long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        mine = terminals.c.terminal_id == web
        conn.execute(update(terminals).where(mine).values(period_opened_at=long_ago))
    assert core.close_web_days() == []
    assert redeem(world, owner, card, 100).response_code == "00"
    assert day_closes(world, owner, web) == []


def test_serve_closes_the_web_days_by_itself(tmp_path: Path) -> None:
    world = start_world(tmp_path, "", terminals=1, web_day_close_interval_s=0.1)
    try:
        owner = sign_in(world)
        card = world.issue(5_000)
        assert redeem(world, owner, card, 700).response_code == "00"
        web = web_terminal_id(world, owner)
        as_of_yesterday(world, web)
        deadline = time.monotonic() + 10
        while not day_closes(world, owner, web) and time.monotonic() < deadline:
            time.sleep(0.05)
        (close,) = day_closes(world, owner, web)
        assert lines(close) == {("redemption", ""): (1, 700)}
    finally:
        world.channel.close()
        world.server.stop()
    assert not [t for t in threading.enumerate() if t.name == "web-day-close"]  # stopped with the switch


@contextmanager
def first_web_close_paused(world: World) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(reached, release): the first web day close to look for its close id waits there until release
    (at most 5 s)."""
    engine = world.server.core.store.engine
    reached, release = threading.Event(), threading.Event()

    def before_execute(_cursor: Any, statement: str, parameters: Any) -> None:
        values = parameters.values() if isinstance(parameters, dict) else parameters or ()
        web_close = any(str(value).startswith("web-day-") for value in values)
        if "FROM day_closes" in statement and web_close and not reached.is_set():
            reached.set()
            release.wait(5)

    with on_statement(engine, "before", before_execute):
        try:
            yield reached, release
        finally:
            release.set()


def test_a_stop_during_a_pass_waits_for_the_close_under_way_only(tmp_path: Path) -> None:
    """Audit after session 23: stop() let the pass close every web terminal still due (up to 1,000,
    each up to twice the reply timeout when the journal is slow) before it returned."""
    world = start_world(tmp_path, "", terminals=1, web_day_close_interval_s=0.1)
    core = world.server.core
    try:
        owner = sign_in(world)
        card = world.issue(5_000)
        shops = [core.admin.add_location(world.merchant_id, f"Shop {number}") for number in range(2, 6)]
        for location_id in shops:
            assert redeem(world, owner, card, 100, location_id=location_id).response_code == "00"
        webs = [core.web_terminal(world.merchant_id, location_id) for location_id in shops]
        with first_web_close_paused(world) as (reached, release):
            noon = dt.datetime.combine(core.today() - dt.timedelta(days=1), dt.time(12), core.report_zone)
            with core.store.engine.begin() as conn:  # all at once: one pass finds every one due
                conn.execute(
                    update(transactions).where(transactions.c.source.in_(webs)).values(created_at=noon)
                )
            assert reached.wait(10), "the pass did not begin to close a web day"
            stopping = threading.Thread(target=core.web_days.stop)
            stopping.start()
            time.sleep(0.2)  # stop() has asked the pass to end
            release.set()
            stopping.join(30)
        assert not stopping.is_alive()
        closed = [web for web in webs if core.store.day_closes(web)]
        assert len(closed) == 1, f"{len(closed)} web days closed after stop() was asked"
    finally:
        world.channel.close()
        world.server.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(tmp_path)


def test_two_nodes_closing_the_web_day_at_once_close_it_once(nodes: Nodes) -> None:
    world = nodes.world
    owner = sign_in(world)
    card = world.issue(5_000)
    for amount_minor in (100, 200, 300):
        assert redeem(world, owner, card, amount_minor).response_code == "00"
    web = web_terminal_id(world, owner)
    as_of_yesterday(world, web)
    cores = (world.server.core, nodes.node_b.core)
    online_on_b = nodes.node_b.core.terminals_online()
    start = threading.Barrier(2, timeout=10)
    closed: list[object] = []

    def close(index: int) -> None:
        start.wait()
        closed.extend(cores[index].close_web_days())

    threads = [threading.Thread(target=close, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    (report,) = day_closes(world, owner, web)
    assert lines(report) == {("redemption", ""): (3, 600)}
    assert closed  # at least one node answered the close it made or found
    # Node B, which took no web transaction, closed through the web terminal's actor: no device online.
    assert nodes.node_b.core.terminals_online() == online_on_b
    assert redeem(world, owner, card, 50).response_code == "00"
    assert len(day_closes(world, owner, web)) == 1


def test_a_cashier_closes_the_web_back_offices_day_now(world: World) -> None:
    world.server.core.admin.add_employee(
        world.merchant_id, "31", "Till", "1357", "cashier", email="till@example.test", password="till-pass"
    )
    cashier = sign_in(world, "till@example.test", "till-pass")
    card = world.issue(5_000)
    sale = new_txn()
    assert redeem(world, cashier, card, 1_000, sale).response_code == "00"
    assert redeem(world, cashier, card, 250).response_code == "00"
    close_now = stub(world).CloseWebDay
    report = close_now(portal.CloseWebDayRequest(period_number=1), metadata=cashier, timeout=20)
    web = web_terminal_id(world, cashier)
    assert (report.terminal_id, report.sequence_number, report.period_number) == (web, 1, 1)
    assert lines(report) == {("redemption", ""): (2, 1_250)}
    assert day_closes(world, cashier, web) == [report]
    # Nothing since: no empty close.
    code, details = refusal(
        close_now, portal.CloseWebDayRequest(period_number=2), metadata=cashier, timeout=20
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "since" in details, details
    assert cancel(world, cashier, sale).response_code == "12"  # its day is closed: refund instead
    later = redeem(world, cashier, card, 100)
    assert (later.response_code, later.period_number) == ("00", 2)
    second = close_now(portal.CloseWebDayRequest(period_number=2), metadata=cashier, timeout=20)
    assert (second.sequence_number, lines(second)) == (2, {("redemption", ""): (1, 100)})
    # Another merchant's location is none of this login's.
    code, _ = refusal(close_now, portal.CloseWebDayRequest(location_id="loc_nope"), metadata=cashier)
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = refusal(close_now, portal.CloseWebDayRequest(), timeout=20)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert world.terminals[0].balance(card) == 5_000 - 1_350


def test_a_close_now_sent_twice_at_once_closes_once(world: World) -> None:
    owner = sign_in(world)
    card = world.issue(5_000)
    for amount_minor in (100, 200):
        assert redeem(world, owner, card, amount_minor).response_code == "00"
    start = threading.Barrier(2, timeout=10)
    answers: list[object] = []

    def close_now() -> None:
        start.wait()
        try:
            request = portal.CloseWebDayRequest(period_number=1)
            answers.append(stub(world).CloseWebDay(request, metadata=owner, timeout=20))
        except grpc.RpcError as error:
            answers.append(error.code())

    threads = [threading.Thread(target=close_now) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    (report,) = day_closes(world, owner, web_terminal_id(world, owner))
    assert lines(report) == {("redemption", ""): (2, 300)}
    # Each is the one close, or finds nothing left to close.
    assert all(a == report or a is grpc.StatusCode.FAILED_PRECONDITION for a in answers), answers
    assert report in answers


def test_a_close_now_naming_its_period_sent_again_answers_that_close_and_closes_no_other(
    world: World,
) -> None:
    """Session 23 audit: a CloseWebDay that timed out but landed, sent again after a web sale, closed
    the next period too (that sale's day cut short). Naming the period it closes (the period of the
    web answers, or a close's next_period_number) makes it one close however often it is sent (a
    request without it is refused: the next test)."""
    owner = sign_in(world)
    card = world.issue(5_000)
    sale = redeem(world, owner, card, 100)
    assert (sale.response_code, sale.period_number) == ("00", 1)
    close_now = stub(world).CloseWebDay
    first = close_now(portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=20)
    assert (first.sequence_number, first.period_number, first.next_period_number) == (1, 1, 2)
    later = redeem(world, owner, card, 250)  # a sale of the next period, before the retry
    assert (later.response_code, later.period_number) == ("00", 2)
    again = close_now(portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=20)
    assert again == first
    web = web_terminal_id(world, owner)
    assert day_closes(world, owner, web) == [first]  # period 2 is still open
    # A period not open yet is refused naming the open one; the open one holding nothing is as before.
    code, details = refusal(close_now, portal.CloseWebDayRequest(period_number=3), metadata=owner, timeout=20)
    assert (code, details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "period 3 of the web back office is not open yet: its open period is 2",
    )
    second = close_now(portal.CloseWebDayRequest(period_number=2), metadata=owner, timeout=20)
    assert (second.sequence_number, lines(second)) == (2, {("redemption", ""): (1, 250)})
    code, details = refusal(close_now, portal.CloseWebDayRequest(period_number=3), metadata=owner, timeout=20)
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "since" in details, details
    assert close_now(portal.CloseWebDayRequest(period_number=2), metadata=owner, timeout=20) == second
    assert close_now(portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=20) == first
    code, _ = refusal(close_now, portal.CloseWebDayRequest(period_number=-1), metadata=owner, timeout=20)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert day_closes(world, owner, web) == [first, second]
    assert world.terminals[0].balance(card) == 5_000 - 350


def test_a_close_now_sent_again_without_its_period_closes_no_other(world: World) -> None:
    """Session 24 audit: a CloseWebDay without period_number, sent again after its answer was lost
    and a web sale, closed whatever was open: the next period, that sale's day cut short. Without
    the period a retry cannot be told from a new close, so a close must name its period: one
    without is refused, naming the open period, and closes nothing."""
    owner = sign_in(world)
    card = world.issue(5_000)
    assert redeem(world, owner, card, 100).response_code == "00"
    close_now = stub(world).CloseWebDay
    first = close_now(portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=20)
    assert (first.period_number, first.next_period_number) == (1, 2)
    assert redeem(world, owner, card, 250).response_code == "00"  # the next period's, before the retry
    code, details = refusal(close_now, portal.CloseWebDayRequest(), metadata=owner, timeout=20)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "period_number is missing: name the period to close (the web back office's open period is 2)",
    )
    web = web_terminal_id(world, owner)
    assert day_closes(world, owner, web) == [first]  # period 2 is still open
    assert open_period(world, web) == 2
    second = close_now(portal.CloseWebDayRequest(period_number=2), metadata=owner, timeout=20)
    assert (second.sequence_number, lines(second)) == (2, {("redemption", ""): (1, 250)})
    assert world.terminals[0].balance(card) == 5_000 - 350


def test_a_close_the_database_fails_is_told_in_words_not_sql(world: World) -> None:
    """Audit after session 23: the refusal quoted the database error, SQL statement and all."""
    owner = sign_in(world)
    card = world.issue(5_000)
    assert redeem(world, owner, card, 100).response_code == "00"
    engine = world.server.core.store.engine
    with engine.begin() as conn:  # the close's look-up of its close id fails in the database
        conn.execute(text("ALTER TABLE day_closes RENAME TO day_closes_away"))
    try:
        call = stub(world).CloseWebDay
        code, details = refusal(call, portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=30)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE day_closes_away RENAME TO day_closes"))
    assert code is grpc.StatusCode.UNAVAILABLE, details
    assert "the database failed" in details and "send it again" in details, details
    assert "SQL" not in details and "day_closes" not in details and "sqlalche" not in details, details
    assert card not in details
    report = stub(world).CloseWebDay(portal.CloseWebDayRequest(period_number=1), metadata=owner, timeout=20)
    assert lines(report) == {("redemption", ""): (1, 100)}


def test_a_pass_that_fails_on_something_else_than_the_database_passes_again(world: World) -> None:
    """Session 23 audit: the pass caught only database errors; anything else a close raised (an
    assertion in an actor, say) ended its thread, and no pass ran again until a restart."""
    owner = sign_in(world)
    assert redeem(world, owner, world.issue(5_000), 100).response_code == "00"
    web = web_terminal_id(world, owner)
    as_of_yesterday(world, web)
    core = world.server.core
    tries: list[str] = []
    second_try = threading.Event()

    def close_day(terminal_id: str, close_id: str, period_number: int) -> Any:
        tries.append(terminal_id)
        if len(tries) == 1:
            raise AssertionError("an actor's own check")
        second_try.set()
        return core._close_web_period(terminal_id, close_id, period_number)

    passes = WebDays(core.store.engine, core.report_zone, utc_now, close_day, 0.05)
    passes.start()
    try:
        assert second_try.wait(10), f"no pass after the one that failed ({len(tries)} tries)"
    finally:
        passes.stop()
    assert tries[:2] == [web, web]
    (report,) = day_closes(world, owner, web)
    assert lines(report) == {("redemption", ""): (1, 100)}
