"""The portal's transaction report over gRPC and its CSV export, on SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
from pathlib import Path

import grpc
import pytest
from sqlalchemy import update

from protocols.wire import backoffice_pb2 as bo
from switch import cli
from switch.domain.programmes import ProgrammeKind
from switch.store.schema import transactions
from tests.integration.harness import ADMIN_TOKEN, World

AMSTERDAM = "Europe/Amsterdam"


def report(world: World, **fields: object) -> bo.TransactionReport:
    today = dt.datetime.now(dt.UTC).date()
    values: dict[str, object] = {
        "from_date": (today - dt.timedelta(days=1)).isoformat(),
        "to_date": (today + dt.timedelta(days=1)).isoformat(),
        **fields,
    }
    request = bo.TransactionReportRequest(**values)  # type: ignore[arg-type]
    found: bo.TransactionReport = world.backoffice.ListTransactions(
        request, metadata=world.admin_metadata, timeout=20
    )
    return found


def a_shop_day(world: World) -> dict[str, str]:
    """Seven answered transactions on two terminals; the card numbers by role."""
    first, second = world.terminals
    gift, taxi = world.issue(5_000), world.issue(0, world.benefit_programme)
    assert first.redeem(gift, 1_000, "sale-1").response_code == "00"
    assert first.redeem(gift, 50_000, "too-much").response_code == "51"
    assert second.redeem(gift, 300, "sale-2").response_code == "00"
    assert first.load(taxi, 500, "taxi-load").response_code == "00"
    assert first.cancel("sale-1", txn="void-1").response_code == "00"
    assert second.reversal("sale-2").response_code == "00"
    second.reversal("never-arrived")  # stores a tombstone under that id, which is no transaction
    return {"gift": gift, "taxi": taxi}


def rows(found: bo.TransactionReport) -> list[tuple[str, str, str, str, str, int, int]]:
    return [
        (
            t.transaction_id,
            t.transaction_type,
            t.status,
            t.response_code,
            t.terminal_id,
            t.requested.amount_minor,
            t.approved.amount_minor,
        )
        for t in found.transactions
    ]


def totals(found: bo.TransactionReport) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    return {
        (t.transaction_type, t.payment_method, t.status, t.approved.currency): (
            t.count,
            t.approved.amount_minor,
        )
        for t in found.totals
    }


def test_the_report_lists_a_shop_day_with_totals_and_never_a_card_number(world: World) -> None:
    cards = a_shop_day(world)
    first, second = world.terminals
    found = report(world, time_zone=AMSTERDAM)
    assert rows(found) == [
        ("sale-1", "redemption", "cancelled", "00", first.terminal_id, 1_000, 1_000),
        ("too-much", "redemption", "declined", "51", first.terminal_id, 50_000, 0),
        ("sale-2", "redemption", "reversed", "00", second.terminal_id, 300, 300),
        ("taxi-load", "load", "approved", "00", first.terminal_id, 500, 500),
        ("void-1", "cancel", "approved", "00", first.terminal_id, 1_000, 1_000),
        ("reversal:sale-2", "reversal", "approved", "00", second.terminal_id, 300, 300),
        ("reversal:never-arrived", "reversal", "approved", "00", second.terminal_id, 0, 0),
    ]
    assert {t.device_name for t in found.transactions} == {"A77-0", "A77-1"}
    assert {t.merchant_id for t in found.transactions} == {world.merchant_id}
    assert all(t.time.endswith(("+01:00", "+02:00")) for t in found.transactions)
    assert found.time_zone == AMSTERDAM and not found.next_page_token
    # Totals are per type, method and status, and add up to the rows.
    expected: dict[tuple[str, str, str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for t in found.transactions:
        key = (t.transaction_type, t.payment_method, t.status, t.approved.currency)
        expected[key][0] += 1
        expected[key][1] += t.approved.amount_minor
    assert totals(found) == {key: (count, amount) for key, (count, amount) in expected.items()}
    assert totals(found)[("redemption", "stored_value", "declined", "EUR")] == (1, 0)
    # Only the masked number, ending in the card's last four digits.
    text = str(found)
    assert cards["gift"] not in text and cards["taxi"] not in text
    assert found.transactions[0].card_masked.endswith(cards["gift"][-4:])
    assert cards["gift"][6:12] not in found.transactions[0].card_masked


def test_filters_select_by_type_status_method_terminal_and_merchant(world: World) -> None:
    a_shop_day(world)
    _, second = world.terminals
    redemptions = report(world, types=["redemption"])
    assert [t.transaction_id for t in redemptions.transactions] == ["sale-1", "too-much", "sale-2"]
    assert set(totals(redemptions)) == {
        ("redemption", "stored_value", status, "EUR") for status in ("cancelled", "declined", "reversed")
    }
    declined = report(world, statuses=["declined"])
    assert rows(declined) == [
        ("too-much", "redemption", "declined", "51", declined.transactions[0].terminal_id, 50_000, 0)
    ]
    undone = report(world, types=["redemption", "load"], statuses=["reversed", "approved"])
    assert [t.transaction_id for t in undone.transactions] == ["sale-2", "taxi-load"]
    on_second = report(world, terminal_id=second.terminal_id)
    assert [t.transaction_id for t in on_second.transactions] == [
        "sale-2",
        "reversal:sale-2",
        "reversal:never-arrived",
    ]
    assert len(report(world, merchant_id=world.merchant_id).transactions) == 7
    other = world.server.core.admin.create_merchant("Other", "other-shop@example.test", "pw-other-1")
    nothing = report(world, merchant_id=other)
    assert (list(nothing.transactions), list(nothing.totals)) == ([], [])
    assert not report(world, payment_methods=["chip"]).transactions
    assert not report(world, from_date="2020-01-01", to_date="2020-01-31").transactions


def test_ticked_locations_select_their_terminals_transactions_and_each_row_names_its_location(
    world: World,
) -> None:
    cards = a_shop_day(world)
    admin = world.server.core.admin
    station_id = admin.add_location(world.merchant_id, "Station", "Stationsplein 1")
    (shop_id,) = [
        place.location_id for place in admin.list_locations(world.merchant_id) if place.name == "Shop"
    ]
    kiosk = world.activate("A77-K", location="Station")
    assert kiosk.redeem(cards["gift"], 200, "kiosk-1").response_code == "00"
    everything = report(world)
    assert {(t.location_id, t.location_name) for t in everything.transactions} == {
        (shop_id, "Shop"),
        (station_id, "Station"),
    }
    at_station = report(world, location_ids=[station_id])
    assert [
        (t.transaction_id, t.location_id, t.location_name, t.device_name) for t in at_station.transactions
    ] == [("kiosk-1", station_id, "Station", "A77-K")]
    assert totals(at_station) == {("redemption", "stored_value", "approved", "EUR"): (1, 200)}
    at_shop = report(world, location_ids=[shop_id], merchant_id=world.merchant_id)
    assert len(at_shop.transactions) == 7 and {t.location_name for t in at_shop.transactions} == {"Shop"}
    both = report(world, location_ids=[shop_id, station_id, shop_id])
    assert len(both.transactions) == 8 == len(everything.transactions)
    shop_redemptions = report(world, location_ids=[shop_id], types=["redemption"], statuses=["reversed"])
    assert [t.transaction_id for t in shop_redemptions.transactions] == ["sale-2"]


@pytest.mark.parametrize(
    ("location_ids", "status", "named"),
    [
        ([""], grpc.StatusCode.INVALID_ARGUMENT, "location_ids: an empty id"),
        ([f"loc_{n}" for n in range(101)], grpc.StatusCode.INVALID_ARGUMENT, "101 locations; at most 100"),
        (["loc_nowhere"], grpc.StatusCode.NOT_FOUND, "location_ids: 'loc_nowhere': no such location"),
    ],
)
def test_a_bad_location_is_refused_naming_it(
    world: World, location_ids: list[str], status: grpc.StatusCode, named: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        report(world, location_ids=location_ids)
    assert refused.value.code() == status
    assert named in (refused.value.details() or "")


def test_another_merchants_location_is_not_reported(world: World) -> None:
    a_shop_day(world)
    admin = world.server.core.admin
    other = admin.create_merchant("Other", "other-shop@example.test", "pw-other-1")
    elsewhere = admin.add_location(other, "Elsewhere")
    with pytest.raises(grpc.RpcError) as refused:
        report(world, merchant_id=world.merchant_id, location_ids=[elsewhere])
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"no such location of merchant '{world.merchant_id}'" in (refused.value.details() or "")
    assert not report(world, location_ids=[elsewhere]).transactions  # no terminal there


def test_pages_follow_each_other_without_gaps_or_repeats(world: World) -> None:
    a_shop_day(world)
    whole = report(world)
    pages, token = [], ""
    while True:
        page = report(world, page_size=4, page_token=token)
        pages.append(page)
        assert totals(page) == totals(whole)  # totals cover the whole selection on every page
        token = page.next_page_token
        if not token:
            break
    assert [len(p.transactions) for p in pages] == [4, 3]
    assert [t for p in pages for t in rows(p)] == rows(whole)
    exact = report(world, page_size=7)  # exactly one page: no token to a page that would be empty
    assert (len(exact.transactions), exact.next_page_token) == (7, "")


def test_a_day_is_the_shops_day_not_the_utc_day(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(10_000)
    # 29 March 2026: Amsterdam moves from UTC+1 to UTC+2 at 01:00 UTC; the day has 23 hours.
    stamps = {
        "late-on-28th": "2026-03-28T22:59:59",  # 23:59:59 in Amsterdam, 28 March
        "first-of-29th": "2026-03-28T23:00:00",  # 00:00 in Amsterdam, 29 March
        "last-of-29th": "2026-03-29T21:59:59",  # 23:59:59 CEST, 29 March
        "first-of-30th": "2026-03-29T22:00:00",  # 00:00 CEST, 30 March
    }
    for txn in stamps:
        assert terminal.redeem(card, 100, txn).response_code == "00"
    with world.server.core.store.engine.begin() as conn:
        for txn, stamp in stamps.items():
            moment = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
            conn.execute(
                update(transactions).where(transactions.c.transaction_id == txn).values(created_at=moment)
            )
    in_amsterdam = report(world, from_date="2026-03-29", to_date="", time_zone=AMSTERDAM)
    assert [t.transaction_id for t in in_amsterdam.transactions] == ["first-of-29th", "last-of-29th"]
    assert [t.time for t in in_amsterdam.transactions] == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T23:59:59+02:00",
    ]
    in_utc = report(world, from_date="2026-03-29", to_date="", time_zone="UTC")
    assert [t.transaction_id for t in in_utc.transactions] == ["last-of-29th", "first-of-30th"]
    # The switch's default zone is Europe/Amsterdam.
    by_default = report(world, from_date="2026-03-28", to_date="")
    assert (by_default.time_zone, [t.transaction_id for t in by_default.transactions]) == (
        AMSTERDAM,
        ["late-on-28th"],
    )


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"from_date": ""}, grpc.StatusCode.INVALID_ARGUMENT, "from_date is missing"),
        (
            {"from_date": "2026-02-30"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "from_date '2026-02-30' is not a date",
        ),
        ({"to_date": "2020-01-01"}, grpc.StatusCode.INVALID_ARGUMENT, "is before from_date"),
        ({"time_zone": "Mars/Olympus"}, grpc.StatusCode.INVALID_ARGUMENT, "time_zone 'Mars/Olympus'"),
        ({"types": ["redeem"]}, grpc.StatusCode.INVALID_ARGUMENT, "types: 'redeem' is not one of"),
        ({"statuses": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "statuses: '' is not one of"),
        ({"page_size": -5}, grpc.StatusCode.INVALID_ARGUMENT, "page_size -5"),
        ({"page_token": "next"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token 'next'"),
        (
            {"merchant_id": "mer_nobody"},
            grpc.StatusCode.NOT_FOUND,
            "merchant_id 'mer_nobody': no such merchant",
        ),
        (
            {"terminal_id": "trm_nobody"},
            grpc.StatusCode.NOT_FOUND,
            "terminal_id 'trm_nobody': no such terminal",
        ),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(
    world: World, fields: dict[str, object], status: grpc.StatusCode, named: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        report(world, **fields)
    assert refused.value.code() == status
    assert named in (refused.value.details() or "")


def test_another_merchants_terminal_is_not_reported(world: World) -> None:
    other = world.server.core.admin.create_merchant("Other", "other-shop@example.test", "pw-other-1")
    with pytest.raises(grpc.RpcError) as refused:
        report(world, merchant_id=other, terminal_id=world.terminals[0].terminal_id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"no such terminal of merchant '{other}'" in (refused.value.details() or "")


def test_the_export_writes_every_page_as_csv_with_amounts_in_euros(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cards = a_shop_day(world)
    token_dir = tmp_path / "admin"
    token_dir.mkdir()
    (token_dir / "admin.token").write_text(ADMIN_TOKEN)
    today = dt.datetime.now(dt.UTC).date()
    exit_code = cli.main(
        [
            "admin",
            "--data-dir",
            str(token_dir),
            "--target",
            world.server.address,
            "export-transactions",
            f"from_date={today - dt.timedelta(days=1)}",
            f"to_date={today + dt.timedelta(days=1)}",
            "types=redemption,load",
            "page_size=2",
        ]
    )
    output = capsys.readouterr().out
    assert exit_code == 0
    exported = list(csv.DictReader(io.StringIO(output)))
    assert [(r["transaction_id"], r["status"], r["requested"], r["approved"]) for r in exported] == [
        ("sale-1", "cancelled", "10.00", "10.00"),
        ("too-much", "declined", "500.00", "0.00"),
        ("sale-2", "reversed", "3.00", "3.00"),
        ("taxi-load", "approved", "5.00", "5.00"),
    ]
    assert {(r["currency"], r["location_name"]) for r in exported} == {("EUR", "Shop")}
    assert cards["gift"] not in output and cards["taxi"] not in output


def test_the_export_reports_a_refusal_and_writes_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    exit_code = cli.main(
        [
            "admin",
            "--data-dir",
            str(tmp_path),
            "--target",
            world.server.address,
            "export-transactions",
            "from_date=x",
        ]
    )
    captured = capsys.readouterr()
    assert exit_code == 1
    assert "INVALID_ARGUMENT: from_date 'x' is not a date" in captured.err
    assert captured.out == ""  # not even the header: a refused export is not an empty one


def summary(world: World, **fields: object) -> bo.MerchantSummary:
    today = dt.datetime.now(dt.UTC).date()
    values: dict[str, object] = {
        "merchant_id": world.merchant_id,
        "from_date": (today - dt.timedelta(days=1)).isoformat(),
        "to_date": (today + dt.timedelta(days=1)).isoformat(),
        **fields,
    }
    request = bo.MerchantSummaryRequest(**values)  # type: ignore[arg-type]
    found: bo.MerchantSummary = world.backoffice.GetMerchantSummary(
        request, metadata=world.admin_metadata, timeout=20
    )
    return found


def by_programme(found: bo.MerchantSummary) -> dict[str, tuple[int, int, int, int]]:
    return {
        p.programme_id: (p.redemptions, p.cards_redeemed, p.redeemed.amount_minor, p.owed.amount_minor)
        for p in found.programmes
    }


def test_the_merchant_summary_counts_standing_redemptions_and_lists_payouts(world: World) -> None:
    terminal = world.terminals[0]
    gift_1, gift_2 = world.issue(10_000), world.issue(10_000)
    taxi = world.issue(10_000, world.benefit_programme)
    assert terminal.redeem(gift_1, 1_000, "a").response_code == "00"
    assert terminal.redeem(gift_1, 500, "b").response_code == "00"
    assert terminal.redeem(gift_2, 2_000, "c").response_code == "00"
    assert terminal.reversal("c").response_code == "00"  # no longer stands
    assert terminal.refund("a", 200).response_code == "00"  # stands for 8.00
    assert terminal.redeem(gift_2, 50_000, "declined").response_code == "51"
    assert terminal.redeem(taxi, 700, "d").response_code == "00"
    before = summary(world)
    assert by_programme(before) == {
        world.gift_programme: (2, 1, 1_300, 1_300),
        world.benefit_programme: (1, 1, 700, 700),
    }
    assert not before.payouts
    # A settlement id may hold ':'.
    paid = world.backoffice.Settle(
        bo.SettleRequest(programme_id=world.gift_programme, settlement_id="2026:week-47"),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert [(p.gross.amount_minor, p.net.amount_minor) for p in paid.payouts] == [(1_300, 1_267)]
    assert terminal.redeem(gift_2, 400, "e").response_code == "00"
    after = summary(world, time_zone=AMSTERDAM)
    assert by_programme(after) == {
        world.gift_programme: (3, 2, 1_700, 400),
        world.benefit_programme: (1, 1, 700, 700),
    }
    assert [
        (p.programme_id, p.settlement_id, p.gross.amount_minor, p.commission.amount_minor, p.net.amount_minor)
        for p in after.payouts
    ] == [(world.gift_programme, "2026:week-47", 1_300, 33, 1_267)]
    assert after.payouts[0].time.endswith(("+01:00", "+02:00"))
    gift = next(p for p in after.programmes if p.programme_id == world.gift_programme)
    assert (gift.name, gift.commission_basis_points, gift.payout_interval_weeks) == ("Gift", 250, 4)
    assert after.merchant_name == "Shop"
    # Another period: nothing redeemed or paid then; what is owed is owed now.
    old = summary(world, from_date="2020-01-01", to_date="2020-01-31")
    assert by_programme(old) == {
        world.gift_programme: (0, 0, 0, 400),
        world.benefit_programme: (0, 0, 0, 700),
    }
    assert not old.payouts


@pytest.mark.parametrize(
    ("fields", "status", "named"),
    [
        ({"merchant_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "merchant_id is missing"),
        (
            {"merchant_id": "mer_nobody"},
            grpc.StatusCode.NOT_FOUND,
            "merchant_id 'mer_nobody': no such merchant",
        ),
        ({"from_date": "yesterday"}, grpc.StatusCode.INVALID_ARGUMENT, "from_date 'yesterday' is not a date"),
        ({"time_zone": "CET+5"}, grpc.StatusCode.INVALID_ARGUMENT, "time_zone 'CET+5'"),
    ],
)
def test_a_bad_summary_request_is_refused_naming_the_field(
    world: World, fields: dict[str, object], status: grpc.StatusCode, named: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        summary(world, **fields)
    assert refused.value.code() == status
    assert named in (refused.value.details() or "")


def test_a_cancel_declined_for_a_wrong_employee_pin_is_totalled_in_the_originals_currency(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = world.terminals[0]
    gift = world.issue(5_000)
    assert terminal.redeem(gift, 1_000, "sale-1").response_code == "00"
    assert terminal.cancel("sale-1", pin="0000", txn="void-wrong-pin").response_code == "55"
    assert terminal.cancel("sale-1", txn="void-1").response_code == "00"
    assert terminal.cancel("sale-1", txn="void-again").response_code != "00"  # the card actor declines
    found = report(world, types=["cancel"])
    assert totals(found) == {
        ("cancel", "stored_value", "approved", "EUR"): (1, 1_000),
        ("cancel", "stored_value", "declined", "EUR"): (2, 0),
    }
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    today = dt.datetime.now(dt.UTC).date()
    exit_code = cli.main(
        [
            "admin",
            "--data-dir",
            str(tmp_path),
            "--target",
            world.server.address,
            "export-transactions",
            f"from_date={today - dt.timedelta(days=1)}",
            f"to_date={today + dt.timedelta(days=1)}",
            "types=cancel",
        ]
    )
    exported = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert exit_code == 0
    assert [(r["transaction_id"], r["status"], r["currency"]) for r in exported] == [
        ("void-wrong-pin", "declined", "EUR"),
        ("void-1", "approved", "EUR"),
        ("void-again", "declined", "EUR"),
    ]


def test_a_cancel_of_no_original_of_ours_is_totalled_in_the_merchants_currency(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = world.terminals[0]
    gift = world.issue(5_000)
    assert terminal.redeem(gift, 1_000, "sale-1").response_code == "00"
    terminal.reversal("never-arrived")  # a tombstone under that id: no original to cancel
    for original, txn in [("no-such-sale", "void-unknown"), ("never-arrived", "void-tombstone")]:
        assert terminal.cancel(original, txn=txn).response_code == "25"
    assert terminal.cancel("sale-1", txn="void-1").response_code == "00"
    assert totals(report(world, types=["cancel"])) == {
        ("cancel", "stored_value", "approved", "EUR"): (1, 1_000),
        ("cancel", "stored_value", "declined", "EUR"): (2, 0),
    }
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    today = dt.datetime.now(dt.UTC).date()
    exit_code = cli.main(
        [
            "admin",
            "--data-dir",
            str(tmp_path),
            "--target",
            world.server.address,
            "export-transactions",
            f"from_date={today - dt.timedelta(days=1)}",
            f"to_date={today + dt.timedelta(days=1)}",
            "types=cancel",
        ]
    )
    exported = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert exit_code == 0
    assert [(r["transaction_id"], r["status"], r["currency"]) for r in exported] == [
        ("void-unknown", "declined", "EUR"),
        ("void-tombstone", "declined", "EUR"),
        ("void-1", "approved", "EUR"),
    ]


def test_a_cancel_of_no_original_of_ours_at_a_merchant_of_two_currencies_is_totalled_in_none(
    world: World,
) -> None:
    """Nothing says which of its currencies a cancel naming nothing of ours was in: none is made up."""
    admin = world.server.core.admin
    dollars = admin.create_programme("Dollars", ProgrammeKind.gift, "USD", "600109")
    admin.join_programme(world.merchant_id, dollars, 250)
    assert world.terminals[0].cancel("no-such-sale", txn="void-unknown").response_code == "25"
    assert totals(report(world, types=["cancel"])) == {("cancel", "stored_value", "declined", ""): (1, 0)}
