"""Money credited to a replaced card follows it to its replacement (core._follow_replacement): each move
is counted, with its amount in minor units by currency, on /metrics; never the card."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import CardStatus
from switch.follow_workers import FollowAsked
from tests.integration.harness import World, start_world
from tests.integration.test_card_replacement import replace

FOLLOWS = "txswitch_replaced_card_follows_total"
FOLLOWED_MINOR = "txswitch_replaced_card_followed_minor_total"
WAIT_S = 10.0


def scraped(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def counted(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Non-zero samples of name, by their labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.value
    }


def follows(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    return counted(text, FOLLOWS)


def followed_minor(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    return counted(text, FOLLOWED_MINOR)


def moved(when: str, count: float) -> dict[tuple[tuple[str, str], ...], float]:
    return {(("outcome", "moved"), ("when", when)): count}


def in_euro(when: str, amount_minor: float) -> dict[tuple[tuple[str, str], ...], float]:
    return {(("currency", "EUR"), ("when", when)): amount_minor}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path, "", 1, metrics_port=0)
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


def wait_for_follows(url: str, expected: dict[tuple[tuple[str, str], ...], float]) -> str:
    """The scrape once the follows counted are the expected (the move runs on a thread of its own)."""
    deadline_s = time.monotonic() + WAIT_S
    text = scraped(url)
    while follows(text) != expected and time.monotonic() < deadline_s:
        time.sleep(0.05)
        text = scraped(url)
    return text


def test_each_credit_that_follows_a_replaced_card_is_counted_with_its_amount(world: World) -> None:
    url = world.server.ops.metrics_url
    assert url is not None
    terminal = world.terminals[0]
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    assert terminal.redeem(lost, 700, "ride-1").response_code == "00"
    assert terminal.redeem(lost, 300, "ride-2").response_code == "00"
    assert replace(world, lost, new).moved.amount_minor == 1_000
    # The office's replacement itself is no follow.
    assert (follows(scraped(url)), followed_minor(scraped(url))) == ({}, {})

    assert terminal.reversal("ride-1").response_code == "00"
    text = wait_for_follows(url, moved("credit", 1))
    assert (follows(text), followed_minor(text)) == (moved("credit", 1), in_euro("credit", 700))

    assert terminal.reversal("ride-2").response_code == "00"
    text = wait_for_follows(url, moved("credit", 2))
    assert (follows(text), followed_minor(text)) == (moved("credit", 2), in_euro("credit", 1_000))
    assert terminal.balance(new) == 2_000
    card_id = world.server.core.cards.card_id(lost)
    assert card_id is not None and card_id not in text and lost not in text


def test_a_follow_sent_again_under_its_key_counts_no_second_move(world: World) -> None:
    """The follow workers stopped, a credit's money stays on the lost card; one move under a key
    moves it and is counted; the same key again answers the stored transfer and moves nothing more,
    so it counts as nothing moved, not as a second move of the same money."""
    url = world.server.ops.metrics_url
    assert url is not None
    core, terminal = world.server.core, world.terminals[0]
    lost, new = world.issue(2_000, world.benefit_programme), world.issue(0, world.benefit_programme)
    assert terminal.redeem(lost, 700, "ride-1").response_code == "00"
    replace(world, lost, new)
    core._follows.stop()
    assert terminal.reversal("ride-1").response_code == "00"
    card_id = core.cards.card_id(lost)
    assert card_id is not None
    asked = FollowAsked(card_id, "start:again", "start")

    core._move_to_replacement(asked)
    core._move_to_replacement(asked)

    text = scraped(url)
    assert follows(text) == {
        (("outcome", "left_at_stop"), ("when", "credit")): 1,  # refused by the stopping workers
        (("outcome", "moved"), ("when", "start")): 1,
        (("outcome", "nothing_moved"), ("when", "start")): 1,
    }
    assert followed_minor(text) == in_euro("start", 700)
    assert terminal.balance(new) == 2_000


def test_follows_the_stopping_workers_refuse_are_left_at_stop_not_failed(world: World) -> None:
    """A credit's follow refused by the queue, and a follow's look again for a replacement still
    landing refused, while the workers stop: their money stays on the card for the next start, as
    that of the moves a stop hands back (left_at_stop), not a failure."""
    url = world.server.ops.metrics_url
    assert url is not None
    core = world.server.core
    number = world.issue(2_000, world.benefit_programme)
    card_id = core.cards.card_id(number)
    assert card_id is not None
    core.set_card_status(card_id, CardStatus.lost, "reported lost", "test")  # its replacement under way
    core._follows.stop()

    core._follow_replacement(card_id, "credit:refused")
    core._move_to_replacement(FollowAsked(card_id, "start:refused", "start"))

    assert follows(scraped(url)) == {
        (("outcome", "left_at_stop"), ("when", "credit")): 1,
        (("outcome", "left_at_stop"), ("when", "start")): 1,
    }


@pytest.fixture
def one_follow_worker(tmp_path: Path) -> Iterator[World]:
    """One follow worker, and a wait for a replacement far longer than the test."""
    world = start_world(
        tmp_path, "", 1, metrics_port=0, replacement_follow_workers_max=1, replacement_follow_wait_s=60.0
    )
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


def test_a_follow_waiting_for_a_replacement_that_never_lands_lets_another_cards_follow_run(
    one_follow_worker: World,
) -> None:
    world = one_follow_worker
    url = world.server.ops.metrics_url
    assert url is not None
    core, terminal = world.server.core, world.terminals[0]
    waiting, lost, new = (world.issue(2_000, world.benefit_programme) for _ in range(3))
    assert terminal.redeem(waiting, 700, "ride-waiting").response_code == "00"
    assert terminal.redeem(lost, 300, "ride-lost").response_code == "00"
    waiting_id = core.cards.card_id(waiting)
    assert waiting_id is not None
    # Marked lost as a replacement marks it first; its transfer never lands (another node died).
    core.set_card_status(waiting_id, CardStatus.lost, "reported lost", "test")
    assert terminal.reversal("ride-waiting").response_code == "00"  # its follow waits for the replacement
    assert replace(world, lost, new).moved.amount_minor == 1_700
    started_s = time.monotonic()
    assert terminal.reversal("ride-lost").response_code == "00"
    text = wait_for_follows(url, moved("credit", 1))
    assert follows(text) == moved("credit", 1), "the other card's follow waited behind the first"
    assert time.monotonic() - started_s < 2.0
    assert terminal.balance(new) == 4_000


def _unblock(world: World, number: str) -> None:
    world.backoffice.UnblockCard(
        bo.CardRequest(card=pb.CardRef(card_number=number)), metadata=world.admin_metadata, timeout=20
    )


def _block(world: World, number: str) -> None:
    request = bo.BlockCardRequest(card=pb.CardRef(card_number=number), reason="found, held at the office")
    world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20)


# (what the office does to the lost card while its follow waits, how the follow is counted)
OFFICE_CHANGES = [
    pytest.param(_unblock, "unblocked", id="unblocked: the card keeps its money"),
    pytest.param(_block, "not_replaced", id="blocked: the money waits for the office"),
]


@pytest.mark.parametrize(("change", "outcome"), OFFICE_CHANGES)
def test_a_card_changed_by_the_office_before_its_follow_ran_is_counted_as_what_became_of_it(
    one_follow_worker: World, change: Callable[[World, str], None], outcome: str
) -> None:
    world = one_follow_worker
    url = world.server.ops.metrics_url
    assert url is not None
    core, terminal = world.server.core, world.terminals[0]
    card = world.issue(2_000, world.benefit_programme)
    assert terminal.redeem(card, 700, "ride-1").response_code == "00"
    card_id = core.cards.card_id(card)
    assert card_id is not None
    core.set_card_status(card_id, CardStatus.lost, "reported lost", "test")  # as a replacement does first
    assert terminal.reversal("ride-1").response_code == "00"  # its follow waits for the replacement
    change(world, card)
    text = wait_for_follows(url, {(("outcome", outcome), ("when", "credit")): 1})
    assert (follows(text), followed_minor(text)) == ({(("outcome", outcome), ("when", "credit")): 1}, {})
    assert core.store.card_state(card_id).balance_minor == 2_000  # the money stays on the card
