"""Backoffice requests without the id they act on are refused naming the field, and change nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from tests.integration.harness import World
from tests.integration.test_card_issue import card_rows


def refusal(world: World, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        getattr(world.backoffice, method)(request, metadata=world.admin_metadata)
    return refused.value.code(), refused.value.details() or ""


@pytest.mark.parametrize(
    ("method", "sent", "problem"),
    [
        ("IssueCard", bo.IssueCardRequest(), "programme_id is missing"),  # was NOT_FOUND "unknown programme "
        ("JoinProgramme", bo.JoinProgrammeRequest(programme_id="prg_x"), "merchant_id is missing"),
        ("JoinProgramme", bo.JoinProgrammeRequest(merchant_id="mer_x"), "programme_id is missing"),
        ("DeactivateTerminal", bo.TerminalRequest(), "terminal_id is missing"),  # was "no terminal "
        ("ListDayCloses", bo.TerminalRequest(), "terminal_id is missing"),  # was an empty list
    ],
)
def test_a_request_without_its_id_is_refused_by_name(
    world: World, method: str, sent: Any, problem: str
) -> None:
    rows = card_rows(world)
    assert refusal(world, method, sent) == (grpc.StatusCode.INVALID_ARGUMENT, problem)
    assert card_rows(world) == rows


def test_the_day_closes_of_an_unknown_terminal_are_not_found(world: World) -> None:
    request = bo.TerminalRequest(terminal_id="trm_nowhere")
    assert refusal(world, "ListDayCloses", request) == (
        grpc.StatusCode.NOT_FOUND,
        "no terminal 'trm_nowhere'",
    )
