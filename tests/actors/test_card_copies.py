"""CardCopies: a stopped card actor's state for its successor, taken once, never an older one's."""

from __future__ import annotations

import dataclasses
import datetime as dt

from actors.card_copies import CardCopies, CardCopy
from switch.domain.card_rules import CardState
from switch.domain.cards import CardStatus
from switch.domain.programmes import Programme, ProgrammeKind

GIFT = Programme("prg_1", "Gift", ProgrammeKind.gift, "EUR", "600101", 100_000, None, 4, 36)


def copy(balance_minor: int, card_id: str = "card_1", programme: Programme = GIFT) -> CardCopy:
    expiry = dt.date(2030, 1, 1)
    return CardCopy(
        CardState(card_id, programme, "600101******0001", CardStatus.active, expiry, balance_minor), None
    )


def test_a_copy_left_at_stop_is_taken_by_the_next_start_only() -> None:
    copies = CardCopies()
    generation, nothing = copies.start("card_1")
    assert nothing is None  # never seen: the actor reads the card
    copies.leave("card_1", generation, copy(700))
    assert copies.start("card_1")[1] == copy(700)
    assert copies.start("card_1")[1] is None  # taken


def test_an_actor_that_stops_after_its_successor_started_leaves_nothing() -> None:
    copies = CardCopies()
    late, _ = copies.start("card_1")
    successor, _ = copies.start("card_1")  # the first one's stop timed out; a successor started
    copies.leave("card_1", late, copy(900))  # what the late one knew is older than the successor
    assert copies.start("card_1")[1] is None
    copies.leave("card_1", successor, copy(500))  # too late as well: another actor started since
    assert copies.start("card_1")[1] is None


def test_an_issued_card_starts_from_its_issue_unless_an_actor_started_first() -> None:
    copies = CardCopies()
    copies.issued("card_1", copy(2_500))
    assert copies.start("card_1")[1] == copy(2_500)
    copies.issued("card_1", copy(9_999))  # an actor has started since: its state is the one to keep
    assert copies.start("card_1")[1] is None


def test_a_forgotten_copy_is_not_taken() -> None:
    copies = CardCopies()
    generation, _ = copies.start("card_1")
    copies.leave("card_1", generation, copy(300))
    copies.forget("card_1")  # the balance moved to it around its actors
    assert copies.start("card_1")[1] is None
    assert len(copies) == 0


def test_an_actor_still_stopping_when_its_card_is_changed_around_it_leaves_nothing() -> None:
    copies = CardCopies()
    stopping, _ = copies.start("card_1")
    copies.forget("card_1")  # its stop timed out; the change landed meanwhile
    copies.leave("card_1", stopping, copy(400))  # what it knew before the change
    assert copies.start("card_1")[1] is None


def test_the_least_recently_touched_cards_are_forgotten_first() -> None:
    copies = CardCopies(size_max=2)
    for card_id in ("card_1", "card_2", "card_3"):
        copies.issued(card_id, copy(100, card_id))
    assert len(copies) == 2
    assert copies.start("card_1")[1] is None
    assert copies.start("card_3")[1] == copy(100, "card_3")


def test_a_card_issued_from_a_programme_changed_since_leaves_no_copy() -> None:
    stepped = dataclasses.replace(GIFT, load_step_minor=1_000)
    copies = CardCopies()
    copies.programme_changed(stepped)
    copies.issued("card_1", copy(0, "card_1"))  # the issue read the programme before the change
    copies.issued("card_2", copy(0, "card_2", stepped))  # after it
    other = dataclasses.replace(GIFT, programme_id="prg_2")
    copies.issued("card_3", copy(0, "card_3", other))  # another programme's card
    assert [copies.holds(card_id) for card_id in ("card_1", "card_2", "card_3")] == [False, True, True]
    assert copies.start("card_1")[1] is None  # its actor reads the card and the programme
