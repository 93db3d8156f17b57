"""Inbound ISO 8583 over real TCP: acquirers redeem our cards through the same card actors as terminals."""

from __future__ import annotations

import datetime as dt
import itertools
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import iso8583
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from protocols.iso8583 import (
    SPEC,
    IsoMessage,
    OriginalDataElements,
    decode_message,
    encode_message,
    format_amount,
    frame,
)
from protocols.iso_inbound import InboundHandler, IsoInboundListener
from protocols.wire import backoffice_pb2 as bo
from switch.config import Settings
from switch.domain.cards import make_card_number
from switch.security import PinBlockFormat
from switch.security.pinpad import encipher_pin_block
from tests.integration.harness import MERCHANT_EMAIL, World, new_txn, start_world
from tests.integration.test_card_pins import set_pin
from tests.pg import postgres_schema

ACQUIRER = "4711"
ZONE_KEY = bytes(range(16))
TERMINAL = "THIRD001"
MERCHANT = "THIRDPARTYSHOP1"  # field 42: 15 characters
WHEN = "1121120000"  # field 7, MMDDhhmmss
STANS = itertools.count(1)
ANSWER_WAIT_S = 20.0
# "No answer" is the switch's own decision (it counts each advice it leaves unanswered), not a wait
# for an answer that never comes: the deadline is reached only by a failing test, and after the
# decision no answer may come within the grace.
DECISION_WAIT_S = 10.0
NO_ANSWER_GRACE_S = 0.1
POLL_S = 0.01  # how often the count is looked at while no answer has come


def inbound_world(tmp_path: Path, url: str = "", **settings: object) -> Iterator[World]:
    """A world that takes inbound ISO 8583 from ACQUIRER (on a free port), stopped after the test."""
    acquirers = f"{ACQUIRER}:{MERCHANT_EMAIL}:{ZONE_KEY.hex()}"
    world = start_world(tmp_path, url, 1, iso_listen_port=0, iso_inbound_acquirers=acquirers, **settings)
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        yield from inbound_world(tmp_path, url)


class IsoClient:
    """An acquirer's end of one TCP connection: 2-byte length header, our field spec."""

    def __init__(self, world: World) -> None:
        listener = world.server.iso_inbound
        assert listener is not None
        self._listener = listener
        self._socket = socket.create_connection(("127.0.0.1", listener.port), timeout=ANSWER_WAIT_S)

    @property
    def connection(self) -> socket.socket:
        return self._socket

    def close(self) -> None:
        self._socket.close()

    def send_body(self, body: bytes) -> IsoMessage:
        self._socket.sendall(frame(body))
        length = int.from_bytes(self._receive(2), "big")
        return decode_message(self._receive(length))

    def ask(self, message: IsoMessage) -> IsoMessage:
        return self.send_body(encode_message(message))

    def send(self, message: IsoMessage) -> None:
        self._socket.sendall(frame(encode_message(message)))

    def ask_or_none(self, message: IsoMessage) -> IsoMessage | None:
        """The answer, or None for an advice the switch left unanswered (`answers_or_none`)."""
        left_before = unanswered_total(self._listener)
        self.send(message)
        return answers_or_none(self._listener, [self._socket], left_before)[0]

    def _receive(self, count: int) -> bytes:
        return received(self._socket, count)


def unanswered_total(listener: IsoInboundListener) -> int:
    """The advices the listener's handler left unanswered since it started, whatever the reason:
    counted in the handler's thread before it returns no answer (leave_unanswered)."""
    return sum(count for _, count in listener.statistics().advices_unanswered)


def answers_or_none(
    listener: IsoInboundListener, sockets: list[socket.socket], left_before: int
) -> list[IsoMessage | None]:
    """The answer on each socket to the one message just sent on it, or None where the switch left
    it unanswered. Each message is either answered or counted unanswered, so once the answers and
    the count's growth since `left_before` (taken before sending) make up the messages sent, those
    with no answer were left unanswered; any answer still coming within NO_ANSWER_GRACE_S after that
    is returned (a test expecting None then fails). Only a failing test waits DECISION_WAIT_S."""
    answers: dict[int, IsoMessage] = {}

    def read_ready(timeout_s: float) -> None:
        waiting = [sock for index, sock in enumerate(sockets) if index not in answers]
        if not waiting:
            return
        readable, _, _ = select.select(waiting, [], [], timeout_s)
        for sock in readable:
            answers[sockets.index(sock)] = read_answer(sock)

    deadline_s = time.monotonic() + DECISION_WAIT_S
    while len(answers) + unanswered_total(listener) - left_before < len(sockets):
        undecided = len(sockets) - len(answers) - (unanswered_total(listener) - left_before)
        assert time.monotonic() < deadline_s, f"{undecided} neither answered nor left unanswered"
        read_ready(POLL_S)
    grace_ends_s = time.monotonic() + NO_ANSWER_GRACE_S
    while (left_s := grace_ends_s - time.monotonic()) > 0 and len(answers) < len(sockets):
        read_ready(left_s)
    return [answers.get(index) for index in range(len(sockets))]


def read_answer(sock: socket.socket) -> IsoMessage:
    """One framed answer (2-byte length header, then its body), decoded."""
    return decode_message(received(sock, int.from_bytes(received(sock, 2), "big")))


def received(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, "switch closed the connection"
        data += chunk
    return data


def financial(card: str, amount_minor: int, stan: int = 0, pin_block: bytes | None = None) -> IsoMessage:
    message = {
        "t": "0200",
        "2": card,
        "3": "000000",
        "4": format_amount(amount_minor),
        "7": WHEN,
        "11": f"{stan or next(STANS):06d}",
        "22": "051",
        "32": ACQUIRER,
        "41": TERMINAL,
        "42": MERCHANT,
        "49": "978",
    }
    if pin_block is not None:
        message["52"] = pin_block.hex().upper()
    return message


def reversal_of(original: IsoMessage, *, names: str = "", kind: str = "0400") -> IsoMessage:
    """The reversal (0400, or an advice 0420) of an original, field 90 naming it by its own MTI
    unless told otherwise."""
    elements = OriginalDataElements(names or original["t"], original["11"], original["7"], ACQUIRER)
    return {
        "t": kind,
        "4": original["4"],
        "7": WHEN,
        "11": f"{next(STANS):06d}",
        "32": ACQUIRER,
        "41": original["41"],
        "90": elements.encode(),
    }


def authorisation(card: str, amount_minor: int) -> IsoMessage:
    return {**financial(card, amount_minor), "t": "0100"}


def completion_of(
    original: IsoMessage, final_minor: int, *, names: str = "0100", **fields: str
) -> IsoMessage:
    elements = OriginalDataElements(names, original["11"], original["7"], ACQUIRER)
    message = {
        "t": "0220",
        "3": "000000",
        "4": format_amount(final_minor),
        "7": WHEN,
        "11": f"{next(STANS):06d}",
        "32": ACQUIRER,
        "41": original["41"],
        "49": "978",
        "90": elements.encode(),
    }
    return {**message, **fields}


def balance(world: World, card: str) -> int:
    return world.terminals[0].balance(card)


def ledger_clean(world: World) -> None:
    check = world.ledger()
    problems = (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches)
    assert problems == (0, 0, 0), check.problems


def test_approve_decline_unknown_card_and_echo(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    approved = client.ask(financial(card, 300))
    assert (approved["t"], approved["39"], approved["4"]) == ("0210", "00", format_amount(300))
    assert len(approved["38"]) == 6 and approved["41"] == TERMINAL
    assert "2" not in approved  # the PAN is not echoed
    assert client.ask(financial(card, 800))["39"] == "51"
    unknown = make_card_number("600199", 42)  # well formed, but no programme of ours
    assert client.ask(financial(unknown, 100))["39"] == "14"
    echo = client.ask({"t": "0800", "7": WHEN, "11": "000001", "70": "301"})
    assert (echo["t"], echo["39"]) == ("0810", "00")
    assert balance(world, card) == 700
    client.close()
    ledger_clean(world)


def test_an_acquirers_redemption_is_reported_without_a_location_and_not_among_a_locations(
    world: World,
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    assert client.ask(financial(card, 300))["39"] == "00"
    client.close()
    assert world.terminals[0].redeem(card, 100, "at-the-till").response_code == "00"
    (shop,) = world.server.core.admin.list_locations(world.merchant_id)
    every = reported_sources(world, [])
    assert {(source.split(":")[0], location) for source, location in every} == {
        ("iso", ""),
        (world.terminals[0].terminal_id, shop.location_id),
    }
    assert reported_sources(world, [shop.location_id]) == [(world.terminals[0].terminal_id, shop.location_id)]


def reported_sources(world: World, location_ids: list[str]) -> list[tuple[str, str]]:
    today = dt.datetime.now(dt.UTC).date()
    request = bo.TransactionReportRequest(
        from_date=(today - dt.timedelta(days=1)).isoformat(),
        to_date=(today + dt.timedelta(days=1)).isoformat(),
        location_ids=location_ids,
    )
    found = world.backoffice.ListTransactions(request, metadata=world.admin_metadata, timeout=20)
    return [(t.terminal_id, t.location_id) for t in found.transactions]


def test_replayed_0200_gets_the_same_answer_and_moves_money_once(world: World) -> None:
    card = world.issue(1_000)
    request = financial(card, 250)

    def send(_: int) -> IsoMessage:
        client = IsoClient(world)
        try:
            return client.ask(request)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {a["39"] for a in answers} == {"00"}
    assert len({a["38"] for a in answers}) == 1
    assert balance(world, card) == 750
    ledger_clean(world)


def test_reversal_undoes_once_and_an_early_reversal_refuses_the_late_original(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    original = financial(card, 400)
    assert client.ask(original)["39"] == "00"
    reversal = reversal_of(original)
    first = client.ask(reversal)
    assert (first["t"], first["39"]) == ("0410", "00")
    assert balance(world, card) == 1_000
    assert client.ask(reversal)["39"] == "00"  # repeated: acknowledged, nothing moves twice
    assert balance(world, card) == 1_000

    late = financial(card, 100)
    early = client.ask(reversal_of(late))  # the original never arrived: acknowledged and tombstoned
    assert early["39"] == "00"
    assert client.ask(late)["39"] == "12"
    assert balance(world, card) == 1_000
    client.close()
    ledger_clean(world)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"4": "00000000ABCD"}, "field 4"),  # letters in the amount
        ({"41": None}, "field 41"),  # a required field missing
        ({"99": "1"}, "field 99"),  # a field outside our spec
    ],
)
def test_malformed_request_is_declined_30_naming_the_field_and_changes_nothing(
    world: World, change: dict[str, str | None], named: str
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    message: dict[str, str] = dict(financial(card, 100))
    for number, value in change.items():
        if value is None:
            del message[number]
        else:
            message[number] = value
    body, _ = iso8583.encode(message, SPEC)  # past our own encoder, which would refuse it
    answer = client.send_body(bytes(body))
    assert (answer["t"], answer["39"]) == ("0210", "30")
    assert named in answer["44"]
    assert card not in answer["44"]
    assert client.ask(financial(card, 100))["39"] == "00"  # the connection still works
    assert balance(world, card) == 900
    client.close()


def test_pin_in_field_52_is_verified_by_the_card_actor(world: World) -> None:
    client = IsoClient(world)
    card = world.issue(1_000, world.benefit_programme)
    set_pin(world, card, "2468")
    wrong = encipher_pin_block("1357", card, ZONE_KEY, PinBlockFormat.ISO_4)
    right = encipher_pin_block("2468", card, ZONE_KEY, PinBlockFormat.ISO_4)
    assert client.ask(financial(card, 100))["39"] == "55"  # PIN required
    assert client.ask(financial(card, 100, pin_block=wrong))["39"] == "55"
    assert client.ask(financial(card, 100, pin_block=right))["39"] == "00"
    assert balance(world, card) == 900
    client.close()


def test_grpc_terminals_and_iso_inbound_on_one_card_never_double_spend(world: World) -> None:
    covered, amount_minor, each_side = 30, 100, 60
    start_minor = covered * amount_minor
    card = world.issue(start_minor)
    terminals = [world.activate(f"race-{index}") for index in range(6)]

    def by_grpc(index: int) -> tuple[str, int]:
        response = terminals[index % len(terminals)].redeem(card, amount_minor, new_txn())
        return response.response_code, response.approved.amount_minor

    def by_iso(index: int) -> tuple[str, int]:
        client = IsoClient(world)
        try:
            answer = client.ask(financial(card, amount_minor))
        finally:
            client.close()
        return answer["39"], int(answer["4"]) if answer["39"] == "00" else 0

    with ThreadPoolExecutor(max_workers=2 * each_side) as pool:
        grpc_results = pool.map(by_grpc, range(each_side))
        iso_results = pool.map(by_iso, range(each_side))
        results = list(grpc_results) + list(iso_results)
    approvals = [amount for code, amount in results if code == "00"]
    assert len(approvals) == covered
    assert {code for code, _ in results} <= {"00", "51"}
    final_minor = balance(world, card)
    assert final_minor == 0
    assert sum(approvals) == start_minor - final_minor
    ledger_clean(world)


def test_a_completion_gives_back_what_the_authorisation_took_above_the_final_amount_once(
    world: World,
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert client.ask(original)["39"] == "00"
    assert balance(world, card) == 600  # an approved 0100 takes its amount at once
    completion = completion_of(original, 250)
    answer = client.ask(completion)
    assert (answer["t"], answer["39"], answer["4"]) == ("0230", "00", format_amount(250))
    assert balance(world, card) == 750

    repeat = client.ask({**completion, "t": "0221"})
    assert (repeat["t"], repeat["39"]) == ("0230", "00")
    other_amount = client.ask_or_none(completion_of(original, 100))  # a second one, another amount
    assert other_amount is None  # an advice: left unanswered, not refused 94
    reversal = client.ask({**reversal_of(original), "90": completion["90"]})
    assert reversal["39"] == "00"  # the completed authorisation is reversed for what is charged now
    assert balance(world, card) == 1_000

    identity = f"completion:{original['41']}:{original['11']}:{original['7']}"
    stored = world.server.core.store.transaction(f"iso:{ACQUIRER}", identity)
    assert stored is not None
    assert (stored.record.transaction_type, stored.record.approved_minor) == ("refund", 150)
    client.close()
    ledger_clean(world)


# A reversal names its original's MTI in field 90 as a completion does: a request (0400) naming the
# other of 0100 and 0200 is refused 25 (before session 24 it was taken). An advice cannot be refused
# (the acquirer has reversed and stops repeating once answered): one whose field 4 agrees is taken
# (test_inbound_reversals.py). One row per request sent.
REVERSAL_NAMING_CASES = [
    ("0200", "0400", "0200", "00"),
    ("0200", "0420", "0200", "00"),
    ("0100", "0400", "0100", "00"),
    ("0100", "0420", "0100", "00"),
    ("0200", "0400", "0100", "25"),
    ("0200", "0420", "0100", "00"),
    ("0100", "0400", "0200", "25"),
    ("0100", "0421", "0200", "00"),
]


@pytest.mark.parametrize(("sent_as", "kind", "names", "code"), REVERSAL_NAMING_CASES)
def test_a_reversal_is_taken_only_of_an_original_of_the_mti_its_field_90_names(
    world: World, sent_as: str, kind: str, names: str, code: str
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    original = {**financial(card, 400), "t": sent_as}
    assert client.ask(original)["39"] == "00"
    reversal = reversal_of(original, names=names, kind=kind)
    answer = client.ask(reversal)
    assert (answer["39"], answer.get("44", "")) == (
        (code, "") if code == "00" else (code, f"field 90 names an {names}; the original is an {sent_as}")
    )
    assert client.ask(reversal)["39"] == code  # nothing stored for a refusal: its repeat alike
    assert balance(world, card) == (1_000 if code == "00" else 600)
    assert client.ask(reversal_of(original))["39"] == "00"  # named right, it is taken after all
    assert balance(world, card) == 1_000
    client.close()
    ledger_clean(world)


# One row per completion advice (0220/0221) of an approved 4.00 authorisation that cannot be applied
# as sent. It was refused (13, 12, 25), and the acquirer, answered, took its completion as done while
# the card stayed charged otherwise; now it is left unanswered and counted by reason, so the acquirer
# repeats it to its own limit and takes it to its exceptions. None moves money.
UNCOMPLETABLE_CASES = [
    ("0220", 401, {}, "original_differs", "above the authorised 4.00 EUR"),
    ("0221", 250, {"names": "0200"}, "original_differs", "only an 0100 is completed"),
    ("0220", 250, {"49": "840"}, "original_differs", "the authorisation was in EUR"),
    ("0220", 250, {"stan": "999999"}, "original_differs", "no authorisation (0100)"),
    ("0220", 250, {"reversed_first": ""}, "not_completable", "the authorisation is reversed"),
    ("0221", 250, {"reversed_first": ""}, "not_completable", "the authorisation is reversed"),
    # An 0200 is a final sale: a 0220 naming it as an 0100 must not give part of it back.
    ("0220", 250, {"sent_as": "0200"}, "original_differs", "names an 0100; the original is an 0200"),
]


@pytest.mark.parametrize(("kind", "final_minor", "change", "reason", "why"), UNCOMPLETABLE_CASES)
def test_a_completion_advice_that_cannot_be_applied_is_left_unanswered_counted_and_moves_nothing(
    world: World,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    final_minor: int,
    change: dict[str, str],
    reason: str,
    why: str,
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    original = {**authorisation(card, 400), "t": change.get("sent_as", "0100")}
    assert client.ask(original)["39"] == "00"
    if "reversed_first" in change:
        assert client.ask(reversal_of(original))["39"] == "00"
    named_original = {**original, "11": change.get("stan", original["11"])}
    fields = {number: value for number, value in change.items() if number.isdigit()}
    completion = completion_of(named_original, final_minor, names=change.get("names", "0100"), **fields)
    for _ in range(2):  # the advice and its repeat alike
        assert client.ask_or_none({**completion, "t": kind}) is None
    assert balance(world, card) == (1_000 if "reversed_first" in change else 600)
    listener = world.server.iso_inbound
    assert listener is not None
    assert {name: count for name, count in listener.statistics().advices_unanswered if count} == {reason: 2}
    assert why in caplog.text  # the log says why (never card data)
    client.close()
    ledger_clean(world)


def test_a_completion_at_the_authorised_amount_moves_nothing_is_the_only_one_and_its_repeat_answers_alike(
    world: World,
) -> None:
    client = IsoClient(world)
    card = world.issue(1_000)
    original = authorisation(card, 400)
    assert client.ask(original)["39"] == "00"
    completion = completion_of(original, 400)
    assert client.ask(completion)["39"] == "00"
    assert client.ask_or_none(completion_of(original, 300)) is None  # not 94: an advice
    assert balance(world, card) == 600
    assert client.ask(reversal_of(original))["39"] == "00"  # nothing was given back: the sale is void
    assert balance(world, card) == 1_000
    assert client.ask({**completion, "t": "0221"})["39"] == "00"  # the repeat gets the first answer
    assert balance(world, card) == 1_000
    client.close()
    ledger_clean(world)


def test_a_completion_and_a_reversal_of_one_authorisation_at_once_move_money_once(world: World) -> None:
    rounds, amount_minor, final_minor = 12, 400, 150
    card = world.issue(rounds * amount_minor)
    client = IsoClient(world)
    originals = [authorisation(card, amount_minor) for _ in range(rounds)]
    assert {client.ask(original)["39"] for original in originals} == {"00"}
    client.close()

    pairs = [(completion_of(original, final_minor), reversal_of(original)) for original in originals]
    messages = [message for pair in pairs for message in pair]
    connections = [IsoClient(world) for _ in messages]
    listener = world.server.iso_inbound
    assert listener is not None
    left_before = unanswered_total(listener)
    for connection, message in zip(connections, messages, strict=True):  # each pair at once, all at once
        connection.send(message)
    answers = answers_or_none(listener, [connection.connection for connection in connections], left_before)
    for connection in connections:
        connection.close()
    found = [None if answer is None else answer["39"] for answer in answers]
    codes = list(zip(found[::2], found[1::2], strict=True))
    # The reversal is taken either way (after a completion it gives back the final amount); a
    # completion after the reversal is an advice left unanswered. Money moves back once.
    assert set(codes) <= {("00", "00"), (None, "00")}
    assert balance(world, card) == rounds * amount_minor
    ledger_clean(world)


# --- connection limits (session 22; before, any number of connections stayed open for ever) ---


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[World]:
    yield from inbound_world(tmp_path, iso_inbound_connections_max=2, iso_inbound_idle_s=1.0, metrics_port=0)


def echo(client: IsoClient) -> str:
    return client.ask({"t": "0800", "7": WHEN, "11": f"{next(STANS):06d}", "70": "301"})["39"]


REFUSED = "txswitch_iso_inbound_connections_refused_total"
IDLE_CLOSED = "txswitch_iso_inbound_connections_idle_closed_total"


def scraped_samples(world: World) -> list[Sample]:
    """Every sample the switch serves on /metrics, scraped over HTTP."""
    url = world.server.ops.metrics_url
    assert url is not None
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def connection_counters(world: World) -> dict[str, float]:
    """The listener's refused and idle-closed connection counters, scraped from /metrics."""
    return {
        sample.name: sample.value
        for sample in scraped_samples(world)
        if sample.name in (REFUSED, IDLE_CLOSED)
    }


def closed_by_switch(client: IsoClient, within_s: float) -> bool:
    """True once the switch has closed the connection (end of stream) within the time."""
    sock = client._socket
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_a_connection_past_the_cap_is_closed_and_the_others_are_served(limited: World) -> None:
    first, second = IsoClient(limited), IsoClient(limited)
    assert echo(first) == echo(second) == "00"
    assert connection_counters(limited) == {REFUSED: 0.0, IDLE_CLOSED: 0.0}
    third = IsoClient(limited)
    assert closed_by_switch(third, 5.0)
    assert connection_counters(limited) == {REFUSED: 1.0, IDLE_CLOSED: 0.0}
    assert echo(first) == "00"
    first.close()
    time.sleep(0.2)  # the switch sees the first one go
    fourth = IsoClient(limited)
    assert echo(fourth) == "00"
    assert connection_counters(limited) == {REFUSED: 1.0, IDLE_CLOSED: 0.0}  # a close is no refusal
    for client in (second, third, fourth):
        client.close()


def test_a_connection_that_sends_nothing_is_closed_and_one_that_echoes_is_kept(limited: World) -> None:
    quiet, busy = IsoClient(limited), IsoClient(limited)
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # past the 1 s idle limit, echoing twice a second
        assert echo(busy) == "00"
        time.sleep(0.5)
    assert closed_by_switch(quiet, 0.1)  # closed after 1 s with no message
    assert echo(busy) == "00"
    assert connection_counters(limited) == {REFUSED: 0.0, IDLE_CLOSED: 1.0}
    quiet.close()
    busy.close()


def test_listener_limits_must_be_positive() -> None:
    refusal = r"iso_inbound_connections_max \(.*\) must be positive and at most 2,147,483,647, got 0"
    with pytest.raises(ValueError, match=refusal):
        Settings(iso_listen_port=0, iso_inbound_connections_max=0).check()  # the listener on: read


UNANSWERED_HOST = "resolver-does-not-answer.invalid"


def test_a_listener_that_does_not_start_in_time_is_stopped_before_start_raises(
    limited: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its thread went on after start had told the switch it could not listen, and listened unowned
    # once its host resolved. A resolver that does not answer for one host holds it up for certain.
    answer = threading.Event()
    resolve = socket.getaddrinfo

    def unanswered(host: object, *args: object, **kwargs: object) -> object:
        if host not in (UNANSWERED_HOST, UNANSWERED_HOST.encode()):  # trio asks with the name's bytes
            return resolve(host, *args, **kwargs)  # type: ignore[arg-type]
        flags = args[4] if len(args) > 4 else kwargs.get("flags", 0)  # host, port, family, type, proto, flags
        if isinstance(flags, int) and flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "not a numeric address")
        answer.wait(30.0)
        raise socket.gaierror(socket.EAI_NONAME, "no such host")

    monkeypatch.setattr(socket, "getaddrinfo", unanswered)
    before = {thread for thread in threading.enumerate() if thread.name == "iso-inbound"}
    late = IsoInboundListener(InboundHandler(limited.server.core, {}), UNANSWERED_HOST, 0, in_flight_max=1)
    try:
        with pytest.raises(OSError, match=f"ISO 8583 listener did not start on {UNANSWERED_HOST}:0"):
            late.start(timeout_s=0.5)
        deadline_s = time.monotonic() + 5.0
        while {thread for thread in threading.enumerate() if thread.name == "iso-inbound"} - before:
            assert time.monotonic() < deadline_s, "the listener's thread still runs"
            time.sleep(0.05)
    finally:
        answer.set()
