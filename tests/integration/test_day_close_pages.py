"""Listing a terminal's stored closes (backoffice and portal) a page at a time: the newest
page_size before before_sequence_number, oldest first; before, every close a terminal ever made
came in one answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from switch.store.repository import DAY_CLOSES_LISTED_DEFAULT, DAY_CLOSES_LISTED_MAX
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture

List = Callable[[bo.DayCloseListRequest], bo.DayCloseList]


@pytest.fixture(params=["postgres", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def _listers(world: World) -> dict[str, List]:
    stub = portal_grpc.PortalStub(world.channel)
    session = stub.SignIn(portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20)
    mine = (("authorization", f"Bearer {session.token}"),)
    return {
        "backoffice": lambda r: world.backoffice.ListDayCloses(r, metadata=world.admin_metadata, timeout=20),
        "portal": lambda r: stub.ListDayCloses(r, metadata=mine, timeout=20),
    }


def _closed(world: World, count: int) -> str:
    terminal = world.terminals[0]
    for n in range(count):
        terminal.stub.DayClose(pb.DayCloseRequest(close_id=f"c{n}"), metadata=terminal.metadata, timeout=20)
    return terminal.terminal_id


def _pages(listed: List, terminal_id: str, page_size: int) -> list[tuple[list[int], int]]:
    """Each page's sequence numbers and next_before_sequence_number, newest page first."""
    pages, before = [], 0
    while True:
        request = bo.DayCloseListRequest(
            terminal_id=terminal_id, page_size=page_size, before_sequence_number=before
        )
        page = listed(request)
        pages.append(([r.sequence_number for r in page.reports], page.next_before_sequence_number))
        before = page.next_before_sequence_number
        if not before or len(pages) > 10:
            return pages


def test_the_closes_are_listed_a_page_at_a_time(world: World) -> None:
    terminal_id = _closed(world, 5)
    for name, listed in _listers(world).items():
        assert _pages(listed, terminal_id, 2) == [([4, 5], 4), ([2, 3], 2), ([1], 0)], name
        assert _pages(listed, terminal_id, 5) == [([1, 2, 3, 4, 5], 0)], name
        assert _pages(listed, terminal_id, 0) == [([1, 2, 3, 4, 5], 0)], name
        # A request of before paging (TerminalRequest, the same field 1) reads as the first page.
        old = bo.DayCloseListRequest.FromString(
            bo.TerminalRequest(terminal_id=terminal_id).SerializeToString()
        )
        assert [r.sequence_number for r in listed(old).reports] == [1, 2, 3, 4, 5], name


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_a_list_without_page_size_holds_the_newest_default_page(world: World) -> None:
    terminal_id = _closed(world, DAY_CLOSES_LISTED_DEFAULT + 1)
    for name, listed in _listers(world).items():
        page = listed(bo.DayCloseListRequest(terminal_id=terminal_id))
        numbers = [r.sequence_number for r in page.reports]
        assert (numbers[0], numbers[-1], len(numbers)) == (2, DAY_CLOSES_LISTED_DEFAULT + 1, 100), name
        assert page.next_before_sequence_number == 2, name


@pytest.mark.parametrize(
    ("page_size", "before", "words"),
    [
        (-1, 0, f"page_size -1: it must be between 1 and {DAY_CLOSES_LISTED_MAX}"),
        (DAY_CLOSES_LISTED_MAX + 1, 0, f"page_size {DAY_CLOSES_LISTED_MAX + 1}: it must be between 1 and"),
        (0, -1, "before_sequence_number is negative"),
    ],
)
def test_a_bad_page_is_refused_by_name(world: World, page_size: int, before: int, words: str) -> None:
    terminal_id = _closed(world, 1)
    request = bo.DayCloseListRequest(
        terminal_id=terminal_id, page_size=page_size, before_sequence_number=before
    )
    for name, listed in _listers(world).items():
        with pytest.raises(grpc.RpcError) as refused:
            listed(request)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert words in (refused.value.details() or ""), name
