"""A programme's load step is its own setting: the co-payment's denominator is only a price ratio.

Session 23 found a programme with a co-payment of 18.00 per 50.00 (1.80 per 5.00 written larger)
loaded in steps of 50.00 only, and one whose denominator was above its maximum never loaded.
Real gRPC on loopback, the SQLite file and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch.store.schema import programmes
from tests.integration.harness import World, world_fixture
from tests.integration.test_portal import refusal


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def created(
    world: World, prefix: str, copay: tuple[int, int], balance_max_minor: int = 0, load_step_minor: int = 0
) -> str:
    request = bo.CreateProgrammeRequest(
        name=f"Taxi {prefix}",
        kind=bo.PROGRAMME_KIND_BENEFIT,
        currency="EUR",
        card_prefix=prefix,
        copay_numerator_minor=copay[0],
        copay_denominator_minor=copay[1],
        balance_max_minor=balance_max_minor,
        load_step_minor=load_step_minor,
    )
    programme_id: str = world.backoffice.CreateProgramme(
        request, metadata=world.admin_metadata, timeout=20
    ).programme_id
    world.server.core.admin.join_programme(world.merchant_id, programme_id, 0)
    return programme_id


def test_a_price_per_50_euros_still_loads_in_steps_of_5_euros(world: World) -> None:
    programme = created(world, "600201", (1_800, 5_000), balance_max_minor=100_000)
    card = world.issue(0, programme)
    answer = world.terminals[0].load(card, 500)
    assert answer.response_code == "00", answer.message
    assert world.terminals[0].balance(card) == 500


def test_a_programme_names_its_own_step(world: World) -> None:
    programme = created(world, "600202", (180, 500), balance_max_minor=100_000, load_step_minor=1_000)
    card = world.issue(0, programme)
    assert world.terminals[0].load(card, 500).response_code == "13"  # not a whole step of 10.00
    assert world.terminals[0].load(card, 2_000).response_code == "00"


def test_a_step_that_cannot_load_is_refused_by_name_and_makes_no_programme(world: World) -> None:
    cases: list[tuple[str, tuple[int, int], dict[str, int], str]] = [
        # The default step of 5.00 above a maximum of 4.00: no load would ever fit.
        ("600203", (180, 500), {"balance_max_minor": 400}, "load_step_minor 500 is above balance_max_"),
        ("600204", (180, 500), {"load_step_minor": 100_000, "balance_max_minor": 50_000}, "is above"),
        # 1.00 of a 1.80-per-5.00 co-payment is 0.36: whole; 0.10 is 0.036: part of a cent.
        ("600205", (180, 500), {"load_step_minor": 10}, "load_step_minor 10: the co-payment 180 per 500"),
        ("600206", (100, 300), {}, "load_step_minor 500: the co-payment 100 per 300 of one step"),
        ("600207", (180, 500), {"load_step_minor": -500}, "load_step_minor must be positive"),
    ]
    for prefix, copay, fields, named in cases:
        code, details = refusal(created, world, prefix, copay, **fields)
        assert (code, named in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), (prefix, details)
    assert created(world, "600206", (100, 300), load_step_minor=300)  # a fitting step: made


def test_a_programme_stored_before_the_step_was_a_setting_still_loads(world: World) -> None:
    """An older database: the column is added empty; the city card loads in 5.00 steps as before."""
    programme = created(world, "600208", (1_800, 5_000), balance_max_minor=100_000)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(programmes).where(programmes.c.programme_id == programme).values(load_step_minor=None)
        )
    card = world.issue(0, programme)
    assert world.terminals[0].load(card, 500).response_code == "00"
    assert world.terminals[0].load(card, 250).response_code == "13"


def test_the_holder_sees_the_co_payment_per_load_step(world: World) -> None:
    """A price stored as 18.00 per 50.00 was shown so, though the city card's letter (and every load)
    says 1.80 per 5.00: the holder sees what one step costs them."""
    cases: list[tuple[str, tuple[int, int], int, tuple[int, int]]] = [
        ("600209", (1_800, 5_000), 0, (180, 500)),  # the default step of 5.00
        ("600210", (180, 500), 1_000, (360, 1_000)),  # a step of its own
        ("600211", (180, 500), 500, (180, 500)),  # stored per step already
    ]
    stub = ch_grpc.CardholderStub(world.channel)
    for prefix, copay, step_minor, shown in cases:
        programme = created(world, prefix, copay, balance_max_minor=100_000, load_step_minor=step_minor)
        card = pb.CardRef(card_number=world.issue(0, programme))
        seen = stub.GetBalance(ch.CardholderBalanceRequest(card=card), timeout=20)
        paid, loaded = seen.holder_pays, seen.per_loaded
        assert (paid.amount_minor, loaded.amount_minor, paid.currency, loaded.currency) == (
            *shown,
            "EUR",
            "EUR",
        ), prefix
