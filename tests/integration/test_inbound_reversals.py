"""Inbound reversals over real TCP, judged as an acquirer judges them: an advice (0420/0421) cannot be
declined (the acquirer has reversed on its side and stops repeating once answered), so one is
answered only when the money on our side agrees with what the acquirer believes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import iso8583
import pytest

from protocols.iso8583 import SPEC, IsoMessage, encode_message, format_amount, frame
from tests.integration.harness import World
from tests.integration.test_inbound_iso import (
    ANSWER_WAIT_S,
    IsoClient,
    answers_or_none,
    authorisation,
    balance,
    completion_of,
    financial,
    inbound_world,
    ledger_clean,
    reversal_of,
    scraped_samples,
    unanswered_total,
)
from tests.pg import postgres_schema


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from inbound_world(tmp_path)


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[World]:
    """A world whose metrics are served (on a free port)."""
    yield from inbound_world(tmp_path, metrics_port=0)


@pytest.fixture(params=["sqlite", "postgres"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        yield from inbound_world(tmp_path, url)


def key_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines saying a misnamed advice was taken (or a completion voided) by its key and
    field 4; a misnamed advice refused for its amount said so too, though nothing was taken."""
    return [r.getMessage() for r in caplog.records if "by its key and field 4" in r.getMessage()]


def unanswered_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left unanswered" in r.getMessage()]


def answer_or_none(world: World, message: IsoMessage) -> IsoMessage | None:
    """The switch's answer on a connection of its own, or None for an advice it left unanswered."""
    return exchange(world, encode_message(message))


def exchange(world: World, body: bytes) -> IsoMessage | None:
    listener = world.server.iso_inbound
    assert listener is not None
    with socket.create_connection(("127.0.0.1", listener.port), timeout=ANSWER_WAIT_S) as sock:
        left_before = unanswered_total(listener)
        sock.sendall(frame(body))
        return answers_or_none(listener, [sock], left_before)[0]


# One row per reversal of an original of 4.00 on a card of 10.00: what it names (field 90's MTI),
# its field 4, the answer (None: unanswered) and the card's balance after it and after its repeat.
REVERSAL_AGREEMENT_CASES = [
    ("0200", "0400", "0200", 400, "00", 1_000),
    ("0200", "0420", "0200", 400, "00", 1_000),
    # Found by its key (field 41, STAN, field 7) and its amount, an original is reversed by an
    # advice whatever MTI field 90 gives it (it was refused 25, and the card stayed debited while
    # the acquirer had reversed); the repeat moves nothing more.
    ("0200", "0420", "0100", 400, "00", 1_000),
    ("0100", "0420", "0200", 400, "00", 1_000),
    ("0100", "0421", "0200", 400, "00", 1_000),
    ("0200", "0400", "0100", 400, "25", 600),  # a request may be declined: the acquirer knows
    # Field 4 is not the original's: which message, or how much, the acquirer means is not known.
    # Reversing all of it gave the card back what the acquirer still charged.
    ("0200", "0400", "0200", 100, "13", 600),
    ("0200", "0400", "0200", 500, "13", 600),
    ("0200", "0420", "0200", 100, None, 600),
    ("0200", "0421", "0200", 500, None, 600),
    ("0200", "0420", "0100", 100, None, 600),  # neither MTI nor amount agrees
]


@pytest.mark.parametrize(
    ("sent_as", "kind", "names", "amount_minor", "code", "after"), REVERSAL_AGREEMENT_CASES
)
def test_a_reversal_is_taken_when_its_original_is_named_beyond_doubt_and_an_advice_never_refused(
    world: World,
    caplog: pytest.LogCaptureFixture,
    sent_as: str,
    kind: str,
    names: str,
    amount_minor: int,
    code: str | None,
    after: int,
) -> None:
    caplog.set_level(logging.WARNING, logger="protocols.iso_inbound")
    card = world.issue(1_000)
    original = {**financial(card, 400), "t": sent_as}
    assert answer_or_none(world, original) is not None
    reversal = {**reversal_of(original, names=names, kind=kind), "4": format_amount(amount_minor)}
    for _ in range(2):  # the reversal and its repeat
        answer = answer_or_none(world, reversal)
        assert (answer or {}).get("39") == code, answer
        assert balance(world, card) == after
    if code is not None and code != "00":
        refusal = answer_or_none(world, reversal)
        assert refusal is not None and refusal.get("44"), refusal  # a refusal names why
    misnamed_advice = names != sent_as and kind != "0400"
    assert bool(key_lines(caplog)) == (misnamed_advice and code == "00"), key_lines(caplog)
    if misnamed_advice and code is None:  # why it was left unanswered names both
        lines = unanswered_lines(caplog)
        assert lines and all("field 90 names" in line for line in lines), lines
    ledger_clean(world)


# One row per reversal coming after its original was reversed by one that agreed (field 90 naming it by
# its MTI, field 4 its amount): the original (a 4.00 0200 on a card of 10.00; "0220": a 4.00 0100
# completed at 2.50, the first reversal naming the completion; "unseen": a 4.00 0200 never sent, the
# first reversal holding its place), the first reversal's kind, the second's, the MTI its field 90 names
# ("": the original's own; "0100" of a "0220" names the authorisation), its field 4, its answer (None:
# unanswered) and the balance after. The second was answered as a repeat whatever its field 4 (the
# stored answer came before the amount check): 00, the acquirer believing it had reversed another
# amount than we had, where the same reversal coming first is refused. It is refused as a first is.
REVERSAL_AFTER_REVERSAL_CASES = [
    ("0200", "0420", "0421", "", 400, "00", 1_000),  # a repeat
    ("0200", "0400", "0400", "", 400, "00", 1_000),
    ("0200", "0420", "0400", "", 400, "00", 1_000),
    ("0200", "0420", "0421", "", 100, None, 1_000),
    ("0200", "0400", "0400", "", 500, "13", 1_000),
    ("0200", "0400", "0420", "", 100, None, 1_000),
    ("0200", "0420", "0421", "0100", 400, "00", 1_000),  # an advice: taken by its key and field 4
    ("0200", "0420", "0421", "0100", 100, None, 1_000),
    ("0200", "0420", "0400", "0100", 400, "25", 1_000),  # a request naming it wrong, as a first is
    ("0220", "0420", "0421", "", 250, "00", 1_000),
    ("0220", "0420", "0421", "", 400, None, 1_000),  # the authorisation's amount: not the completion's
    ("0220", "0400", "0400", "", 100, "13", 1_000),
    ("0220", "0420", "0421", "0100", 400, "00", 1_000),  # naming the authorisation: its amount
    ("0220", "0420", "0421", "0100", 250, None, 1_000),
    ("unseen", "0420", "0421", "", 400, "00", 1_000),
    ("unseen", "0420", "0421", "", 100, None, 1_000),  # not the amount the place is held for
    ("unseen", "0400", "0400", "", 500, "13", 1_000),
]


@pytest.mark.parametrize(
    ("original_kind", "first_kind", "kind", "names", "amount_minor", "code", "after"),
    REVERSAL_AFTER_REVERSAL_CASES,
)
def test_a_reversal_after_its_original_was_reversed_is_a_repeat_only_when_its_field_4_agrees(
    world: World,
    original_kind: str,
    first_kind: str,
    kind: str,
    names: str,
    amount_minor: int,
    code: str | None,
    after: int,
) -> None:
    card = world.issue(1_000)
    original = authorisation(card, 400) if original_kind == "0220" else financial(card, 400)
    if original_kind != "unseen":
        assert answer_or_none(world, original) is not None
    reversed_one = original
    if original_kind == "0220":
        reversed_one = completion_of(original, 250)
        completed = answer_or_none(world, reversed_one)
        assert completed is not None and completed["39"] == "00"
    first = answer_or_none(world, reversal_of(reversed_one, kind=first_kind))
    assert first is not None and first["39"] == "00", first
    named = original if names == "0100" and original_kind == "0220" else reversed_one
    second = {**reversal_of(named, names=names, kind=kind), "4": format_amount(amount_minor)}
    for _ in range(2):  # the second reversal and its repeat
        answer = answer_or_none(world, second)
        assert (answer or {}).get("39") == code, answer
        assert balance(world, card) == after
    if code is not None and code != "00":
        refusal = answer_or_none(world, second)
        assert refusal is not None and refusal.get("44"), refusal  # a refusal names why
    ledger_clean(world)


def sent(world: World, message: dict[str, str]) -> IsoMessage | None:
    """`answer_or_none` past our own encoder, which refuses what breaks our spec."""
    body, _ = iso8583.encode(message, SPEC)
    return exchange(world, bytes(body))


# One row per reversal of an approved 4.00 sale that the switch cannot take: a request (0400) is
# refused naming why; an advice (0420/0421) was answered alike, and the acquirer, answered, took it
# as done: a partial reversal (field 95) left the card charged all of it. Now it is left unanswered,
# so the acquirer repeats it to its own limit and takes it to its exceptions. Neither moves money.
UNTAKEN_CASES = [
    ("0400", {"95": "0" * 42}, "30"),  # a partial reversal: field 95 is not in our spec
    ("0420", {"95": "0" * 42}, None),
    ("0400", {"90": None}, "30"),
    ("0421", {"90": None}, None),
]


@pytest.mark.parametrize(("kind", "change", "code"), UNTAKEN_CASES)
def test_a_reversal_that_cannot_be_taken_is_refused_and_an_advice_left_unanswered(
    world: World, kind: str, change: dict[str, str | None], code: str | None
) -> None:
    card = world.issue(1_000)
    original = financial(card, 400)
    assert answer_or_none(world, original) is not None
    message = {**reversal_of(original, kind=kind)}
    for number, value in change.items():
        if value is None:
            del message[number]
        else:
            message[number] = value
    answer = sent(world, message)
    assert (answer or {}).get("39") == code, answer
    assert balance(world, card) == 600
    ledger_clean(world)


# One row per reversal of a 4.00 authorisation on a card of 10.00 after its completion (or none):
# the final amount, the reversal (field 90 naming the 0100) and the balance after it. A reversal
# after a completion reverses what is charged now, once. A completion at the authorised amount left
# the 0100 approved, so its reversal gave all of it back; one at a lower amount made the same
# reversal refused (12, an advice left unanswered), leaving the card charged the final amount while
# the acquirer had voided the sale.
REVERSAL_AFTER_COMPLETION_CASES = [
    (None, "0420", 1_000),
    (400, "0400", 1_000),
    (400, "0420", 1_000),
    (250, "0400", 1_000),
    (250, "0420", 1_000),
    (250, "0421", 1_000),
    (0, "0420", 1_000),  # completed at nothing: all went back already, the reversal moves nothing
]


@pytest.mark.parametrize(("final_minor", "kind", "after"), REVERSAL_AFTER_COMPLETION_CASES)
def test_a_reversal_after_a_completion_gives_back_what_is_charged_now_once(
    world: World, final_minor: int | None, kind: str, after: int
) -> None:
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    completion = None if final_minor is None else completion_of(original, final_minor)
    if completion is not None:
        completed = answer_or_none(world, completion)
        assert completed is not None and completed["39"] == "00"
    for sent_kind in (kind, "0421"):  # the reversal and a repeat: the repeat moves nothing more
        answer = answer_or_none(world, reversal_of(original, kind=sent_kind))
        assert answer is not None and (answer["39"], answer["4"]) == ("00", original["4"]), answer
        assert balance(world, card) == after
    if completion is not None:  # the completion's repeat gets its first answer and moves nothing
        repeat = answer_or_none(world, {**completion, "t": "0221"})
        assert repeat is not None and repeat["39"] == "00"
        assert balance(world, card) == after
    ledger_clean(world)


# One row per reversal naming the completion (field 90: the 0220's MTI, STAN and field 7) of a 4.00
# authorisation on a card of 10.00: the final amount, the reversal, its field 4, the answer (None:
# unanswered) and the balance after it and its repeat. It found no original, was answered 00 "nothing
# moved" and held, so the card stayed charged the final amount while the acquirer had voided the
# sale. Field 4 of such a reversal is the completion's final amount.
REVERSAL_OF_COMPLETION_CASES = [
    (250, "0420", 250, "00", 1_000),
    (250, "0400", 250, "00", 1_000),
    (400, "0420", 400, "00", 1_000),
    (0, "0421", 0, "00", 1_000),
    (250, "0420", 400, None, 750),  # the authorisation's amount: not the completion's
    (250, "0400", 400, "13", 750),
]


@pytest.mark.parametrize(
    ("final_minor", "kind", "amount_minor", "code", "after"), REVERSAL_OF_COMPLETION_CASES
)
def test_a_reversal_naming_the_completion_gives_back_what_it_left_charged_once_whichever_it_names(
    world: World, final_minor: int, kind: str, amount_minor: int, code: str | None, after: int
) -> None:
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    completion = completion_of(original, final_minor)
    completed = answer_or_none(world, completion)
    assert completed is not None and completed["39"] == "00"
    reversal = {**reversal_of(completion, kind=kind), "4": format_amount(amount_minor)}
    for _ in range(2):  # the reversal and its repeat
        answer = answer_or_none(world, reversal)
        assert (answer or {}).get("39") == code, answer
        assert balance(world, card) == after
    if code == "00":  # reversed once, whichever it names: one naming the 0100 moves nothing more
        again = answer_or_none(world, reversal_of(original, kind="0421"))
        assert again is not None and again["39"] == "00"
        assert balance(world, card) == after
    ledger_clean(world)


@pytest.mark.parametrize("kind", ["0400", "0420"])
def test_a_completion_whose_reversal_came_first_voids_the_sale_once(any_world: World, kind: str) -> None:
    """Its reversal was acknowledged as of a message never seen, moving nothing; the late completion
    was then left unanswered for good and the card stayed charged all the authorisation took while
    the acquirer had voided the sale. It reverses the authorisation, once whichever message names it."""
    world = any_world
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    assert balance(world, card) == 600
    completion = completion_of(original, 250)
    early = answer_or_none(world, reversal_of(completion, kind=kind))
    assert early is not None and early["39"] == "00"
    assert balance(world, card) == 600
    repeats = [reversal_of(completion, kind="0421"), reversal_of(original, kind="0421")]
    for message in [completion, {**completion, "t": "0221"}, *repeats]:
        answer = answer_or_none(world, message)
        assert answer is not None and answer["39"] == "00", (message["t"], answer)
        assert balance(world, card) == 1_000
    listener = world.server.iso_inbound
    assert listener is not None
    assert dict(listener.statistics().advices_unanswered)["not_completable"] == 0
    ledger_clean(world)


# One row per 0220 of a 4.00 authorisation on a card of 10.00 whose reversal came first: the final
# amount, the reversal (acknowledged "nothing moved"), its field 4, the answer to the 0220 and to its
# 0221 (None: unanswered) and the balance after. The early reversal's field 4 was not kept: the late
# 0220 voided the sale (gave back all 4.00) whatever amount the reversal named, where a reversal
# coming after the completion is refused unless its field 4 is the final amount. Field 90 of the
# reversal names the completion's key as `names`; one naming it under another MTI is judged as it is
# after the completion (REVERSAL_OF_COMPLETION_MISNAMED_CASES): an 0400 voided the sale, where coming
# after the completion it is refused 25; an advice is taken by its key and field 4 either way.
EARLY_REVERSAL_AMOUNT_CASES = [
    (250, "0420", "0220", 250, "00", 1_000),
    (0, "0400", "0220", 0, "00", 1_000),
    (250, "0420", "0220", 400, None, 600),  # the authorisation's amount: not the completion's
    (250, "0400", "0220", 100, None, 600),
    (250, "0400", "0200", 250, None, 600),
    (250, "0421", "0100", 250, "00", 1_000),
    (250, "0420", "0200", 400, None, 600),  # neither MTI nor amount agrees
]


@pytest.mark.parametrize(
    ("final_minor", "kind", "names", "amount_minor", "code", "after"), EARLY_REVERSAL_AMOUNT_CASES
)
def test_a_completion_whose_reversal_came_first_is_voided_only_by_a_reversal_of_its_final_amount(
    world: World,
    caplog: pytest.LogCaptureFixture,
    final_minor: int,
    kind: str,
    names: str,
    amount_minor: int,
    code: str | None,
    after: int,
) -> None:
    caplog.set_level(logging.WARNING, logger="protocols.iso_inbound")
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    completion = completion_of(original, final_minor)
    reversal = {**reversal_of(completion, names=names, kind=kind), "4": format_amount(amount_minor)}
    early = answer_or_none(world, reversal)
    assert early is not None and early["39"] == "00"
    for message in (completion, {**completion, "t": "0221"}):
        answer = answer_or_none(world, message)
        assert (answer or {}).get("39") == code, (message["t"], answer)
        assert balance(world, card) == after
    listener = world.server.iso_inbound
    assert listener is not None
    assert dict(listener.statistics().advices_unanswered)["original_differs"] == (2 if code is None else 0)
    misnamed_advice = names != "0220" and kind != "0400"
    assert bool(key_lines(caplog)) == (misnamed_advice and code == "00"), key_lines(caplog)
    if misnamed_advice and code is None:  # why it was left unanswered names both
        lines = unanswered_lines(caplog)
        assert lines and all("names an" in line for line in lines), lines
    ledger_clean(world)


def test_a_completion_of_a_declined_authorisation_whose_reversal_came_first_is_left_unanswered(
    world: World,
) -> None:
    """Nothing to void: the authorisation took nothing, so the completion is refused as any
    completion of it is (unanswered, not_completable) and stores no reversal."""
    card = world.issue(100)
    original = authorisation(card, 400)  # above the balance: declined
    declined = answer_or_none(world, original)
    assert declined is not None and declined["39"] != "00"
    completion = completion_of(original, 0)  # within what it approved (nothing): refused later
    early = answer_or_none(world, reversal_of(completion, kind="0420"))
    assert early is not None and early["39"] == "00"
    for kind in ("0220", "0221"):
        assert answer_or_none(world, {**completion, "t": kind}) is None
    assert balance(world, card) == 100
    listener = world.server.iso_inbound
    assert listener is not None
    assert dict(listener.statistics().advices_unanswered)["not_completable"] == 2
    ledger_clean(world)


def test_an_advice_before_its_original_holds_it_so_the_late_original_moves_nothing(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    late = financial(card, 400)
    for kind in ("0420", "0421"):  # the advice and its repeat, both before the original
        assert client.ask(reversal_of(late, kind=kind))["39"] == "00"
    refused = client.ask(late)
    assert (refused["39"], "38" in refused) == ("12", False)
    assert client.ask(late)["39"] == "12"  # its retransmission alike
    client.close()
    assert balance(world, card) == 1_000
    ledger_clean(world)


def test_two_advices_for_one_original_on_two_connections_reverse_it_once(any_world: World) -> None:
    world, rounds = any_world, 10
    card = world.issue(rounds * 100)
    client = IsoClient(world)
    originals = [financial(card, 100) for _ in range(rounds)]
    assert {client.ask(original)["39"] for original in originals} == {"00"}
    client.close()
    assert balance(world, card) == 0

    def send(message: IsoMessage) -> str:
        connection = IsoClient(world)
        try:
            return connection.ask(message)["39"]
        finally:
            connection.close()

    advices = [(reversal_of(o, kind="0420"), reversal_of(o, kind="0421")) for o in originals]
    with ThreadPoolExecutor(max_workers=2 * rounds) as pool:
        futures = [(pool.submit(send, first), pool.submit(send, second)) for first, second in advices]
        codes = {(first.result(), second.result()) for first, second in futures}
    assert codes == {("00", "00")}
    assert balance(world, card) == rounds * 100  # each reversed once, not twice
    ledger_clean(world)


def test_a_retransmitted_0200_moves_money_once_with_the_same_answer(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    request = {**financial(card, 300), "37": "000000123456"}
    first, again = client.ask(request), client.ask(request)
    client.close()
    assert (first["39"], first["38"]) == (again["39"], again["38"])
    assert first["39"] == "00"
    assert balance(world, card) == 700
    ledger_clean(world)


UNANSWERED = "txswitch_iso_inbound_advices_unanswered_total"


def unanswered_advices(world: World) -> dict[str, float]:
    """The advices left unanswered, by reason, scraped from /metrics."""
    return {
        sample.labels["reason"]: sample.value
        for sample in scraped_samples(world)
        if sample.name == UNANSWERED
    }


def test_advices_left_unanswered_are_counted_by_reason_and_answered_ones_are_not(metered: World) -> None:
    world = metered
    card = world.issue(1_000)
    sale, authorised = financial(card, 400), authorisation(card, 100)
    assert answer_or_none(world, sale) is not None and answer_or_none(world, authorised) is not None
    assert answer_or_none(world, reversal_of(authorised, kind="0421")) is not None  # taken: not counted
    left = [
        {**reversal_of(sale, kind="0420"), "4": format_amount(100)},  # original_differs
        completion_of(authorised, 50),  # not_completable: reversed
    ]
    for advice in left:
        assert answer_or_none(world, advice) is None
    assert sent(world, {**reversal_of(sale, kind="0420"), "95": "0" * 42}) is None  # malformed
    assert answer_or_none(world, reversal_of(sale, kind="0420")) is not None  # taken: not counted
    assert unanswered_advices(world) == {
        "malformed": 1.0,
        "original_differs": 1.0,
        "not_reversible": 0.0,
        "not_completable": 1.0,
        "not_stored": 0.0,
        "switch_fault": 0.0,
    }


# One row per reversal whose field 90 holds the completion's key (field 41, STAN, field 7) of a 4.00
# authorisation completed at 2.50, on a card of 10.00, but gives it another MTI: the reversal, the
# MTI named, the answer and the balance after it and its repeat. Found by its key, the completion's
# place was taken for an original that moved nothing: answered 00 "nothing moved" and held, the card
# left charged 2.50 while the acquirer had voided the sale (a reversal naming the completion reached
# the same place when the completion was held between its look and its lock).
REVERSAL_OF_COMPLETION_MISNAMED_CASES = [
    ("0420", "0100", 250, "00", 1_000),  # an advice is taken by its key and field 4, whatever MTI it says
    ("0421", "0200", 250, "00", 1_000),
    ("0420", "0100", 400, None, 750),  # nor its field 4 the completion's: left unanswered
    ("0400", "0100", 250, "25", 750),  # a request naming it wrong is refused, as one naming an 0100 is
]


@pytest.mark.parametrize(
    ("kind", "names", "amount_minor", "code", "after"), REVERSAL_OF_COMPLETION_MISNAMED_CASES
)
def test_a_reversal_holding_the_completions_key_under_another_mti_voids_the_sale_or_is_refused(
    world: World,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    names: str,
    amount_minor: int,
    code: str | None,
    after: int,
) -> None:
    caplog.set_level(logging.WARNING, logger="protocols.iso_inbound")
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    completion = completion_of(original, 250)
    completed = answer_or_none(world, completion)
    assert completed is not None and completed["39"] == "00"
    reversal = {**reversal_of(completion, names=names, kind=kind), "4": format_amount(amount_minor)}
    for _ in range(2):  # the reversal and its repeat
        answer = answer_or_none(world, reversal)
        assert (answer or {}).get("39") == code, answer
        assert balance(world, card) == after
    assert bool(key_lines(caplog)) == (code == "00"), key_lines(caplog)
    if code is None:  # why it was left unanswered names both
        lines = unanswered_lines(caplog)
        assert lines and all("field 90 names" in line for line in lines), lines
    ledger_clean(world)
