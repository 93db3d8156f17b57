"""Online top-ups of a benefit card: the holder starts one (Cardholder.StartTopUp), pays their part at
the PSP, and the PSP's confirmation (Backoffice.ConfirmTopUp) loads the card as a terminal's Load.

Real gRPC server on loopback, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.admin import ONLINE_TOP_UP, ONLINE_TOP_UP_EMAIL
from switch.domain import ledger
from switch.domain.cards import luhn_check_digit
from switch.store.schema import journal_entries, merchants, postings, top_ups, transactions
from tests.integration.harness import (
    ADMIN_TOKEN,
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    World,
    new_txn,
    world_fixture,
)
from tests.integration.test_card_replacement import replace
from tests.integration.test_portal import refusal

PSP_TOKEN = "test-psp-token"
STARTS_PER_MINUTE_MAX = 1_000  # the limit has a test of its own, with its own world


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request,
        tmp_path,
        terminals=1,
        cardholder_lookups_per_minute_max=STARTS_PER_MINUTE_MAX,
        psp_token=PSP_TOKEN,
    )


def holder(world: World) -> ch_grpc.CardholderStub:
    return ch_grpc.CardholderStub(world.channel)


def euros(amount_minor: int, currency: str = "EUR") -> pb.Amount:
    return pb.Amount(amount_minor=amount_minor, currency=currency)


def start(world: World, card: str, amount_minor: int, request_id: str = "") -> ch.TopUp:
    request = ch.StartTopUpRequest(
        card=pb.CardRef(card_number=card), amount=euros(amount_minor), request_id=request_id or new_txn()
    )
    answer: ch.TopUp = holder(world).StartTopUp(request, timeout=20)
    return answer


def confirm(
    world: World, top_up_id: str, psp_reference: str, paid_minor: int, token: str = ADMIN_TOKEN
) -> bo.TopUpRecord:
    request = bo.ConfirmTopUpRequest(
        top_up_id=top_up_id, psp_reference=psp_reference, amount_paid=euros(paid_minor)
    )
    metadata = (("authorization", f"Bearer {token}"),)
    answer: bo.TopUpRecord = world.backoffice.ConfirmTopUp(request, metadata=metadata, timeout=30)
    return answer


def listed(world: World, status: str = "") -> list[bo.TopUpRecord]:
    request = bo.ListTopUpsRequest(status=status)
    return list(world.backoffice.ListTopUps(request, metadata=world.admin_metadata, timeout=20).top_ups)


def balance(world: World, card: str) -> int:
    return world.terminals[0].balance(card)


def top_up_rows(world: World) -> int:
    with world.server.core.store.engine.connect() as conn:
        return len(conn.execute(select(top_ups.c.top_up_id)).all())


def block(world: World, card: str) -> None:
    world.backoffice.BlockCard(
        bo.BlockCardRequest(card=pb.CardRef(card_number=card), reason="stolen"),
        metadata=world.admin_metadata,
        timeout=20,
    )


def test_a_paid_top_up_loads_the_card_once_holder_and_city_sharing_it(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    online_before = world.server.core.terminals_online()
    started = start(world, card, 1_000, "r-1")
    assert (started.status, started.card_masked[-4:]) == ("pending", card[-4:])
    assert card not in str(started)
    # "Voor elke 5 euro op jouw kaart, moet je zelf maar 1,80 euro betalen": 10.00 costs 3.60.
    assert (started.holder_pays.amount_minor, started.funder_pays.amount_minor) == (360, 640)
    assert started.amount == euros(1_000)
    assert balance(world, card) == 0  # nothing moves before the holder paid
    loaded = confirm(world, started.top_up_id, "psp-1", 360)
    assert (loaded.status, loaded.psp_reference, loaded.amount_paid) == ("loaded", "psp-1", euros(360))
    assert balance(world, card) == 1_000
    status = holder(world).GetTopUp(ch.TopUpRequest(top_up_id=started.top_up_id), timeout=20)
    assert status.status == "loaded"
    # The PSP sends it again: the first answer, nothing loaded twice.
    assert confirm(world, started.top_up_id, "psp-1", 360) == loaded
    assert balance(world, card) == 1_000
    # Another payment for the same top-up loads nothing and says so.
    code, details = refusal(confirm, world, started.top_up_id, "psp-2", 360)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "another psp_reference" in details
    assert balance(world, card) == 1_000
    # The load is a terminal's: the card credited, the holder's part from the float, the city's
    # part from the funder, in one entry that balances.
    terminal_id = world.server.core.online_top_up_terminal(world.benefit_programme)
    with world.server.core.store.engine.connect() as conn:
        entry = conn.execute(
            select(postings.c.account_id, postings.c.amount_minor)
            .join(journal_entries, journal_entries.c.entry_id == postings.c.entry_id)
            .where(journal_entries.c.idempotency_key == f"txn:{terminal_id}:{started.top_up_id}")
        ).all()
        row = conn.execute(
            select(transactions).where(transactions.c.transaction_id == started.top_up_id)
        ).one()
    programme = world.benefit_programme
    assert dict(entry) == {
        ledger.card_account(world.server.core.cards.card_id(card) or ""): 1_000,
        ledger.programme_float_account(programme): -360,
        ledger.funder_account(programme): -640,
    }
    assert (row.source, row.transaction_type, row.cardholder_part_minor, row.funder_part_minor) == (
        terminal_id,
        "load",
        360,
        640,
    )
    assert world.ledger().unbalanced_entries == 0
    assert world.server.core.terminals_online() == online_before  # no device is online there


def test_a_start_sent_again_is_the_same_top_up_and_another_with_its_id_is_refused(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    first = start(world, card, 500, "same")
    assert start(world, card, 500, "same").top_up_id == first.top_up_id
    code, details = refusal(start, world, card, 1_000, "same")
    assert (
        code == grpc.StatusCode.ALREADY_EXISTS
        and details == "request_id 'same' started another top-up already"
    )
    assert top_up_rows(world) == 1


def test_a_start_sent_again_with_a_bad_amount_is_refused_naming_the_amount(world: World) -> None:
    """The request's own fault comes first: a known request id with a bad amount was ALREADY_EXISTS,
    as if the amount were fine and only the id taken."""
    card = world.issue(0, world.benefit_programme)
    first = start(world, card, 500, "again")
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[str, pb.Amount, str]] = [
        ("zero", euros(0), "amount must be positive"),
        ("negative", euros(-500), "amount must be positive"),
        ("huge", euros(10**12), "amount above 99999999 minor units"),
        ("not a step", euros(1_234), "amount: loads are in steps of 5.00 EUR"),
    ]
    for name, amount, named in cases:
        code, details = refusal(holder(world).StartTopUp, ask(card, amount, "again"), timeout=20)
        assert (code, details) == (invalid, named), name
    assert start(world, card, 500, "again").top_up_id == first.top_up_id  # still the same top-up
    assert (top_up_rows(world), balance(world, card)) == (1, 0)


AMOUNT_REFUSALS: list[tuple[str, pb.Amount, str]] = [
    ("other currency", euros(500, "USD"), "amount.currency: card is in EUR, request in USD"),
    ("unknown currency", euros(500, "XYZ"), "amount.currency: unknown currency 'XYZ'"),
    ("lower-case currency", euros(500, "eur"), "amount.currency must be a 3-letter ISO 4217 code"),
    ("empty currency", euros(500, ""), "amount.currency is missing"),
    ("zero", euros(0), "amount must be positive"),
    ("negative", euros(-500), "amount must be positive"),
    ("huge", euros(10**12), "amount above 99999999 minor units"),
]


def test_every_amount_a_start_refuses_is_refused_naming_the_amount_and_stores_nothing(world: World) -> None:
    """Audit after session 25: a start in another or an unknown currency was refused with the card
    rules' words ("card is in EUR, request in USD"), naming no field, where every other bad input
    of StartTopUp names its field. With a new request id and with one the card used already."""
    card = world.issue(0, world.benefit_programme)
    first = start(world, card, 500, "used")
    for request_id in ("new", "used"):
        for name, amount, named in AMOUNT_REFUSALS:
            code, details = refusal(holder(world).StartTopUp, ask(card, amount, request_id), timeout=20)
            assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, named), (name, request_id)
    assert [record.top_up_id for record in listed(world)] == [first.top_up_id]
    assert balance(world, card) == 0


def test_a_request_id_is_the_cards_own_so_no_caller_takes_anothers_first(world: World) -> None:
    """Callers have no login: an id shared by all, guessed and sent first with another card, made
    the holder's own start ALREADY_EXISTS (or, with the same card, gave the taker's top-up back)."""
    mine, theirs = world.issue(0, world.benefit_programme), world.issue(0, world.benefit_programme)
    taken = start(world, theirs, 1_000, "order-1")
    own = start(world, mine, 500, "order-1")
    assert own.top_up_id != taken.top_up_id and own.card_masked[-4:] == mine[-4:]
    assert start(world, mine, 500, "order-1").top_up_id == own.top_up_id  # sent again: the same
    assert start(world, theirs, 1_000, "order-1").top_up_id == taken.top_up_id
    assert confirm(world, own.top_up_id, "p-own-1", 180).status == "loaded"
    assert (balance(world, mine), balance(world, theirs), top_up_rows(world)) == (500, 0, 2)


FIVE_EUROS = pb.Amount(amount_minor=500, currency="EUR")
HOLDERS_PART_OF_FIVE = pb.Amount(amount_minor=180, currency="EUR")


def ask(
    card: str | None, amount: pb.Amount | None = FIVE_EUROS, request_id: str = "x"
) -> ch.StartTopUpRequest:
    request = ch.StartTopUpRequest(request_id=request_id)
    if card is not None:
        request.card.CopyFrom(pb.CardRef(card_number=card))
    if amount is not None:
        request.amount.CopyFrom(amount)
    return request


def told(
    top_up_id: str, psp_reference: str = "p", paid: pb.Amount | None = HOLDERS_PART_OF_FIVE
) -> bo.ConfirmTopUpRequest:
    request = bo.ConfirmTopUpRequest(top_up_id=top_up_id, psp_reference=psp_reference)
    if paid is not None:
        request.amount_paid.CopyFrom(paid)
    return request


UNKNOWN_ID = "tup_0000aaaa0000aaaa"
REFERENCE_USED = "psp_reference 'p-used' confirmed another top-up already"


def test_a_wrong_start_is_refused_naming_what_is_wrong_and_stores_nothing(world: World) -> None:
    taxi = world.issue(0, world.benefit_programme)
    full = world.issue(99_000, world.benefit_programme)
    gift = world.issue(1_000)
    blocked = world.issue(0, world.benefit_programme)
    block(world, blocked)
    other = taxi[:-2] + str((int(taxi[-2]) + 1) % 10)
    unknown = other + luhn_check_digit(other)
    invalid, precondition = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[str, ch.StartTopUpRequest, grpc.StatusCode, str]] = [
        ("no card", ask(None), invalid, "card is missing"),
        ("no amount", ask(taxi, None), invalid, "amount is missing"),
        ("no request id", ask(taxi, request_id=""), invalid, "request_id is missing"),
        ("long request id", ask(taxi, request_id="r" * 65), invalid, "request_id is longer than 64"),
        ("zero", ask(taxi, euros(0)), invalid, "amount must be positive"),
        ("negative", ask(taxi, euros(-500)), invalid, "amount must be positive"),
        ("huge", ask(taxi, euros(10**12)), invalid, "amount above 99999999 minor units"),
        ("not a step", ask(taxi, euros(1_234)), invalid, "amount: loads are in steps of 5.00 EUR"),
        ("other currency", ask(taxi, euros(500, "USD")), invalid, "amount.currency: card is in EUR"),
        ("bad currency", ask(taxi, euros(500, "eur")), invalid, "amount.currency must be a 3-letter"),
        ("malformed card", ask("12ab"), invalid, "card."),
        ("unknown card", ask(unknown), grpc.StatusCode.NOT_FOUND, f"card {unknown[:6]}"),
        ("gift card", ask(gift), precondition, "card 6001"),
        ("blocked", ask(blocked), precondition, "card 6001"),
        ("over the maximum", ask(full, euros(1_500)), precondition, "card 6001"),
    ]
    named = {
        "gift card": "is a gift card: only benefit cards are topped up online",
        "blocked": ": card is blocked",
        "over the maximum": "holds 990.00 EUR and may hold at most 1000.00 EUR",
    }
    for name, request, expected_code, begins in cases:
        code, details = refusal(holder(world).StartTopUp, request, timeout=20)
        assert (code, details.startswith(begins)) == (expected_code, True), (name, details)
        assert named.get(name, "") in details, (name, details)
        for number in (taxi, full, gift, blocked, unknown):
            assert number not in details, name
    assert top_up_rows(world) == 0
    assert (balance(world, taxi), balance(world, full)) == (0, 99_000)


def test_a_payment_that_cannot_load_leaves_the_top_up_refund_due_and_the_card_as_it_was(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switch.top_ups")
    wrong_amount, expired, blocked = (world.issue(0, world.benefit_programme) for _ in range(3))
    short = start(world, wrong_amount, 1_000)
    late = start(world, expired, 500)
    taken = start(world, blocked, 1_500)
    with world.server.core.store.engine.begin() as conn:  # its 30 minutes passed
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        conn.execute(update(top_ups).where(top_ups.c.top_up_id == late.top_up_id).values(expires_at=past))
    shown = holder(world).GetTopUp(ch.TopUpRequest(top_up_id=late.top_up_id), timeout=20)
    assert shown.status == "expired"
    block(world, blocked)  # blocked by phone after the holder started, before the PSP confirmed
    answers = {
        "wrong amount": confirm(world, short.top_up_id, "p-short", 350),
        "expired": confirm(world, late.top_up_id, "p-late", 180),
        "blocked": confirm(world, taken.top_up_id, "p-blocked", 540),
    }
    assert {name: answer.status for name, answer in answers.items()} == dict.fromkeys(answers, "refund_due")
    assert answers["wrong amount"].reason == "amount paid 3.50 EUR is not the holder's part 3.60 EUR"
    assert answers["expired"].reason.startswith("the top-up expired at ")
    assert (
        answers["blocked"].reason.startswith("card not loaded: ") and "blocked" in answers["blocked"].reason
    )
    for card in (wrong_amount, expired, blocked):
        assert balance(world, card) == 0
    # Logged for the operator as the sweep's refund_due is (before session 28 a confirmation's was
    # not): the top-up, the masked card and why; never the card number.
    owed = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "refund_due" in r.getMessage()
    ]
    expected = [
        f"top-up {top_up.top_up_id} of card {top_up.card_masked} is refund_due: the holder paid and the card "
        f"is not loaded: {answers[name].reason}"
        for name, top_up in (("wrong amount", short), ("expired", late), ("blocked", taken))
    ]
    assert owed == expected
    assert not any(card in caplog.text for card in (wrong_amount, expired, blocked))
    assert {record.top_up_id for record in listed(world, "refund_due")} == {
        short.top_up_id,
        late.top_up_id,
        taken.top_up_id,
    }
    assert listed(world, "loaded") == [] and world.ledger().unbalanced_entries == 0
    # The operator's list on the command line, with the reasons.
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    common = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address]
    assert cli.main([*common, "list-top-ups", "status=refund_due"]) == 0
    shown_list = json.loads(capsys.readouterr().out)["top_ups"]
    assert {each["reason"] for each in shown_list} == {answer.reason for answer in answers.values()}
    assert cli.main([*common, "list-top-ups", "status=late"]) == 1
    named = "status 'late' is not one of pending, confirming, loaded, refund_due, refunded, expired"
    assert named in capsys.readouterr().err
    # Paid back at the PSP, the operator marks it so; sent again, the same answer.
    refunded = [*common, "mark-top-up-refunded", f"top_up_id={short.top_up_id}"]
    assert cli.main([*refunded, "refund_reference=rf-1"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "refunded"
    assert cli.main([*refunded, "refund_reference=rf-1"]) == 0
    assert json.loads(capsys.readouterr().out)["refund_reference"] == "rf-1"
    assert cli.main([*refunded, "refund_reference=rf-2"]) == 1
    assert f"top-up {short.top_up_id} was refunded already, as 'rf-1'" in capsys.readouterr().err
    assert [record.top_up_id for record in listed(world, "refunded")] == [short.top_up_id]
    # The PSP's confirmation on the command line too: amounts in cents, EUR unless named.
    card = world.issue(0, world.benefit_programme)
    paid = start(world, card, 500)
    confirmed = [*common, "confirm-top-up", f"top_up_id={paid.top_up_id}", "psp_reference=p-cli"]
    assert cli.main([*confirmed, "amount_paid=180"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "loaded"
    assert balance(world, card) == 500
    loaded_one = [*common, "mark-top-up-refunded", f"top_up_id={paid.top_up_id}", "refund_reference=rf-3"]
    assert cli.main(loaded_one) == 1
    assert f"top-up {paid.top_up_id} is loaded, not refund_due: nothing to refund" in capsys.readouterr().err


def test_a_wrong_confirmation_is_refused_naming_what_and_loads_nothing(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 500)
    other = start(world, card, 500)
    assert confirm(world, other.top_up_id, "p-used", 180).status == "loaded"
    mine = started.top_up_id
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[str, bo.ConfirmTopUpRequest, grpc.StatusCode, str]] = [
        ("unknown", told(UNKNOWN_ID), grpc.StatusCode.NOT_FOUND, f"top_up_id {UNKNOWN_ID!r}: no such top-up"),
        ("no id", told(""), invalid, "top_up_id is missing"),
        ("bad id", told("tup\n1"), invalid, "top_up_id has characters other than printable ASCII"),
        ("long id", told("t" * 41), invalid, "top_up_id is longer than 40 characters"),
        ("no reference", told(mine, ""), invalid, "psp_reference is missing"),
        ("long reference", told(mine, "p" * 65), invalid, "psp_reference is longer than 64 characters"),
        ("no amount", told(mine, paid=None), invalid, "amount_paid is missing"),
        ("nothing paid", told(mine, paid=euros(0)), invalid, "amount_paid must be positive"),
        ("less than nothing", told(mine, paid=euros(-180)), invalid, "amount_paid must be positive"),
        ("reference used", told(mine, "p-used"), grpc.StatusCode.ALREADY_EXISTS, REFERENCE_USED),
    ]
    for name, request, expected_code, begins in cases:
        call = world.backoffice.ConfirmTopUp
        code, details = refusal(call, request, metadata=world.admin_metadata, timeout=20)
        assert (code, details.startswith(begins)) == (expected_code, True), (name, details)
    assert balance(world, card) == 500
    assert [record.status for record in listed(world, "pending")] == ["pending"]


PAID_REFUSALS: list[tuple[str, pb.Amount, str]] = [
    ("unknown currency", euros(180, "XYZ"), "amount_paid.currency: unknown currency 'XYZ'"),
    ("lower-case currency", euros(180, "eur"), "amount_paid.currency must be a 3-letter ISO 4217 code"),
    ("empty currency", euros(180, ""), "amount_paid.currency is missing"),
    ("zero", euros(0), "amount_paid must be positive"),
    ("negative", euros(-180), "amount_paid must be positive"),
    ("huge", euros(10**12), "amount_paid above 99999999 minor units"),
]


def test_every_amount_a_confirmation_refuses_is_refused_naming_amount_paid_and_stores_nothing(
    world: World,
) -> None:
    """Audit after session 25: a confirmation in a currency that does not exist was taken, and left
    the top-up refund_due in it, as if the holder had paid in it. Refused by name now, as every other
    bad amount_paid; the top-up stays pending and its reference unused, so the right one loads it."""
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 500)
    for name, paid, named in PAID_REFUSALS:
        call = world.backoffice.ConfirmTopUp
        code, details = refusal(call, told(started.top_up_id, "p-1", paid), metadata=world.admin_metadata)
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, named), name
    assert [(record.status, record.psp_reference) for record in listed(world)] == [("pending", "")]
    assert confirm(world, started.top_up_id, "p-1", 180).status == "loaded"
    assert balance(world, card) == 500


def test_only_the_admin_or_the_psp_confirms_and_the_psp_does_nothing_else(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 500)
    for token in ("", "wrong", "test-psp"):
        code, _ = refusal(confirm, world, started.top_up_id, "p-1", 180, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = refusal(
        world.backoffice.ListTopUps,
        bo.ListTopUpsRequest(),
        metadata=(("authorization", f"Bearer {PSP_TOKEN}"),),
        timeout=20,
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert balance(world, card) == 0
    assert confirm(world, started.top_up_id, "p-1", 180, PSP_TOKEN).status == "loaded"
    assert balance(world, card) == 500


def test_two_confirmations_at_once_load_once(world: World) -> None:
    rounds = 4
    cards = [world.issue(0, world.benefit_programme) for _ in range(rounds)]
    started = [start(world, card, 2_000) for card in cards]
    answers: list[bo.TopUpRecord | grpc.RpcError] = []
    lock = threading.Lock()

    def confirming(top_up_id: str, reference: str) -> Callable[[], None]:
        def run() -> None:
            try:
                answer: bo.TopUpRecord | grpc.RpcError = confirm(world, top_up_id, reference, 720)
            except grpc.RpcError as error:
                answer = error
            with lock:
                answers.append(answer)

        return run

    threads = []
    for index, top_up in enumerate(started):
        # Even rounds: the PSP's retry with the same reference; odd rounds: two payments.
        references = [f"p-{index}"] * 2 if index % 2 == 0 else [f"p-{index}-a", f"p-{index}-b"]
        threads += [threading.Thread(target=confirming(top_up.top_up_id, ref)) for ref in references]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [balance(world, card) for card in cards] == [2_000] * rounds
    loaded = [answer for answer in answers if isinstance(answer, bo.TopUpRecord)]
    refused = [answer for answer in answers if isinstance(answer, grpc.RpcError)]
    assert all(answer.status == "loaded" for answer in loaded)
    assert len(loaded) == rounds + rounds // 2 and len(refused) == rounds // 2
    assert all(error.code() == grpc.StatusCode.FAILED_PRECONDITION for error in refused)
    with world.server.core.store.engine.connect() as conn:
        loads = conn.execute(
            select(transactions.c.transaction_id).where(transactions.c.transaction_type == "load")
        )
        assert sorted(row[0] for row in loads if row[0].startswith("tup_")) == sorted(
            t.top_up_id for t in started
        )
    assert world.ledger().unbalanced_entries == 0


def test_a_confirmation_racing_a_block_never_loads_a_blocked_card(world: World) -> None:
    rounds = 6
    cards = [world.issue(0, world.benefit_programme) for _ in range(rounds)]
    started = [start(world, card, 500) for card in cards]
    answers: dict[str, str] = {}

    def confirming(index: int) -> None:
        answers[cards[index]] = confirm(world, started[index].top_up_id, f"race-{index}", 180).status

    threads = [threading.Thread(target=confirming, args=(index,)) for index in range(rounds)]
    threads += [threading.Thread(target=block, args=(world, card)) for card in cards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for card in cards:
        # Loaded before the block landed, or refused by it: never both, never neither.
        assert (answers[card], balance_of(world, card)) in (("loaded", 500), ("refund_due", 0)), card
    assert world.ledger().unbalanced_entries == 0


def balance_of(world: World, card: str) -> int:
    """A blocked card's balance (a terminal's Balance declines it)."""
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    return world.server.core.balance(card_id).balance_minor


def test_the_card_number_is_kept_nowhere_in_clear(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 500)
    confirm(world, started.top_up_id, "p-clear", 180)
    with world.server.core.store.engine.connect() as conn:
        stored = [str(row) for row in conn.execute(select(top_ups)).all()]
    assert stored and not any(card in row for row in stored)
    assert card not in caplog.text
    # The load is logged as a terminal's transaction is, by the top-up's id (it was logged nowhere).
    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "transaction"]
    assert [(r["transaction_id"], r["type"], r["response_code"]) for r in logged] == [
        (started.top_up_id, "load", "00")
    ]


@pytest.fixture(params=["sqlite"])
def limited_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, cardholder_lookups_per_minute_max=4)


def test_top_ups_count_with_balance_lookups_per_address(limited_world: World) -> None:
    world = limited_world
    card = world.issue(0, world.benefit_programme)
    stub = holder(world)
    stub.GetBalance(ch.CardholderBalanceRequest(card=pb.CardRef(card_number=card)), timeout=20)
    started = start(world, card, 500, "r")
    assert start(world, card, 500, "r").top_up_id == started.top_up_id
    stub.GetTopUp(ch.TopUpRequest(top_up_id=started.top_up_id), timeout=20)
    code, details = refusal(start, world, card, 500, "r")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("too many top-up requests from your address; try again in ")
    code, _ = refusal(
        stub.GetBalance, ch.CardholderBalanceRequest(card=pb.CardRef(card_number=card)), timeout=20
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert top_up_rows(world) == 1


def test_the_online_top_up_terminal_is_the_switchs_own_and_its_day_closes(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    assert confirm(world, start(world, card, 500).top_up_id, "p-day", 180).status == "loaded"
    core = world.server.core
    terminal_id = core.online_top_up_terminal(world.benefit_programme)
    listed_terminals = world.backoffice.ListTerminals(
        bo.ListTerminalsRequest(), metadata=world.admin_metadata, timeout=20
    ).terminals
    (online,) = [t for t in listed_terminals if t.terminal_id == terminal_id]
    assert (online.device_name, online.location) == (ONLINE_TOP_UP, world.benefit_programme)
    code, details = refusal(
        world.backoffice.DeactivateTerminal,
        bo.TerminalRequest(terminal_id=terminal_id),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "online top-up" in details
    activation = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL,
        password=MERCHANT_PASSWORD,
        device_name="Online Top-Up",
        location="Shop",
    )
    code, details = refusal(world.terminals[0].stub.Activate, activation, timeout=20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "online top-up" in details
    # Its day closes as the web back office's does: a normal close, listed with the terminals'.
    report = core.web_days.close_now(terminal_id)
    assert report is not None and report.sequence_number == 1
    closes = world.backoffice.ListDayCloses(
        bo.DayCloseListRequest(terminal_id=terminal_id), metadata=world.admin_metadata, timeout=20
    ).reports
    assert [close.sequence_number for close in closes] == [1]
    # Found again, not made twice.
    assert core.online_top_up_terminal(world.benefit_programme) == terminal_id


def test_a_confirmation_cut_short_is_finished_by_the_psps_next_one(world: World) -> None:
    """The switch stopped after taking the top-up, before the load's answer: it stays confirming,
    and the PSP's confirmation sent again loads the card once."""
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 1_000)
    taken = {"status": "confirming", "psp_reference": "p-cut", "amount_paid_minor": 360}
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(top_ups)
            .where(top_ups.c.top_up_id == started.top_up_id)
            .values(**taken, confirmed_at=dt.datetime.now(dt.UTC))
        )
    assert [record.status for record in listed(world, "confirming")] == ["confirming"]
    code, _ = refusal(confirm, world, started.top_up_id, "p-other", 360)
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # it is the first payment's
    assert confirm(world, started.top_up_id, "p-cut", 360).status == "loaded"
    assert confirm(world, started.top_up_id, "p-cut", 360).status == "loaded"
    assert balance(world, card) == 1_000 and world.ledger().unbalanced_entries == 0


def test_a_top_up_of_a_card_replaced_before_the_payment_loads_the_card_that_replaced_it(
    world: World,
) -> None:
    """Lost after the holder started, replaced at the office (twice: a chain) before the PSP
    confirmed: the load follows the card as other money on a replaced card does, once."""
    lost, first, last, later = (world.issue(0, world.benefit_programme) for _ in range(4))
    started = start(world, lost, 1_000)
    replace(world, lost, first)
    replace(world, first, last)
    loaded = confirm(world, started.top_up_id, "p-follow", 360)
    assert loaded.status == "loaded" and last[-4:] in loaded.reason and last not in loaded.reason
    assert confirm(world, started.top_up_id, "p-follow", 360) == loaded  # sent again: once
    assert [balance_of(world, card) for card in (lost, first, last)] == [0, 0, 1_000]
    # Cut short after the load (as test_a_confirmation_cut_short...), and that card replaced too:
    # the next confirmation finds the load made, and its money followed by the replacement.
    with world.server.core.store.engine.begin() as conn:
        cut = update(top_ups).where(top_ups.c.top_up_id == started.top_up_id)
        conn.execute(cut.values(status="confirming", reason=""))
    replace(world, last, later)
    assert confirm(world, started.top_up_id, "p-follow", 360).status == "loaded"
    assert [balance_of(world, card) for card in (lost, first, last, later)] == [0, 0, 0, 1_000]
    assert world.ledger().unbalanced_entries == 0


def set_load_step(world: World, programme_id: str, load_step_minor: int) -> None:
    request = bo.SetLoadStepRequest(programme_id=programme_id, load_step_minor=load_step_minor)
    world.backoffice.SetLoadStep(request, metadata=world.admin_metadata, timeout=20)


def test_a_top_up_paid_after_a_load_step_change_loads_what_was_started(world: World) -> None:
    """Started for 5.00 in steps of 5.00, the step then made 10.00, then paid: the holder paid the
    price quoted at the start, so that is loaded (it was left refund_due, declined 13). Terminal
    loads, and top-ups started after the change, take the new step."""
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 500)
    assert started.holder_pays.amount_minor == 180
    set_load_step(world, world.benefit_programme, 1_000)
    loaded = confirm(world, started.top_up_id, "p-step", 180)
    assert (loaded.status, balance(world, card)) == ("loaded", 500), loaded.reason
    assert confirm(world, started.top_up_id, "p-step", 180) == loaded  # sent again: once
    assert world.terminals[0].load(card, 500).response_code == "13"  # not a whole step of 10.00
    code, details = refusal(start, world, card, 500)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "steps of 10.00" in details, details
    assert world.terminals[0].load(card, 1_000).response_code == "00"
    assert balance(world, card) == 1_500 and world.ledger().unbalanced_entries == 0


def test_a_payment_in_another_currency_is_kept_in_it_and_refund_due(world: World) -> None:
    card = world.issue(0, world.benefit_programme)
    started = start(world, card, 1_000)
    request = told(started.top_up_id, "p-usd", euros(360, "USD"))
    answer = world.backoffice.ConfirmTopUp(request, metadata=world.admin_metadata, timeout=30)
    assert answer.status == "refund_due"
    assert answer.reason == "amount paid 3.60 USD is not the holder's part 3.60 EUR"
    # What the holder paid is what is refunded: in the currency they paid in.
    assert answer.amount_paid == euros(360, "USD")
    (shown,) = listed(world, "refund_due")
    assert shown.amount_paid == euros(360, "USD")
    # The same reference told again in euros is not the same payment.
    code, details = refusal(confirm, world, started.top_up_id, "p-usd", 360)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.endswith("already, with amount_paid 3.60 USD"), details
    assert balance(world, card) == 0


# Currencies that exist (ISO 4217) in which the switch issues no card: a payment made in one is a payment.
PAID_IN_CURRENCIES_NOT_TAKEN = ["HUF", "AUD", "RON"]


def test_a_payment_in_a_real_currency_the_switch_takes_no_card_in_is_refund_due_in_it(world: World) -> None:
    """Review of session 26: ConfirmTopUp refused an amount_paid in any currency outside the ten the
    switch takes (INVALID_ARGUMENT "unknown currency 'HUF'") and stored nothing, though the holder
    had paid in it: no refund_due was left to pay them back. Only a code that is no currency is refused."""
    for currency in PAID_IN_CURRENCIES_NOT_TAKEN:
        card = world.issue(0, world.benefit_programme)
        started = start(world, card, 1_000)
        request = told(started.top_up_id, f"p-{currency}", euros(360, currency))
        answer = world.backoffice.ConfirmTopUp(request, metadata=world.admin_metadata, timeout=30)
        assert (answer.status, answer.amount_paid) == ("refund_due", euros(360, currency)), currency
        assert balance(world, card) == 0, currency
    shown = sorted(record.amount_paid.currency for record in listed(world, "refund_due"))
    assert shown == sorted(PAID_IN_CURRENCIES_NOT_TAKEN)


def test_no_login_takes_the_online_top_up_merchants_address(world: World) -> None:
    """A merchant made with it before the first top-up became the switch's own, with a password
    someone knows: a portal and terminals at a merchant that takes every programme topped up."""
    request = bo.CreateMerchantRequest(name="Sly", email=ONLINE_TOP_UP_EMAIL.upper(), password="x" * 16)
    code, details = refusal(
        world.backoffice.CreateMerchant, request, metadata=world.admin_metadata, timeout=20
    )
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"e-mail {ONLINE_TOP_UP_EMAIL} is the switch's own",
    )
    employee = bo.AddEmployeeRequest(
        merchant_id=world.merchant_id,
        employee_number="77",
        name="Sly",
        pin="4321",
        role="cashier",
        email=ONLINE_TOP_UP_EMAIL,
        password="x" * 16,
    )
    code, details = refusal(world.backoffice.AddEmployee, employee, metadata=world.admin_metadata, timeout=20)
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"e-mail {ONLINE_TOP_UP_EMAIL} is the switch's own",
    )
    card = world.issue(0, world.benefit_programme)
    assert confirm(world, start(world, card, 500).top_up_id, "p-own", 180).status == "loaded"
    with world.server.core.store.engine.connect() as conn:
        names = conn.execute(
            select(merchants.c.name).where(merchants.c.email == ONLINE_TOP_UP_EMAIL)
        ).scalars()
        assert list(names) == ["Online top-up"]
