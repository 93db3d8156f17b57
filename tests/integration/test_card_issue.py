"""Issuing a card: one journal write holds the card, its account and its first load, or none of them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch.admin import Admin
from switch.domain.cards import make_card_number
from switch.store.repository import Store
from switch.store.schema import accounts, cards
from tests.integration.harness import World, statements_run


def card_rows(world: World) -> tuple[int, int]:
    """How many cards, and how many card accounts, the database holds."""
    with world.server.core.store.engine.connect() as conn:
        issued = conn.execute(select(func.count()).select_from(cards)).scalar_one()
        card_accounts = conn.execute(
            select(func.count()).select_from(accounts).where(accounts.c.account_id.startswith("card:"))
        ).scalar_one()
    return int(issued), int(card_accounts)


def assert_ledger_clean(world: World) -> None:
    check = world.ledger()
    assert (check.unbalanced_entries, check.negative_card_balances, check.balance_mismatches) == (0, 0, 0)
    assert list(check.problems) == []


def issue_request(world: World, amount_minor: int, request_id: str) -> bo.IssueCardRequest:
    return bo.IssueCardRequest(
        programme_id=world.gift_programme,
        initial_load=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        request_id=request_id,
    )


def test_an_issue_goes_through_the_journal_with_its_load(world: World) -> None:
    journal = world.server.core.writer
    assert journal.process_pid is not None  # the journal commits in a process of its own
    before = journal.statistics().writes
    with statements_run(world.server.core.store.engine) as seen:
        issued = world.backoffice.IssueCard(
            issue_request(world, 2_500, "issue-1"), metadata=world.admin_metadata
        )
    assert journal.statistics().writes == before + 1
    assert not [statement for statement in seen if statement.startswith("INSERT")]  # none in the switch
    assert issued.card.balance.amount_minor == 2_500
    assert world.terminals[0].balance(issued.card_number) == 2_500
    assert_ledger_clean(world)


def test_an_issue_replayed_with_its_request_id_is_refused_and_writes_nothing(world: World) -> None:
    world.backoffice.IssueCard(issue_request(world, 1_000, "issue-twice"), metadata=world.admin_metadata)
    rows = card_rows(world)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.IssueCard(issue_request(world, 1_000, "issue-twice"), metadata=world.admin_metadata)
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'issue-twice' has issued a card already" in (refused.value.details() or "")
    assert card_rows(world) == rows  # before, the card landed and only its load was refused
    assert_ledger_clean(world)


def test_an_issue_without_a_load_replayed_with_its_request_id_is_refused_and_writes_nothing(
    world: World,
) -> None:
    empty = bo.IssueCardRequest(programme_id=world.gift_programme, request_id="empty-twice")
    issued = world.backoffice.IssueCard(empty, metadata=world.admin_metadata)
    assert issued.card.balance.amount_minor == 0
    rows = card_rows(world)
    for replay in (empty, issue_request(world, 1_000, "empty-twice")):  # with a load too: the same key
        with pytest.raises(grpc.RpcError) as refused:
            world.backoffice.IssueCard(replay, metadata=world.admin_metadata)
        assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "request_id 'empty-twice' has issued a card already" in (refused.value.details() or "")
        assert card_rows(world) == rows  # before, each replay left another empty card behind
    assert_ledger_clean(world)


def test_issues_without_a_request_id_each_issue_a_card(world: World) -> None:
    rows = card_rows(world)
    for amount_minor in (0, 0, 300, 300):
        request = bo.IssueCardRequest(programme_id=world.gift_programme)
        if amount_minor:
            request.initial_load.CopyFrom(pb.Amount(amount_minor=amount_minor, currency="EUR"))
        world.backoffice.IssueCard(request, metadata=world.admin_metadata)
    assert card_rows(world) == (rows[0] + 4, rows[1] + 4)
    assert_ledger_clean(world)


def test_an_initial_load_over_the_programme_maximum_is_refused_by_name(world: World) -> None:
    rows = card_rows(world)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.IssueCard(issue_request(world, 10**12, "too-much"), metadata=world.admin_metadata)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "initial_load must be between 0 and" in (refused.value.details() or "")
    assert card_rows(world) == rows


@pytest.fixture
def serials(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The card serials drawn next, in order, instead of random ones."""
    drawn: list[int] = []
    monkeypatch.setattr("switch.admin.secrets.randbelow", lambda _space: drawn.pop(0))
    yield drawn


def test_a_number_issued_already_is_drawn_again(world: World, serials: list[int]) -> None:
    core = world.server.core
    serials.extend([4242, 4242, 4343])
    first = core.admin.issue_card(world.gift_programme, 100)
    second = core.admin.issue_card(world.gift_programme, 200)
    assert first.card_number != second.card_number
    prefix = core.store.programme(world.gift_programme).card_prefix
    assert second.card_number == make_card_number(prefix, 4343)
    assert serials == []
    assert world.terminals[0].balance(second.card_number) == 200


def test_an_admin_without_a_journal_issues_in_a_transaction_of_its_own(world: World) -> None:
    core = world.server.core
    other_node = Admin(Store(core.store.engine), bytes.fromhex(core.settings.card_hash_key_hex))
    journal_writes = core.writer.statistics().writes
    card = other_node.issue_card(world.gift_programme, 700, "other-node")
    assert core.writer.statistics().writes == journal_writes
    assert world.terminals[0].balance(card.card_number) == 700
    assert_ledger_clean(world)


def test_a_request_id_longer_than_a_transaction_id_is_refused_by_name(world: World) -> None:
    rows = card_rows(world)
    with pytest.raises(grpc.RpcError) as refused:
        world.backoffice.IssueCard(issue_request(world, 1_000, "r" * 200), metadata=world.admin_metadata)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "") == "request_id is longer than 64 characters"
    assert card_rows(world) == rows
    assert_ledger_clean(world)
