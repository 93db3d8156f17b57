"""A programme's load step is its own setting: the co-payment's denominator is only a price ratio.

Session 23 found a programme with a co-payment of 18.00 per 50.00 (1.80 per 5.00 written larger)
loaded in steps of 50.00 only, and one whose denominator was above its maximum never loaded.
Real gRPC on loopback, the SQLite file and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import cardholder_pb2 as ch
from protocols.wire import cardholder_pb2_grpc as ch_grpc
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.admin import Admin
from switch.core import SwitchCore
from switch.domain.card_rules import CardState
from switch.programme_settings import set_load_step
from switch.store.repository import Store
from switch.store.schema import programmes
from tests.integration.harness import ADMIN_TOKEN, World, on_statement, world_fixture
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


def test_the_operator_sets_a_programmes_load_step_and_loads_follow_at_once(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No command changed a programme's step (session 24). Through the real `txswitch admin`,
    checked as at creation; a card whose actor is live and the holder's view follow at once."""
    programme = created(world, "600212", (1_800, 5_000), balance_max_minor=10_000)  # steps of 5.00
    card, terminal = world.issue(0, programme), world.terminals[0]
    assert terminal.load(card, 500).response_code == "00"  # its actor now holds the programme
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    common = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address]
    set_step = [*common, "set-load-step", f"programme_id={programme}"]
    assert cli.main([*set_step, "load_step_minor=1000"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["programme_id"], shown["load_step_minor"]) == (programme, "1000")
    assert terminal.load(card, 500).response_code == "13"  # not a whole step of 10.00
    assert terminal.load(card, 2_000).response_code == "00"
    seen = ch_grpc.CardholderStub(world.channel).GetBalance(
        ch.CardholderBalanceRequest(card=pb.CardRef(card_number=card)), timeout=20
    )
    assert (seen.holder_pays.amount_minor, seen.per_loaded.amount_minor) == (360, 1_000)
    # Refused by name, as at creation, and the step stays 10.00.
    cases: list[tuple[list[str], int, str]] = [
        (["load_step_minor=10"], 1, "load_step_minor 10: the co-payment 1800 per 5000 of one step"),
        (["load_step_minor=20000"], 1, "load_step_minor 20000 is above balance_max_minor 10000"),
        (["load_step_minor=0"], 1, "load_step_minor must be positive"),
        (["load_step_minor=-500"], 1, "load_step_minor must be positive"),
        (["load_step_minor=five"], 2, "load_step_minor: must be a whole number, got 'five'"),
    ]
    for arguments, exit_code, named in cases:
        assert cli.main([*set_step, *arguments]) == exit_code, arguments
        assert named in capsys.readouterr().err, arguments
    unknown = [*common, "set-load-step", "programme_id=prg_00aa00aa00aa00aa", "load_step_minor=500"]
    assert cli.main(unknown) == 1
    assert "NOT_FOUND: programme_id 'prg_00aa00aa00aa00aa': no such programme" in capsys.readouterr().err
    assert cli.main([*common, "set-load-step", "load_step_minor=500"]) == 1
    assert "programme_id is missing" in capsys.readouterr().err
    assert terminal.load(card, 500).response_code == "13"
    assert terminal.balance(card) == 2_500


def admin_doing_before_the_copy(
    core: SwitchCore, meanwhile: Callable[[], object], issued: list[CardState]
) -> Admin:
    """An Admin on the switch's store that, once it has written a card, does `meanwhile` before it
    leaves the card's copy for the first actor (as the switch's own Admin does next); `issued`
    gets each copy left."""

    def meanwhile_then_issued(card_hash: str, state: CardState) -> None:
        meanwhile()
        issued.append(state)
        core._card_issued(card_hash, state)

    return Admin(
        Store(core.store.engine),
        bytes.fromhex(core.settings.card_hash_key_hex),
        on_card_issued=meanwhile_then_issued,
        write=core.write_now,
    )


def test_a_card_issued_as_the_step_changes_loads_in_the_new_step(world: World) -> None:
    """One node: the issue read the programme (steps of 5.00), the step became 10.00 and its cards
    were fenced after the card was written, and only then did the issue leave its card's copy for
    the first actor. That copy's old step loaded 5.00 until a restart."""
    programme = created(world, "600213", (1_800, 5_000), balance_max_minor=10_000)
    core = world.server.core
    issued: list[CardState] = []
    issuing = admin_doing_before_the_copy(core, lambda: set_load_step(core, programme, 1_000), issued)
    card = issuing.issue_card(programme).card_number
    assert [state.programme.load_step_minor for state in issued] == [500]  # read before the change
    assert world.terminals[0].load(card, 500).response_code == "13"  # not a whole step of 10.00
    assert world.terminals[0].load(card, 1_000).response_code == "00"
    assert world.terminals[0].balance(card) == 1_000


def test_a_card_number_typed_as_the_load_step_is_not_shown_back(world: World) -> None:
    """load_step_minor is an int64, so a card number fits: SetLoadStep (and CreateProgramme) refused
    it as above the maximum, or as a step of part of a cent, naming it whole in the call's details."""
    programme = created(world, "600213", (1_800, 5_000), balance_max_minor=10_000)
    card_number, balance_max_minor = 4_111_111_111_111_111, 4_000_000_000_000_000
    cases: list[tuple[str, tuple[int, int], int, int]] = [
        ("600214", (1_800, 5_000), card_number, balance_max_minor),  # above the maximum
        ("600215", (1, 3), card_number, balance_max_minor * 2),  # a third of a cent a step
    ]
    for prefix, copay, step_minor, max_minor in cases:
        code, details = refusal(created, world, prefix, copay, max_minor, step_minor)
        assert (code, str(step_minor) in details) == (grpc.StatusCode.INVALID_ARGUMENT, False), details
        assert "load_step_minor [REDACTED-PAN]" in details, details
    set_step = bo.SetLoadStepRequest(programme_id=programme, load_step_minor=card_number)
    code, details = refusal(world.backoffice.SetLoadStep, set_step, metadata=world.admin_metadata, timeout=20)
    assert (code, str(card_number) in details) == (grpc.StatusCode.INVALID_ARGUMENT, False), details
    assert "load_step_minor [REDACTED-PAN] is above balance_max_minor 10000" in details, details
    assert world.server.core.store.programme(programme).load_step_minor in (None, 500)


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)  # one node: card copies (shared cards have none)
def test_two_step_changes_at_once_leave_the_newer_step_in_the_copies_guard(world: World) -> None:
    """One node, two SetLoadStep calls at once: the first (10.00) wrote and read its programme, the
    second (20.00) then ran whole, and only then did the first note its programme for the card
    copies' guard and fence the cards. The guard held the older 10.00: a card whose issue read the
    programme between the two writes left its copy of 10.00 after both fences, and loaded 10.00."""
    programme = created(world, "600216", (1_800, 5_000), balance_max_minor=10_000)
    core = world.server.core
    assert core.card_copies is not None
    first_read, second_done = threading.Event(), threading.Event()

    def after(_cursor: Any, statement: str, parameters: Any) -> None:
        # The first change's read of its programme, after its write: it waits for the second change
        # (or, where changes are made one at a time, gives up after a while and goes on).
        if not first_read.is_set() and statement.startswith("SELECT") and "programmes.name" in statement:
            first_read.set()
            second_done.wait(2)

    def change(step_minor: int) -> threading.Thread:
        request = bo.SetLoadStepRequest(programme_id=programme, load_step_minor=step_minor)
        thread = threading.Thread(
            target=lambda: world.backoffice.SetLoadStep(request, metadata=world.admin_metadata, timeout=20)
        )
        thread.start()
        return thread

    def both_changes() -> None:
        second = change(2_000)
        second.join(20)
        second_done.set()
        first.join(20)
        assert not first.is_alive() and not second.is_alive()

    issued: list[CardState] = []
    issuing = admin_doing_before_the_copy(core, both_changes, issued)
    with on_statement(core.store.engine, "after", after):
        first = change(1_000)
        assert first_read.wait(10), "the first change did not read its programme"
        card = issuing.issue_card(programme).card_number  # reads the programme between the two writes
    assert [state.programme.load_step_minor for state in issued] == [1_000]
    assert core.store.programme(programme).load_step_minor == 2_000
    assert world.terminals[0].load(card, 1_000).response_code == "13", "loaded in the older step"
    assert world.terminals[0].load(card, 2_000).response_code == "00"
