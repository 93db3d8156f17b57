"""A day close against the ledger and the portal (helper audit of the day close and the reports).

One period of every kind of stored-value movement (full, partial and declined redemptions, a load,
a partial refund, a cancel, a reversal, a reversal of nothing): the close nets what left the cards;
a close sent again, or twice at once, answers the same report and opens one period; the portal's
report and its export of the day count the same rows under every filter, and the close's lines
among them; shop days across the autumn clock change add up to their range; a bank-card reversal
after its payment's close is a line of the next close and rewrites no stored one. These held on
the code as it was: each is a proof that can fail (a close counting a zero-amount line fails two)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.store.schema import transactions
from tests.integration.harness import World, world_fixture
from tests.integration.payment_harness import payment_world, wait_until
from tests.integration.test_portal import sign_in, stub

# What a line takes off the cards: a sale takes, a refund or a load gives; an undo the opposite.
OFF_THE_CARD_SIGN = {"redemption": 1, "refund": -1, "load": -1}
APPROVED_CODES = ("00", "10")  # approved, approved in part
NOT_TAKEN = ("declined", "aborted")  # statuses of rows no close counts


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def off_the_cards_minor(report: pb.DayCloseReport) -> int:
    return sum(
        (-OFF_THE_CARD_SIGN[t.undoes] if t.undoes else OFF_THE_CARD_SIGN[t.transaction_type])
        * t.total.amount_minor
        for t in report.totals
    )


def close(world: World, close_id: str) -> pb.DayCloseReport:
    terminal = world.terminals[0]
    return terminal.stub.DayClose(
        pb.DayCloseRequest(close_id=close_id), metadata=terminal.metadata, timeout=20
    )


def one_period_of_everything(world: World) -> list[str]:
    """The cards used; every answer as the scenario expects it."""
    terminal = world.terminals[0]
    gift, small, benefit = world.issue(10_000), world.issue(50), world.issue(10_000, world.benefit_programme)
    answers = [
        terminal.redeem(gift, 1_000).response_code,
        terminal.redeem(gift, 400, "refunded").response_code,
        terminal.refund("refunded", 150).response_code,
        terminal.redeem(gift, 300, "cancelled").response_code,
        terminal.cancel("cancelled").response_code,
        terminal.redeem(gift, 200, "reversed").response_code,
        terminal.reversal("reversed").response_code,
        terminal.redeem(small, 100, partial=True).response_code,
        terminal.redeem(small, 100).response_code,  # nothing left on it: declined, not counted
        terminal.load(gift, 500).response_code,
        terminal.load(gift, 250, "load-cancelled").response_code,
        terminal.cancel("load-cancelled").response_code,
        terminal.reversal("never-arrived").response_code,
        terminal.redeem(benefit, 700).response_code,
    ]
    assert answers == ["00"] * 7 + ["10", "51"] + ["00"] * 5
    return [gift, small, benefit]


def test_a_close_nets_what_left_the_cards_and_is_answered_again_unchanged(world: World) -> None:
    terminal = world.terminals[0]
    cards = one_period_of_everything(world)
    before = {card: balance for card, balance in zip(cards, (10_000, 50, 10_000), strict=True)}
    left_the_cards = sum(before[card] - terminal.balance(card) for card in cards)
    first = close(world, "close-1")
    assert (first.sequence_number, first.period_number) == (1, 1)
    assert off_the_cards_minor(first) == left_the_cards, f"lines {first.totals}"
    again = close(world, "close-1")  # its answer lost: sent again
    assert again == first
    stored = world.backoffice.ListDayCloses(
        bo.DayCloseListRequest(terminal_id=terminal.terminal_id), metadata=world.admin_metadata, timeout=20
    )
    assert list(stored.reports) == [first]
    following = close(world, "close-2")
    assert (following.sequence_number, following.period_number, list(following.totals)) == (2, 2, [])


def test_one_close_sent_twice_at_once_is_one_close(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 100).response_code == "00"
    answers: list[pb.DayCloseReport] = []
    senders = [threading.Thread(target=lambda: answers.append(close(world, "twice"))) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert len(answers) == 2 and answers[0] == answers[1]
    assert (answers[0].sequence_number, answers[0].period_number) == (1, 1)
    assert close(world, "next").period_number == 2  # period 2 was open, and is the one closed now


def exported(world: World, report: bo.TransactionReportRequest) -> list[dict[str, str]]:
    chunks = stub(world).ExportTransactions(
        bo.TransactionExportRequest(report=report), metadata=sign_in(world), timeout=20
    )
    text = b"".join(chunk.csv for chunk in chunks).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text), delimiter=";"))  # the portal's excel-nl


def minor(cell: str) -> int:
    return int(Decimal(cell.replace(",", ".")) * 100)


def test_the_portals_day_report_its_export_and_the_close_agree(world: World) -> None:
    terminal = world.terminals[0]
    one_period_of_everything(world)
    closed = close(world, "close-1")
    today = dt.datetime.now(dt.UTC).astimezone(world.server.core.report_zone).date()
    request = bo.TransactionReportRequest(from_date=str(today), terminal_id=terminal.terminal_id)
    report = stub(world).ListTransactions(request, metadata=sign_in(world), timeout=20)
    rows = exported(world, request)
    assert not report.next_page_token
    # The portal's lines of rows taken count what the close's lines count, not only sum it: a
    # reversal of what never arrived moved nothing, so it is a line apart, which no close has.
    taken_lines = [t for t in report.totals if t.status not in NOT_TAKEN and not t.moved_nothing]
    assert summed(
        ((t.transaction_type, t.payment_method, t.approved.currency), t.count, t.approved.amount_minor)
        for t in taken_lines
    ) == summed(
        ((t.transaction_type, t.payment_method, t.total.currency), t.count, t.total.amount_minor)
        for t in closed.totals
    )
    assert [
        (t.transaction_type, t.status, t.count, t.approved.amount_minor)
        for t in report.totals
        if t.moved_nothing
    ] == [("reversal", "approved", 1, 0)]
    # Every line of the report is its rows in the export.
    from_report = {
        (t.transaction_type, t.payment_method, t.status, t.approved.currency, t.moved_nothing): (
            t.count,
            t.approved.amount_minor,
        )
        for t in report.totals
    }
    from_export = summed(
        (
            (
                row["transaction_type"],
                row["payment_method"],
                row["status"],
                row["currency"],
                row["status"] not in NOT_TAKEN and not minor(row["approved"]),
            ),
            1,
            minor(row["approved"]),
        )
        for row in rows
    )
    assert from_report == from_export
    # The close's lines are the period's approved rows that moved money, aborted ones left out.
    moved = [
        row
        for row in rows
        if row["response_code"] in APPROVED_CODES and row["status"] != "aborted" and minor(row["approved"])
    ]
    assert summed(
        ((t.transaction_type, t.payment_method), t.count, t.total.amount_minor) for t in closed.totals
    ) == summed(
        ((row["transaction_type"], row["payment_method"]), 1, minor(row["approved"]))
        for row in moved
        if row["period_number"] == "1"
    )


def summed(lines: Iterable[tuple[Hashable, int, int]]) -> dict[Hashable, tuple[int, int]]:
    """(count, amount) per key, over (key, count, amount) lines."""
    totals: dict[Hashable, tuple[int, int]] = {}
    for key, count, amount_minor in lines:
        before_count, before_minor = totals.get(key, (0, 0))
        totals[key] = (before_count + count, before_minor + amount_minor)
    return totals


# 25 October 2026: Amsterdam goes back from UTC+2 to UTC+1 at 01:00 UTC; the day has 25 hours and
# its 02:00-03:00 twice. The period closed below runs over three shop days.
AUTUMN_STAMPS = {
    "last-of-24th": ("2026-10-24T21:59:59", "2026-10-24T23:59:59+02:00"),
    "first-of-25th": ("2026-10-24T22:00:00", "2026-10-25T00:00:00+02:00"),
    "first-half-past-two": ("2026-10-25T00:30:00", "2026-10-25T02:30:00+02:00"),
    "second-half-past-two": ("2026-10-25T01:30:00", "2026-10-25T02:30:00+01:00"),
    "last-of-25th": ("2026-10-25T22:59:59", "2026-10-25T23:59:59+01:00"),
    "first-of-26th": ("2026-10-25T23:00:00", "2026-10-26T00:00:00+01:00"),
}


def test_shop_days_across_the_autumn_change_add_up_to_their_range_the_export_and_the_close(
    world: World,
) -> None:
    terminal = world.terminals[0]
    card = world.issue(10_000)
    for number, txn in enumerate(AUTUMN_STAMPS, start=1):
        assert terminal.redeem(card, number * 100, txn).response_code == "00"
    with world.server.core.store.engine.begin() as conn:
        for txn, (stamp, _) in AUTUMN_STAMPS.items():
            moment = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
            conn.execute(
                update(transactions).where(transactions.c.transaction_id == txn).values(created_at=moment)
            )
    closed = close(world, "close-1")
    mine = sign_in(world)

    def ids_and_sum(from_date: str, to_date: str = "") -> tuple[list[str], int]:
        request = bo.TransactionReportRequest(
            from_date=from_date, to_date=to_date, time_zone="Europe/Amsterdam"
        )
        found = stub(world).ListTransactions(request, metadata=mine, timeout=20)
        return [t.transaction_id for t in found.transactions], sum(
            t.approved.amount_minor for t in found.totals
        )

    days = [ids_and_sum(day) for day in ("2026-10-24", "2026-10-25", "2026-10-26")]
    assert [ids for ids, _ in days] == [
        ["last-of-24th"],
        ["first-of-25th", "first-half-past-two", "second-half-past-two", "last-of-25th"],
        ["first-of-26th"],
    ]
    whole_ids, whole_minor = ids_and_sum("2026-10-24", "2026-10-26")
    assert whole_ids == list(AUTUMN_STAMPS)
    assert whole_minor == sum(minor_sum for _, minor_sum in days) == 2_100
    rows = exported(world, bo.TransactionReportRequest(from_date="2026-10-24", to_date="2026-10-26"))
    assert [(row["transaction_id"], row["time"]) for row in rows] == [
        (txn, local) for txn, (_, local) in AUTUMN_STAMPS.items()
    ]
    assert sum(minor(row["approved"]) for row in rows) == whole_minor
    assert [(t.transaction_type, t.count, t.total.amount_minor) for t in closed.totals] == [
        ("redemption", 6, whole_minor)
    ]


def period_lines(rows: list[dict[str, str]], period_number: int) -> Counter[tuple[str, str]]:
    """The exported rows a close of that period counts, summed per type and payment method."""
    lines: Counter[tuple[str, str]] = Counter()
    for row in rows:
        moved = (
            row["response_code"] in APPROVED_CODES and row["status"] != "aborted" and minor(row["approved"])
        )
        if row["period_number"] == str(period_number) and moved:
            lines[(row["transaction_type"], row["payment_method"])] += minor(row["approved"])
    return lines


def close_lines(report: pb.DayCloseReport) -> Counter[tuple[str, str]]:
    return Counter({(t.transaction_type, t.payment_method): t.total.amount_minor for t in report.totals})


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_reversal_after_its_payments_close_counts_in_the_next_and_rewrites_no_stored_close(
    tmp_path: Path, database: str
) -> None:
    """Pay 25.00 and 10.00, close, then reverse the 25.00 at the acquirer: the stored close still
    counts both; the reversal is a line of the next close, and the export's rows of each period are
    its close's lines, the reversed payment in the first."""
    with payment_world(tmp_path, database) as both:
        terminal, world = both.terminal, both.world
        assert terminal.pay(2_500, txn="late-reversed").response_code == "00"
        assert terminal.pay(1_000).response_code == "00"
        first = terminal.stub.DayClose(
            pb.DayCloseRequest(close_id="close-1"), metadata=terminal.metadata, timeout=20
        )
        assert terminal.reversal("late-reversed").response_code == "00"
        wait_until(lambda: not both.saf_pending())
        second = terminal.day_close()
        stored = world.backoffice.ListDayCloses(
            bo.DayCloseListRequest(terminal_id=terminal.terminal_id),
            metadata=world.admin_metadata,
            timeout=20,
        )
        assert list(stored.reports) == [first, second]
        again = terminal.stub.DayClose(
            pb.DayCloseRequest(close_id="close-1"), metadata=terminal.metadata, timeout=20
        )
        assert again == first
        standing_at_acquirer = 1_000 * len(both.host.record().approved_not_reversed())
        net = [(t.transaction_type, t.undoes, t.total.amount_minor) for t in (*first.totals, *second.totals)]
        taken = sum(-amount if undoes else amount for _, undoes, amount in net)
        assert (taken, standing_at_acquirer) == (1_000, 1_000), net
        today = dt.datetime.now(dt.UTC).astimezone(world.server.core.report_zone).date()
        rows = exported(
            world, bo.TransactionReportRequest(from_date=str(today), terminal_id=terminal.terminal_id)
        )
        assert (period_lines(rows, 1), period_lines(rows, 2)) == (close_lines(first), close_lines(second))


# One row per filter the portal offers: the filtered report, its export and the unfiltered export's
# rows that pass the filter are the same rows, with the same totals.
FILTERS: list[dict[str, list[str]]] = [
    {"types": ["redemption"]},
    {"types": ["cancel", "reversal"]},
    {"statuses": ["approved"]},
    {"statuses": ["declined", "reversed", "cancelled"]},
    {"payment_methods": ["stored_value"]},
    {"types": ["redemption"], "statuses": ["approved"], "payment_methods": ["stored_value"]},
]
FILTERED_COLUMNS = {"types": "transaction_type", "statuses": "status", "payment_methods": "payment_method"}


def test_each_filter_selects_the_same_rows_in_the_report_and_the_export(world: World) -> None:
    one_period_of_everything(world)
    today = str(dt.datetime.now(dt.UTC).astimezone(world.server.core.report_zone).date())
    every_row = exported(world, bo.TransactionReportRequest(from_date=today))
    mine = sign_in(world)
    for chosen in FILTERS:
        request = bo.TransactionReportRequest(from_date=today)
        for name, values in chosen.items():
            getattr(request, name).extend(values)
        report = stub(world).ListTransactions(request, metadata=mine, timeout=20)
        rows = exported(world, request)
        passing = [
            row["transaction_id"]
            for row in every_row
            if all(row[FILTERED_COLUMNS[name]] in values for name, values in chosen.items())
        ]
        assert passing, f"the scenario has no row for {chosen}"
        assert (
            [t.transaction_id for t in report.transactions] == [r["transaction_id"] for r in rows] == passing
        )
        assert sum(t.count for t in report.totals) == len(rows), chosen
        assert sum(t.approved.amount_minor for t in report.totals) == sum(minor(r["approved"]) for r in rows)
