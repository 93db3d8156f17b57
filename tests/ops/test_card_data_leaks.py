"""Card numbers that reached the database, the logs, the console's audit log or the operator's
screen (session 22 audit; each test failed before its fix): a number typed into a block reason, a
number grouped with more than one space or dash (the console found the card, the scrubber missed
it), a mistyped number (not Luhn-valid, so not masked), a 10-digit field 2 masked as all its
digits, and `txswitch admin` echoing an argument given without its key.

Each test drives a real switch (gRPC on loopback, a SQLite file, real TCP for ISO 8583, a real SSH
client for the console) and then looks where the card data must not be.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from ops.logs import configure_logging
from protocols.iso8583 import encode_message, format_amount, frame
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.domain.cards import CardStatus
from tests.integration.harness import MERCHANT_EMAIL, World, start_world
from tests.integration.test_inbound_iso import read_answer
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with

ACQUIRER = "4711"
ZONE_KEY = bytes(range(16))


@contextmanager
def switch_log(level: int = logging.INFO) -> Iterator[io.StringIO]:
    """The JSON lines `txswitch serve` writes to stderr (configure_logging), into a buffer."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, old_level = list(root.handlers), root.level
    configure_logging(level, stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(old_level)


def data_files(data_dir: Path) -> dict[Path, bytes]:
    """Every file of the data directory: the SQLite file, its -wal and -shm, the audit log, ..."""
    return {path: path.read_bytes() for path in data_dir.rglob("*") if path.is_file()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = start_world(tmp_path / "data", "", 1)
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


@pytest.fixture
def console(keys: Keys, tmp_path: Path) -> Iterator[tuple[ConsoleWorld, object]]:
    with switch_log() as log:
        for console_world in console_world_with(keys, tmp_path):
            yield console_world, log


# 1. The database ----------------------------------------------------------------------------


def test_a_card_number_in_the_block_reason_is_not_stored_in_clear(world: World, tmp_path: Path) -> None:
    """`txswitch admin block-card card=<number> reason=...`: operators write why, and the "why" of a
    lost or stolen card often names the card. The reason goes verbatim into card_events.detail."""
    card = world.issue(1_000)
    request = bo.BlockCardRequest(
        card=pb.CardRef(card_number=card), reason=f"stolen; holder called about card {card}"
    )
    view = world.backoffice.BlockCard(request, metadata=world.admin_metadata, timeout=20)
    assert view.status == CardStatus.blocked.value
    files = data_files(tmp_path / "data")
    assert any(path.name.startswith("txswitch.sqlite") for path in files)
    for path, content in files.items():
        assert card.encode() not in content, f"the clear card number is in {path.name}"


# 2. The SSH console: audit log and switch log -----------------------------------------------


def _grouped(card: str, separator: str) -> str:
    return separator.join(card[index : index + 4] for index in range(0, len(card), 4))


# (separator between the groups, the console reads a card number): it reads one space or dash
# (cards.typed_card_digits, gRPC's rule); other groupings are looked up as a card id, and not found.
CONSOLE_GROUPINGS: list[tuple[str, bool]] = [
    (" ", True),
    ("-", True),
    ("  ", False),
    (" - ", False),
    ("--", False),
]


@pytest.mark.parametrize(("separator", "read"), CONSOLE_GROUPINGS)
def test_a_card_number_typed_grouped_at_the_console_is_masked_in_the_audit_log_and_the_log(
    console: tuple[ConsoleWorld, object], separator: str, read: bool
) -> None:
    """The scrubber masks digits split by up to 3 spaces or dashes, so the audit log and asyncssh's
    "Command:" log line keep no grouping of the number in clear, read by the console or not."""
    console_world, log = console
    world = console_world.world
    card = world.issue(1_000)
    reference = _grouped(card, separator)
    (blocked,) = console_world.run(console_world.keys.operator, f"cards block '{reference}'")
    card_id = world.server.core.cards.card_id(card)
    assert card_id is not None
    if read:
        assert blocked.exit_status == 0 and "blocked" in blocked.stdout, blocked
        assert world.server.core.store.card_state(card_id).status is CardStatus.blocked
    else:
        assert blocked.exit_status == 1 and "no such card" in blocked.stderr, blocked
        assert world.server.core.store.card_state(card_id).status is CardStatus.active
    audit = console_world.audit_path.read_text()
    assert "cards block" in audit
    assert reference not in audit, "the audit log keeps the card number in clear"
    assert reference not in log.getvalue(), "the switch log keeps the card number in clear"  # type: ignore[attr-defined]


def test_a_mistyped_card_number_is_masked_in_the_audit_log_and_the_log(
    console: tuple[ConsoleWorld, object],
) -> None:
    """One digit typed wrong: no card is found, but 15 of its 16 digits are a real card's. The
    audit log (and asyncssh's INFO line in the switch log) mask only Luhn-valid numbers."""
    console_world, log = console
    card = console_world.world.issue(1_000)
    mistyped = card[:-1] + str((int(card[-1]) + 1) % 10)
    (shown,) = console_world.run(console_world.keys.viewer, f"cards show {mistyped}")
    assert shown.exit_status == 1 and "no such card" in shown.stderr, shown
    audit = console_world.audit_path.read_text()
    assert "cards show" in audit
    assert mistyped not in audit, "the audit log keeps the mistyped card number in clear"
    assert mistyped not in log.getvalue(), "the switch log keeps the mistyped card number in clear"  # type: ignore[attr-defined]


# 3. Inbound ISO 8583: the log line's masked field 2 ------------------------------------------


def test_the_inbound_log_line_never_shows_every_digit_of_field_2(tmp_path: Path) -> None:
    """mask_pan keeps the first 6 and last 4 digits of any PAN of 10 digits or more: of a 10-digit
    field 2 that is every digit, and of an 11-digit one all but one (which the Luhn digit gives
    back). A mask must hide at least two digits."""
    pans = ("5412345678", "54123456789")
    with switch_log() as log:
        world = start_world(
            tmp_path / "data",
            "",
            0,
            iso_listen_port=0,
            iso_inbound_acquirers=f"{ACQUIRER}:{MERCHANT_EMAIL}:{ZONE_KEY.hex()}",
        )
        try:
            listener = world.server.iso_inbound
            assert listener is not None
            with socket.create_connection(("127.0.0.1", listener.port), timeout=20) as connection:
                for stan, pan in enumerate(pans, start=1):
                    request = {
                        "t": "0200",
                        "2": pan,
                        "3": "000000",
                        "4": format_amount(100),
                        "7": "1121120000",
                        "11": f"{stan:06d}",
                        "22": "051",
                        "32": ACQUIRER,
                        "41": "THIRD001",
                        "42": "THIRDPARTYSHOP1",
                        "49": "978",
                    }
                    connection.sendall(frame(encode_message(request)))
                    answer = read_answer(connection)
                    assert answer["39"] == "14"  # not one of our cards
        finally:
            world.channel.close()
            world.server.stop()
        lines = [json.loads(line) for line in log.getvalue().splitlines()]
    logged = [line["request"]["2"] for line in lines if line.get("message") == "ISO 8583 inbound"]
    assert len(logged) == len(pans), "the inbound log lines were captured"
    for pan, masked in zip(pans, logged, strict=True):
        shown = masked.replace("*", "")
        assert len(shown) <= len(pan) - 2, f"field 2 {pan} logged as {masked}: {len(shown)} digits in clear"


# 4. The operator's screen: `txswitch admin` ---------------------------------------------------


def test_txswitch_admin_does_not_echo_a_card_number_given_without_its_key(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """`txswitch admin show-card 6001...` (card= forgotten) answers "argument '6001...' is not
    key=value": the number on stderr, in the terminal's scrollback and in any job's log."""
    card = world.issue(1_000)
    status = cli.main(
        [
            "admin",
            "--target",
            world.server.address,
            "--data-dir",
            str(world.server.settings.data_dir),
            "show-card",
            card,
        ]
    )
    captured = capsys.readouterr()
    assert status == 2 and "key=value" in captured.err, captured
    assert card not in captured.err + captured.out, "the clear card number is on the console"


# 5. A card number joined to another group of digits, in a transaction id ---------------------

TEST_PAN = "4111111111111111"
JOINED_IDS = ["T1-4111-1111-1111-1111", "4111 1111 1111 1111 2"]


@pytest.mark.parametrize("transaction_id", JOINED_IDS)
def test_a_card_number_joined_to_a_group_in_a_transaction_id_is_in_no_log_line(
    world: World, tmp_path: Path, transaction_id: str
) -> None:
    """A grouped run of 17 digits fails Luhn as a whole, and only glued runs longer than 19 digits
    were searched for a card number: the id was taken, stored, and logged in the transaction line."""
    card = world.issue(2_000)
    with switch_log() as log:
        try:
            answer = f"taken: {world.terminals[0].redeem(card, 500, transaction_id).response_code}"
        except grpc.RpcError as error:
            answer = f"{error.code().name}: {error.details()}"
    assert TEST_PAN not in re.sub(r"[ -]", "", log.getvalue()), "the switch log shows the card number"
    assert answer == "INVALID_ARGUMENT: transaction_id has the shape of a card number"
    stored = b"".join(data_files(tmp_path / "data").values())
    assert transaction_id.encode() not in stored, "the id holding a card number was stored"
