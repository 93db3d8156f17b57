"""Inbound 0100/0200 sent again over real TCP: the same acquirer, field 41, STAN and field 37 name one
sale whatever field 7 the resend carries; it gets the first answer and moves nothing."""

from __future__ import annotations

import itertools

import pytest

from protocols.iso8583 import IsoMessage, format_amount
from tests.integration.harness import World
from tests.integration.test_inbound_iso import (
    IsoClient,
    balance,
    completion_of,
    financial,
    ledger_clean,
    reversal_of,
)
from tests.integration.test_inbound_reversals import any_world, world

__all__ = ["any_world", "world"]  # fixtures

RESENT_WHEN = "1121120005"  # field 7 of a resend, five seconds after the first's
REFERENCES = itertools.count(500_000)


def sale(card: str, amount_minor: int, *, kind: str = "0200") -> IsoMessage:
    return {**financial(card, amount_minor), "t": kind, "37": f"{next(REFERENCES):012d}"}


@pytest.mark.parametrize("kind", ["0200", "0100"])
def test_a_sale_resent_under_a_new_field_7_gets_the_first_answer_and_moves_money_once(
    any_world: World, kind: str
) -> None:
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300, kind=kind)
    first = client.ask(first_sent)
    again = client.ask({**first_sent, "7": RESENT_WHEN})
    client.close()
    assert first["39"] == "00"
    assert (again["39"], again["38"]) == (first["39"], first["38"])  # it was approved twice: 600 taken
    assert balance(world, card) == 700
    ledger_clean(world)


def test_a_resend_with_another_amount_is_refused_94_and_moves_nothing(any_world: World) -> None:
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    assert client.ask(first_sent)["39"] == "00"
    other = client.ask({**first_sent, "7": RESENT_WHEN, "4": format_amount(200)})
    client.close()
    assert (other["39"], "38" in other) == ("94", False)
    assert balance(world, card) == 700
    ledger_clean(world)


@pytest.mark.parametrize(("first_names", "then_names"), [("first", "resend"), ("resend", "first")])
def test_a_reversal_naming_either_field_7_reverses_the_sale_once(
    world: World, first_names: str, then_names: str
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    resent = {**first_sent, "7": RESENT_WHEN}
    assert client.ask(first_sent)["39"] == client.ask(resent)["39"] == "00"
    by_name = {"first": first_sent, "resend": resent}
    for names, kind in ((first_names, "0400"), (then_names, "0420")):
        reversal = {**reversal_of(by_name[names], kind=kind), "37": first_sent["37"]}
        assert client.ask(reversal)["39"] == "00", names
        assert balance(world, card) == 1_000  # given back once, not twice
    client.close()
    ledger_clean(world)


@pytest.mark.parametrize("kind", ["0400", "0420"])
def test_a_reversal_without_field_37_naming_the_resends_field_7_reverses_the_sale_once(
    any_world: World, kind: str
) -> None:
    """The resend answered as its first is remembered by its own field 7: nothing else names it
    without field 37 (it was held as never seen, the card left charged)."""
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    resent = {**first_sent, "7": RESENT_WHEN}
    assert client.ask(first_sent)["39"] == client.ask(resent)["39"] == "00"
    assert client.ask(reversal_of(resent, kind=kind))["39"] == "00"  # no field 37
    assert balance(world, card) == 1_000
    assert client.ask(reversal_of(first_sent, kind="0420"))["39"] == "00"  # the same reversal
    client.close()
    assert balance(world, card) == 1_000  # given back once
    ledger_clean(world)


def test_a_completion_without_field_37_naming_the_resends_field_7_completes_the_authorisation(
    world: World,
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    authorised = sale(card, 400, kind="0100")
    resent = {**authorised, "7": RESENT_WHEN}
    assert client.ask(authorised)["39"] == client.ask(resent)["39"] == "00"
    assert client.ask(completion_of(resent, 250))["39"] == "00"  # no field 37
    client.close()
    assert balance(world, card) == 750  # 150 given back of the 400 taken
    ledger_clean(world)


def test_an_advice_before_its_original_holds_it_under_any_field_7(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    late = sale(card, 400)
    advice = {**reversal_of({**late, "7": RESENT_WHEN}, kind="0420"), "37": late["37"]}
    assert client.ask(advice)["39"] == "00"
    refused = client.ask(late)  # the original under the field 7 the advice did not name
    client.close()
    assert (refused["39"], "38" in refused) == ("12", False)
    assert balance(world, card) == 1_000
    ledger_clean(world)


def test_a_sale_with_another_field_37_is_another_sale(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300)
    other = {**first_sent, "7": RESENT_WHEN, "37": f"{next(REFERENCES):012d}"}
    assert client.ask(first_sent)["39"] == client.ask(other)["39"] == "00"
    client.close()
    assert balance(world, card) == 400
    ledger_clean(world)


# One row per repeat (0101/0201) and whether its first came: the first's answer when it did, taken
# as the first when it was lost on the way; the card is charged once either way. Both were unanswered.
REPEAT_CASES = [
    ("0200", "0201", True),
    ("0200", "0201", False),
    ("0100", "0101", True),
    ("0100", "0101", False),
]


@pytest.mark.parametrize(("first_kind", "repeat_kind", "first_came"), REPEAT_CASES)
def test_a_repeat_gets_its_firsts_answer_or_is_taken_as_the_first_once(
    any_world: World, first_kind: str, repeat_kind: str, first_came: bool
) -> None:
    world = any_world
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = sale(card, 300, kind=first_kind)
    first = client.ask(first_sent) if first_came else None
    repeats = [client.ask({**first_sent, "t": repeat_kind}) for _ in range(2)]
    client.close()
    answers = {(answer["t"], answer["39"], answer["38"]) for answer in repeats}
    response_kind = f"{first_kind[:2]}10"
    if first is not None:
        assert answers == {(response_kind, first["39"], first["38"])}
    assert len(answers) == 1 and next(iter(answers))[1] == "00", answers
    assert balance(world, card) == 700
    ledger_clean(world)


def test_a_repeated_authorisation_taken_as_its_first_is_completed_as_an_0100(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    lost = sale(card, 400, kind="0100")
    assert client.ask({**lost, "t": "0101"})["39"] == "00"
    assert client.ask(completion_of(lost, 250))["39"] == "00"
    client.close()
    assert balance(world, card) == 750
    ledger_clean(world)


# Field 37 blank (spaces or zeros: the acquirer assigned no reference) names no sale: two sales of
# one field 41 and STAN under two field 7s (the terminal's STAN restarted within the day) are two
# sales. The second was answered the first's approval, moving nothing: the merchant handed over
# goods it is never paid for.
@pytest.mark.parametrize("blank", [" " * 12, "0" * 12])
def test_a_blank_field_37_names_no_sale_so_another_sale_under_a_new_field_7_is_charged(
    world: World, blank: str
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    first_sent = {**financial(card, 300), "37": blank}
    first = client.ask(first_sent)
    second = client.ask({**first_sent, "7": RESENT_WHEN})
    client.close()
    assert (first["39"], second["39"]) == ("00", "00")
    assert balance(world, card) == 400  # 300 taken twice, once per sale
    ledger_clean(world)
