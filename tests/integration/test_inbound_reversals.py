"""Inbound reversals over real TCP, judged as an acquirer judges them: an advice (0420/0421) cannot be
declined (the acquirer has reversed on its side and stops repeating once answered), so one is
answered only when the money on our side agrees with what the acquirer believes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import iso8583
import pytest

from protocols.iso8583 import SPEC, IsoMessage, decode_message, encode_message, format_amount, frame
from tests.integration.harness import MERCHANT_EMAIL, World, start_world
from tests.integration.test_inbound_iso import (
    ACQUIRER,
    ZONE_KEY,
    authorisation,
    balance,
    completion_of,
    financial,
    ledger_clean,
    reversal_of,
)

NO_ANSWER_WAIT_S = 1.5  # an answer comes in milliseconds on loopback


def _world(tmp_path: Path, url: str) -> Iterator[World]:
    acquirers = f"{ACQUIRER}:{MERCHANT_EMAIL}:{ZONE_KEY.hex()}"
    world = start_world(tmp_path, url, 1, iso_listen_port=0, iso_inbound_acquirers=acquirers)
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from _world(tmp_path, "")


def answer_or_none(world: World, message: IsoMessage) -> IsoMessage | None:
    """The switch's answer on a connection of its own, or None when none comes in time."""
    listener = world.server.iso_inbound
    assert listener is not None
    with socket.create_connection(("127.0.0.1", listener.port), timeout=NO_ANSWER_WAIT_S) as sock:
        sock.sendall(frame(encode_message(message)))
        try:
            header = sock.recv(2)
        except TimeoutError:
            return None
        assert len(header) == 2, "switch closed the connection"
        length = int.from_bytes(header, "big")
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            assert chunk, "switch closed the connection"
            body += chunk
    return decode_message(body)


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
    world: World, sent_as: str, kind: str, names: str, amount_minor: int, code: str | None, after: int
) -> None:
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
    ledger_clean(world)


def sent(world: World, message: dict[str, str]) -> IsoMessage | None:
    """`answer_or_none` past our own encoder, which refuses what breaks our spec."""
    listener = world.server.iso_inbound
    assert listener is not None
    body, _ = iso8583.encode(message, SPEC)
    with socket.create_connection(("127.0.0.1", listener.port), timeout=NO_ANSWER_WAIT_S) as sock:
        sock.sendall(frame(bytes(body)))
        try:
            header = sock.recv(2)
        except TimeoutError:
            return None
        assert len(header) == 2, "switch closed the connection"
        length = int.from_bytes(header, "big")
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
    return decode_message(data)


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


@pytest.mark.parametrize(("kind", "code"), [("0400", "12"), ("0420", None), ("0421", None)])
def test_a_reversal_of_a_completed_authorisation_moves_nothing_and_an_advice_is_left_unanswered(
    world: World, kind: str, code: str | None
) -> None:
    """A completed 0100 is no longer reversed (12). Answered 12, an advice left the card charged the
    final amount while the acquirer, answered, had voided the sale."""
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert answer_or_none(world, original) is not None
    completed = answer_or_none(world, completion_of(original, 250))
    assert completed is not None and completed["39"] == "00"
    answer = answer_or_none(world, reversal_of(original, kind=kind))
    assert (answer or {}).get("39") == code, answer
    assert balance(world, card) == 750
    ledger_clean(world)
