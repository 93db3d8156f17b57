"""Closed-loop card PINs over real gRPC: verification, three wrong tries block, serialised per card."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.security import PinBlockFormat
from switch.security.pinpad import encipher_pin_block
from switch.server import SwitchServer
from switch.store.card_pins import CardPinStore
from tests.integration.harness import TerminalClient, World, new_txn, start_world
from tests.integration.payment_harness import activate, payment_world

PIN = "739152846051"  # long on purpose: a sentinel that cannot turn up by chance in the database file
WRONG_PIN = "111111"


def set_pin(world: World, card: str, pin: str) -> bo.CardView:
    request = bo.SetCardPinRequest(card=pb.CardRef(card_number=card), pin=pin)
    return world.backoffice.SetCardPin(request, metadata=world.admin_metadata, timeout=20)


def with_pin_key(world: World, terminal: TerminalClient) -> bytes:
    """Key injection: the terminal's PIN key, kept by the switch wrapped under its master key."""
    clear_key = secrets.token_bytes(16)
    world.server.core.pins.install_terminal_pin_key(terminal.terminal_id, clear_key)
    return clear_key


def redeem_with_pin(
    terminal: TerminalClient, key: bytes, card: str, pin: str, amount_minor: int = 100
) -> pb.TransactionResponse:
    request = pb.RedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        pin_block=encipher_pin_block(pin, card, key, PinBlockFormat.ISO_4),
    )
    return terminal.stub.Redeem(request, metadata=terminal.metadata, timeout=20)


def stored_tries(world: World, card: str) -> int:
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    pin = CardPinStore(world.server.engine).load(card_id)
    assert pin is not None
    return pin.failed_tries


def test_pin_card_needs_its_pin_and_a_right_pin_clears_wrong_tries(world: World) -> None:
    terminal = world.terminals[0]
    key = with_pin_key(world, terminal)
    card = world.issue(1_000, world.benefit_programme)
    plain = world.issue(1_000, world.benefit_programme)
    set_pin(world, card, PIN)

    assert terminal.redeem(card, 100).response_code == "55"  # no PIN given
    assert redeem_with_pin(terminal, key, card, WRONG_PIN).response_code == "55"
    assert stored_tries(world, card) == 1
    approved = redeem_with_pin(terminal, key, card, PIN)
    assert approved.response_code == "00"
    assert stored_tries(world, card) == 0
    assert terminal.redeem(plain, 100).response_code == "00"  # a card without a PIN needs none
    assert terminal.balance(card) == 900


def test_ten_terminals_guessing_at_once_get_exactly_three_tries(world: World) -> None:
    terminals = [world.activate(f"guess-{index}") for index in range(10)]
    keys = [with_pin_key(world, terminal) for terminal in terminals]
    card = world.issue(1_000, world.benefit_programme)
    set_pin(world, card, PIN)

    def guess(index: int) -> str:
        terminal_index = index % len(terminals)
        wrong = f"{index:06d}"  # never the right PIN (that one has 12 digits)
        response = redeem_with_pin(terminals[terminal_index], keys[terminal_index], card, wrong)
        return response.response_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(guess, range(30)))
    assert codes.count("55") == 2, codes  # the first two wrong tries
    assert codes.count("75") == 28, codes  # the third blocks; the rest are refused uncounted
    assert stored_tries(world, card) == 3
    assert world.server.core.card_pin_store.lockouts == 1  # one lockout, whatever the guesses
    exposition = generate_latest(world.server.metrics.registry).decode()  # a scrape refreshes the feeds
    assert 'txswitch_pin_lockouts_total{kind="card"} 1.0' in exposition
    # Blocked: even the right PIN is refused, and nothing moved.
    assert redeem_with_pin(terminals[0], keys[0], card, PIN).response_code == "75"
    assert world.terminals[0].balance(card) == 1_000
    # The backoffice sets a new PIN: tries reset, the card works again.
    set_pin(world, card, PIN)
    assert redeem_with_pin(terminals[1], keys[1], card, PIN).response_code == "00"


@pytest.mark.parametrize(
    ("pin", "named"),
    [("12a4", "digits only"), ("123", "4 to 12 digits"), ("1234567890123", "4 to 12 digits")],
)
def test_set_pin_refuses_bad_pins_and_names_the_problem(world: World, pin: str, named: str) -> None:
    card = world.issue(1_000, world.benefit_programme)
    with pytest.raises(grpc.RpcError) as caught:
        set_pin(world, card, pin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (caught.value.details() or "")
    assert pin not in (caught.value.details() or "")
    assert world.terminals[0].redeem(card, 100).response_code == "00"  # still no PIN on the card


def test_pin_block_of_the_wrong_size_is_a_bad_request_and_counts_nothing(world: World) -> None:
    terminal = world.terminals[0]
    with_pin_key(world, terminal)
    card = world.issue(1_000, world.benefit_programme)
    set_pin(world, card, PIN)
    request = pb.RedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=100, currency="EUR"),
        pin_block=b"\x01" * 8,  # a format 0 size under an AES (format 4) key
    )
    with pytest.raises(grpc.RpcError) as caught:
        terminal.stub.Redeem(request, metadata=terminal.metadata, timeout=20)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pin_block must be 16 bytes" in (caught.value.details() or "")
    assert stored_tries(world, card) == 0


def test_blocked_pin_survives_a_restart_and_no_pin_is_stored(tmp_path: Path) -> None:
    world = start_world(tmp_path, "", terminals=1)
    terminal = world.terminals[0]
    try:
        key = with_pin_key(world, terminal)
        card = world.issue(1_000, world.benefit_programme)
        set_pin(world, card, PIN)
        codes = [redeem_with_pin(terminal, key, card, WRONG_PIN).response_code for _ in range(3)]
        assert codes == ["55", "55", "75"]
    finally:
        world.channel.close()
        world.server.stop()

    restarted = SwitchServer(world.server.settings)
    restarted.start()
    try:
        channel = grpc.insecure_channel(restarted.address)
        again = TerminalClient(pb_grpc.TerminalStub(channel), terminal.credential, terminal.terminal_id)
        # The terminal key and the tries came back from the database: the right PIN is still refused.
        assert redeem_with_pin(again, key, card, PIN).response_code == "75"
        channel.close()
    finally:
        restarted.stop()
    database = (tmp_path / "txswitch.sqlite").read_bytes()
    wal = tmp_path / "txswitch.sqlite-wal"
    database += wal.read_bytes() if wal.exists() else b""
    assert PIN.encode() not in database


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_reactivated_terminal_pin_is_checked_under_its_new_key_never_the_old(
    tmp_path: Path, database: str
) -> None:
    with payment_world(tmp_path, database) as paying:
        world = paying.world
        card = world.issue(1_000, world.benefit_programme)
        set_pin(world, card, PIN)
        first = activate(world.channel, "A77-rekeyed")
        first_client = TerminalClient(first.stub, first.credential, first.terminal_id)
        assert redeem_with_pin(first_client, first.pin_key, card, PIN).response_code == "00"

        again = activate(world.channel, "A77-rekeyed")  # the same device: same id, a new PIN key
        assert again.terminal_id == first.terminal_id and again.pin_key != first.pin_key
        client = TerminalClient(again.stub, again.credential, again.terminal_id)
        assert redeem_with_pin(client, again.pin_key, card, PIN).response_code == "00"
        assert stored_tries(world, card) == 0
        # The old key's block no longer decodes to the PIN: a wrong try, never an approval.
        under_old_key = redeem_with_pin(client, first.pin_key, card, PIN)
        assert under_old_key.response_code == "55"
        assert stored_tries(world, card) == 1
        assert client.balance(card) == 800


def test_a_missing_pin_is_pin_required_never_a_wrong_pin(world: World) -> None:
    terminal = world.terminals[0]
    key = with_pin_key(world, terminal)
    card = world.issue(1_000, world.benefit_programme)
    set_pin(world, card, PIN)
    txn = new_txn()
    missing = terminal.redeem(card, 100, txn=txn)
    more = [terminal.redeem(card, 100) for _ in range(3)]  # more than the tries a card has
    # Both are 55 on the wire; the message, the stored answer and the count tell them apart.
    assert (missing.response_code, missing.message) == ("55", "PIN required: this card needs its PIN")
    assert [(r.response_code, r.message) for r in more] == [("55", missing.message)] * 3
    status = terminal.stub.TransactionStatus(
        pb.TransactionStatusRequest(transaction_id=txn), metadata=terminal.metadata, timeout=20
    )
    assert status.transaction.message == missing.message
    assert stored_tries(world, card) == 0
    wrong = redeem_with_pin(terminal, key, card, WRONG_PIN)
    assert (wrong.response_code, wrong.message) == ("55", "Incorrect PIN")
    assert stored_tries(world, card) == 1
    assert redeem_with_pin(terminal, key, card, PIN).response_code == "00"
