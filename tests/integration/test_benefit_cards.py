"""The city benefit card (taxi vouchers) and its holder, as the session 22 audit found them; each
test failed before its fix.

- Expiry: the holder saw `active` on a card past its last day; a card issued just after midnight
  in Amsterdam, or on the 29th-31st of a month, lost a day or three of its validity; a programme
  could issue its cards already expired.
- A lost card ("Jouw Voordeelkaart wordt meteen geblokkeerd. Het resterende bedrag ... ben je niet
  kwijt", seed 002): blocked by phone, then replaced, it still showed `blocked`; its balance could
  go onto an expired card or take the new card past the programme's maximum; a reused request id
  answered INTERNAL after blocking the card; a ride reversed after the replacement stayed on the
  lost card; A onto B while B onto C left A's money on B.
- A shop outside the programme used up the holder's card PIN tries (and learnt the right PIN
  from 58 against 55); over IPv6 every connection had its own lookup limit; a programme whose
  holder pays all still showed a co-payment.

Real gRPC on loopback and a real SQLite file. Where a test needs a moment of the day it sets the
wall clock the switch reads (clock_at: the `datetime` module of switch.admin, as freezegun would).
"""

from __future__ import annotations

import datetime
import datetime as dt
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from sqlalchemy import select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch.admin import Admin
from switch.domain.programmes import ProgrammeKind
from switch.store.card_pins import CardPinStore
from switch.store.repository import Store
from switch.store.schema import accounts, cards
from tests.integration.harness import World, clock_at, new_txn, world_fixture
from tests.integration.payment_harness import wait_until
from tests.integration.test_benefit_and_payouts import outsider_terminal
from tests.integration.test_card_pins import redeem_with_pin
from tests.integration.test_card_replacement import replace

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
PIN = "4719"
WRONG_PIN = "1111"


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def look_up(world: World, number: str) -> ch.CardholderBalance:
    """The holder's own lookup ("Saldo bekijken"), by the number on the back of the card."""
    stub = ch_grpc.CardholderStub(world.channel)
    request = ch.CardholderBalanceRequest(card=pb.CardRef(card_number=number))
    answer: ch.CardholderBalance = stub.GetBalance(request, timeout=20)
    return answer


def account_balance(world: World, account_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        found = conn.execute(select(accounts.c.balance_minor).where(accounts.c.account_id == account_id))
        return int(found.scalar_one())


def card_balance(world: World, number: str) -> int:
    card_id = world.server.core.cards.card_id(number)
    return account_balance(world, f"card:{card_id}")


def assert_ledger_clean(world: World) -> None:
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (
        0,
        0,
        0,
    ), check.problems


def issue_card_that_expired(world: World, programme_id: str, load_minor: int, expiry: datetime.date) -> str:
    """A card issued long ago whose last day (its expiry date) has passed: issued in the database
    by an Admin of its own (as another node would, so no live copy of it is kept), then its expiry
    date set back, before any actor of the switch has read it."""
    core = world.server.core
    other_node = Admin(Store(core.store.engine), bytes.fromhex(core.settings.card_hash_key_hex))
    card = other_node.issue_card(programme_id, load_minor)
    with core.store.engine.begin() as conn:
        conn.execute(update(cards).where(cards.c.card_id == card.card_id).values(expiry=expiry))
    return card.card_number


# --- expiry ---


def test_a_card_past_its_expiry_date_shows_expired_to_its_holder(world: World) -> None:
    """The terminal declines the card 54 (expired), yet the holder's own lookup calls it `active`:
    nothing ever sets a card's state to `expired`, and the lookup shows the stored state only."""
    last_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    card = issue_card_that_expired(world, world.benefit_programme, 1_000, last_day)
    ride = world.terminals[0].redeem(card, 100)
    assert ride.response_code == "54", (ride.response_code, ride.message)  # the switch knows
    seen = look_up(world, card)
    assert seen.expiry_date == last_day.isoformat()
    assert seen.card_status == "expired", (
        f"holder sees {seen.card_status!r} on a card that expired {last_day}"
    )


def test_a_card_issued_just_after_midnight_in_amsterdam_is_valid_its_full_validity(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issued on 15 June 2026 at 00:30 in Amsterdam with 36 months' validity, the card should last
    until 15 June 2029; its expiry is counted from the UTC date (14 June), a day short."""
    issued_at = dt.datetime(2026, 6, 15, 0, 30, tzinfo=AMSTERDAM)
    monkeypatch.setattr("switch.admin.dt", clock_at(issued_at))
    card = world.issue(0, world.benefit_programme)
    assert look_up(world, card).expiry_date == "2029-06-15"


@pytest.mark.parametrize(("issued", "last_day"), [("2026-01-31", "2029-01-31"), ("2026-03-30", "2029-03-30")])
def test_a_card_issued_late_in_a_month_is_valid_its_full_validity(
    world: World, monkeypatch: pytest.MonkeyPatch, issued: str, last_day: str
) -> None:
    """36 months from 31 January 2026 is 31 January 2029; switch/admin.py _add_months cuts every
    day after the 28th to the 28th (`min(day.day, 28)`), so a card issued on the 29th to 31st of
    any month loses up to three days of its validity, even in months that have those days."""
    issued_at = dt.datetime.combine(dt.date.fromisoformat(issued), dt.time(12, 0), AMSTERDAM)
    monkeypatch.setattr("switch.admin.dt", clock_at(issued_at))
    card = world.issue(0, world.benefit_programme)
    assert look_up(world, card).expiry_date == last_day


def test_a_programme_whose_cards_would_be_issued_expired_is_refused(world: World) -> None:
    """CreateProgramme checks every other number (balance maximum, co-payment, payout weeks) but
    takes a negative card_validity_months: every card of that programme is issued already
    expired, its initial load (the city's money among it) unusable from the start."""
    request = bo.CreateProgrammeRequest(
        name="Taxi 2",
        kind=bo.PROGRAMME_KIND_BENEFIT,
        currency="EUR",
        card_prefix="600109",
        copay_numerator_minor=180,
        copay_denominator_minor=500,
        funder_name="City",
        card_validity_months=-12,
    )
    try:
        created = world.backoffice.CreateProgramme(request, metadata=world.admin_metadata, timeout=20)
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
        assert "card_validity_months" in (refused.details() or "")
        return
    issued = world.backoffice.IssueCard(
        bo.IssueCardRequest(
            programme_id=created.programme_id,
            initial_load=pb.Amount(amount_minor=5_000, currency="EUR"),
            request_id=new_txn(),
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    pytest.fail(f"programme created; its new card expires {issued.card.expiry_date}, before it was issued")


# --- a lost card ---


def block(world: World, number: str, reason: str = "lost") -> bo.CardView:
    request = bo.BlockCardRequest(card=pb.CardRef(card_number=number), reason=reason)
    return world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20)


def test_a_card_blocked_by_phone_then_replaced_at_the_office_shows_lost(world: World) -> None:
    """The seed's own order: blocked at once (BlockCard), the balance moved at the office later.
    README: the holder's lookup shows `lost` "once its balance moved to a new card". A card
    replaced while active is shown `lost`; one blocked first stays `blocked` after its balance
    moved, so the holder (and the terminal's 62 instead of 41) is not told where the money went."""
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    block(world, lost)
    moved = replace(world, lost, new)
    assert moved.moved.amount_minor == 2_000
    seen = look_up(world, lost)
    assert (seen.card_status, seen.balance.amount_minor) == ("lost", 0), seen.card_status
    assert moved.lost_card.status == "lost"


def test_the_balance_is_not_moved_onto_an_expired_card(world: World) -> None:
    """ReplaceCard refuses a replacement card that is blocked or lost (`new.status is not active`)
    but looks at the stored state only, never at the expiry date: the holder's 20.00 land on a card
    every terminal declines 54, and the lost card is blocked for good."""
    lost = world.issue(2_000, world.benefit_programme)
    old_stock = issue_card_that_expired(
        world, world.benefit_programme, 0, dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    )
    try:
        moved = replace(world, lost, old_stock)
    except grpc.RpcError as refused:
        assert refused.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        assert "expired" in (refused.details() or "")
        assert card_balance(world, lost) == 2_000
        return
    ride = world.terminals[0].redeem(old_stock, 500)
    pytest.fail(
        f"moved {moved.moved.amount_minor} onto a card that expired "
        f"{look_up(world, old_stock).expiry_date}; a ride on it: {ride.response_code} {ride.message}"
    )


def test_a_replacement_does_not_take_the_new_card_over_the_programme_maximum(world: World) -> None:
    """The programme's maximum (100.00 in the test world) holds for every credit to a card: a load
    past it is declined 61, a refund too, and the journal refuses a card credit above it
    (docs/audits.md: a card above its programme's maximum was a bug). The transfer's credit to
    the new card carries no ceiling, so a replacement onto a card that holds money leaves it at
    180.00."""
    programme = world.server.core.store.programme(world.benefit_programme)
    lost = world.issue(90_000, world.benefit_programme)
    new = world.issue(90_000, world.benefit_programme)
    try:
        replace(world, lost, new)
    except grpc.RpcError as refused:
        assert refused.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    held = card_balance(world, new)
    assert_ledger_clean(world)
    assert held <= programme.balance_max_minor, (
        f"the new card holds {held}, above the programme maximum {programme.balance_max_minor}"
    )


def test_a_request_id_used_for_another_replacement_is_refused_by_name(world: World) -> None:
    """An operator reuses a request_id (r-1) for the next holder's replacement. The transfer's
    journal key `transfer:<request_id>` is taken, the write conflicts and the actor raises: the
    answer is INTERNAL ("a fault of the switch's own"), after the second holder's card was already
    set `lost`. README: a request that would create what exists is ALREADY_EXISTS naming it."""
    first_lost, first_new = (
        world.issue(1_000, world.benefit_programme),
        world.issue(0, world.benefit_programme),
    )
    second_lost, second_new = (
        world.issue(500, world.benefit_programme),
        world.issue(0, world.benefit_programme),
    )
    replace(world, first_lost, first_new, "r-1")
    with pytest.raises(grpc.RpcError) as refused:
        replace(world, second_lost, second_new, "r-1")
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS, (
        refused.value.code(),
        refused.value.details(),
    )
    assert "r-1" in (refused.value.details() or "")


def test_a_ride_reversed_after_the_replacement_reaches_the_holders_new_card(world: World) -> None:
    """A ride of 7.00 whose answer the taxi's terminal lost is reversed (as it must be, in the same
    day) after the office moved the card's balance: the reversal credits the lost card, which is
    blocked for good, so the 7.00 sit where no terminal takes them and the holder's new card lacks
    them. "Het resterende bedrag ... ben je niet kwijt" (seed 002)."""
    terminal = world.terminals[0]
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    assert terminal.redeem(lost, 700, "ride-1").response_code == "00"
    assert replace(world, lost, new).moved.amount_minor == 1_300
    reversal = terminal.reversal("ride-1")
    assert reversal.response_code == "00", (reversal.response_code, reversal.message)
    wait_until(lambda: look_up(world, new).balance.amount_minor == 2_000)  # it follows the replacement
    assert_ledger_clean(world)
    usable = look_up(world, new).balance.amount_minor
    stranded = look_up(world, lost).balance.amount_minor
    assert (usable, stranded) == (2_000, 0), f"new card {usable}, left on the lost card {stranded}"


def test_a_chain_of_replacements_at_the_same_moment_leaves_no_money_on_a_replaced_card(
    world: World,
) -> None:
    """Two office clerks at once: one moves lost card A onto card B, the other (B reported lost in
    turn) moves B onto C. core.replace_card checks that B is active (a read of the store), then
    moves A's balance onto it later, unconditionally; when B was replaced in between, A's money
    lands on B after B's own transfer: both answers say done, and A's balance sits on a replaced
    card no terminal takes (seen in about one round in six; 100 rounds are tried)."""
    core = world.server.core
    stranded = []
    with ThreadPoolExecutor(4) as pool:  # issued together, before: the rounds race only the moves
        cards = list(
            pool.map(lambda amount: world.issue(amount, world.benefit_programme), [1_000, 500, 0] * 100)
        )
    for round_number in range(100):
        a, b, c = cards[3 * round_number : 3 * round_number + 3]

        def move(pair: tuple[str, str]) -> str:
            try:
                return str(replace(world, *pair).moved.amount_minor)
            except grpc.RpcError as refused:
                return refused.code().name

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(move, [(a, b), (b, c)]))
        b_id = core.cards.card_id(b)
        assert b_id is not None
        if core.store.card_replaced_by(b_id) and card_balance(world, b):
            stranded.append((round_number, answers, card_balance(world, b), card_balance(world, c)))
    assert_ledger_clean(world)
    assert stranded == [], (
        f"{len(stranded)} of 100 rounds left money on replaced card B; first (round, answers A->B "
        f"and B->C, left on B, on C): {stranded[0]}"
    )


# --- PINs and lookups ---


def test_a_shop_outside_the_programme_cannot_use_up_the_holders_pin_tries(world: World) -> None:
    """A redemption at a merchant outside the card's programme is declined 58, but the card PIN is
    checked first (actors/card_actor.py _redeem: _pin_decline before merchant_accepts): any
    merchant with a terminal on the switch counts wrong tries against a taxi card, blocks its PIN
    with three, and learns a right PIN from the answer (58 for the right one, 55 for a wrong one).
    The holder's next ride at a real taxi company is then declined 75."""
    taxi_company = world.terminals[0]
    kiosk = outsider_terminal(world)
    taxi_key, kiosk_key = secrets.token_bytes(16), secrets.token_bytes(16)
    world.server.core.pins.install_terminal_pin_key(taxi_company.terminal_id, taxi_key)
    world.server.core.pins.install_terminal_pin_key(kiosk.terminal_id, kiosk_key)
    card = world.issue(2_000, world.benefit_programme)
    world.backoffice.SetCardPin(
        bo.SetCardPinRequest(card=pb.CardRef(card_number=card), pin=PIN),
        metadata=world.admin_metadata,
        timeout=20,
    )
    answers = [redeem_with_pin(kiosk, kiosk_key, card, WRONG_PIN).response_code for _ in range(3)]
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    stored = CardPinStore(world.server.engine).load(card_id)
    assert stored is not None
    ride = redeem_with_pin(taxi_company, taxi_key, card, PIN, 500)
    assert (answers, stored.failed_tries, ride.response_code) == (["58", "58", "58"], 0, "00"), (
        f"outsider got {answers}, {stored.failed_tries} wrong tries counted; "
        f"the holder's ride with the right PIN: {ride.response_code} {ride.message}"
    )


@pytest.fixture(params=["sqlite"])
def ipv6_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(
        request, tmp_path, terminals=0, grpc_host="[::1]", cardholder_lookups_per_minute_max=3
    )


def test_lookups_over_ipv6_are_limited_per_address_not_per_connection(ipv6_world: World) -> None:
    """README: lookups are limited per caller address, 20 a minute. gRPC names an IPv6 peer
    "ipv6:%5B::1%5D:51332" (brackets percent-encoded); switch/caller_limit.py caller_address expects
    "ipv6:[::1]:..." and otherwise keeps the whole peer, port included, so over IPv6 each new
    connection is a new caller and card numbers can be tried at the switch's speed."""
    world = ipv6_world
    card = world.issue(1_000, world.benefit_programme)
    answers = []
    for _ in range(6):
        # A new connection each time (channels to one address share one otherwise).
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(world.server.address, options=options) as channel:
            stub = ch_grpc.CardholderStub(channel)
            request = ch.CardholderBalanceRequest(card=pb.CardRef(card_number=card))
            try:
                stub.GetBalance(request, timeout=20)
                answers.append("OK")
            except grpc.RpcError as refused:
                answers.append(refused.code().name)
    assert answers == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 3, answers


def test_a_benefit_programme_whose_holder_pays_all_shows_no_co_payment(world: World) -> None:
    """cardholder.proto: holder_pays and per_loaded are "both absent when the holder pays all of
    it". A programme with a co-payment of 5.00 per 5.00 still shows "5.00 per 5.00 loaded"."""
    admin = world.server.core.admin
    programme = admin.create_programme(
        "Full price", ProgrammeKind.benefit, "EUR", "600108", balance_max_minor=100_000, copay=(500, 500)
    )
    seen = look_up(world, world.issue(0, programme))
    assert not seen.HasField("holder_pays") and not seen.HasField("per_loaded"), (
        seen.holder_pays.amount_minor,
        seen.per_loaded.amount_minor,
    )
