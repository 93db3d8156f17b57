"""What the SSH console shows of session 22's data (its audit of the operator surfaces; each test
failed before its fix), through a real asyncssh client against a real switch: the web back
office's terminal counted online and deactivated for good, and a card's blocked PIN shown as not."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import signal
import threading
from pathlib import Path

from actors.journal_writer import JournalWriter
from ops.logs import configure_logging
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from switch.admin import WEB_BACK_OFFICE
from switch.security import PinBlockFormat
from switch.security.pinpad import encipher_pin_block
from terminal_sim.acquirer_host import HostThread
from tests.integration.harness import World, new_txn
from tests.integration.journal_world import issue, make_world, redemption
from tests.integration.payment_harness import MASTER_KEY_HEX, acquirers_file
from tests.integration.test_portal import sign_in
from tests.integration.test_portal import stub as portal_stub
from tests.ops.conftest import ConsoleWorld, Keys, console_world_with


def field(text: str, name: str) -> str:
    found = re.search(rf"^{name}\s+(.*)$", text, re.MULTILINE)
    assert found, text
    return found.group(1).strip()


def web_redeem(world: World, amount_minor: int, card: str) -> pb.TransactionResponse:
    owner = sign_in(world)
    request = portal.PortalRedeemRequest(
        transaction_id=new_txn(),
        card=pb.CardRef(card_number=card),
        amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
    )
    answer: pb.TransactionResponse = portal_stub(world).Redeem(request, metadata=owner, timeout=20)
    return answer


def web_terminal_id(world: World) -> str:
    terminals = world.server.core.admin.list_terminals(world.merchant_id)
    (web,) = [t for t in terminals if t.device_name == WEB_BACK_OFFICE]
    return web.terminal_id


def test_the_web_back_office_is_not_counted_as_a_terminal_online(console_world: ConsoleWorld) -> None:
    """The web back office's terminal has no session (nobody holds its credential, README: "never
    activated"), yet once a merchant redeemed in the portal its actor is live, and `status`,
    `terminals show` and txswitch_terminals_online count it as a terminal online."""
    world = console_world.world
    card = world.issue(1_000)
    assert world.terminals[0].redeem(card, 100).response_code == "00"  # the one real device, online
    assert web_redeem(world, 200, card).response_code == "00"
    web = web_terminal_id(world)

    status, show = console_world.run(console_world.keys.viewer, "status", f"terminals show {web}")
    online_metric = world.server.ops.metrics.registry.get_sample_value("txswitch_terminals_online")
    assert (field(status.stdout, "terminals online"), field(show.stdout, "online"), online_metric) == (
        "1",
        "no",
        1,
    ), status.stdout


def test_status_counts_devices_as_terminals_active_and_the_switchs_own_apart(
    console_world: ConsoleWorld,
) -> None:
    """The web back office's and the online top-ups' terminals are the switch's own (README: no
    location's terminals, never activated); `status` counted them among the terminals active."""
    world = console_world.world
    card = world.issue(1_000)
    assert web_redeem(world, 200, card).response_code == "00"  # makes the location's web terminal
    world.server.core.online_top_up_terminal(world.benefit_programme)  # a top-up's first use makes it

    (status,) = console_world.run(console_world.keys.viewer, "status")
    assert field(status.stdout, "terminals active") == "1", status.stdout  # the one A77 device
    assert field(status.stdout, "switch terminals") == "2 (web back office, online top-up)", status.stdout


def test_the_console_refuses_to_deactivate_the_web_back_office(
    console_world: ConsoleWorld,
) -> None:
    """`terminals deactivate` takes the web back office's terminal like a device's. A device comes back
    by activating again; the web back office cannot (Activate refuses its name, `web_terminal` hands
    out the deactivated row as it is, nothing sets it active again): the location's web redemptions
    are declined 12 for good. Either the console refuses it, or the web back office works again."""
    world = console_world.world
    card = world.issue(1_000)
    assert web_redeem(world, 100, card).response_code == "00"
    web = web_terminal_id(world)

    (deactivated,) = console_world.run(console_world.keys.operator, f"terminals deactivate {web}")
    assert deactivated.exit_status != 0
    assert "web back office" in deactivated.stdout + deactivated.stderr
    assert web_redeem(world, 100, card).response_code == "00"


def test_cards_show_says_the_cards_pin_is_blocked(console_world: ConsoleWorld) -> None:
    """Benefit cards have a cardholder PIN (three wrong tries block it, code 75); `cards show` prints
    `PIN blocked  no` for every card (ops_backend: "stored-value cards carry no cardholder PIN")."""
    world = console_world.world
    terminal = world.terminals[0]
    key = secrets.token_bytes(16)
    world.server.core.pins.install_terminal_pin_key(terminal.terminal_id, key)
    card = world.issue(1_000, world.benefit_programme)
    world.backoffice.SetCardPin(
        bo.SetCardPinRequest(card=pb.CardRef(card_number=card), pin="4812"),
        metadata=world.admin_metadata,
        timeout=20,
    )
    codes = []
    for _ in range(3):
        request = pb.RedeemRequest(
            transaction_id=new_txn(),
            card=pb.CardRef(card_number=card),
            amount=pb.Amount(amount_minor=100, currency="EUR"),
            pin_block=encipher_pin_block("1111", card, key, PinBlockFormat.ISO_4),
        )
        codes.append(terminal.stub.Redeem(request, metadata=terminal.metadata, timeout=20).response_code)
    assert codes[-1] == "75", codes  # the PIN is blocked now

    (shown,) = console_world.run(console_world.keys.viewer, f"cards show {card}")
    assert shown.exit_status == 0, shown
    assert field(shown.stdout, "PIN blocked") == "yes", shown.stdout


# The README and the journal alert tell the operator to look for "journal lost" in the log; it was
# only printed to stdout, and the CRITICAL line said neither phrase.
def test_a_lost_journal_process_is_logged_as_journal_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    engine = make_world(url)
    issue(engine, "card_a", 1_000)
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(logging.INFO, stream)
    lost = threading.Event()
    writer = JournalWriter(
        engine, batch_writes_max=1, queue_writes_max=8, database_url=url, on_lost=lambda _: lost.set()
    )
    try:
        writer.start()
        pid = writer.process_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert writer.submit(redemption("t1", "card_a", 100), lambda _result: None)
        assert lost.wait(10), "the writer did not notice the journal process died"
    finally:
        writer.stop(timeout_s=5)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        engine.dispose()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    critical = [line["message"] for line in lines if line["level"] == "critical"]
    assert critical, lines
    assert any("journal lost" in message for message in critical), critical


def test_acquirers_status_shows_when_the_last_echo_was_answered(keys: Keys, tmp_path: Path) -> None:
    # The column was always "-": nothing recorded an echo's answer.
    with HostThread() as host:
        assert host.host.port is not None
        settings_file = acquirers_file(tmp_path / "acquirers.toml", host.host.port)
        for console_world in console_world_with(
            keys, tmp_path, acquirers_file=settings_file, master_key_hex=MASTER_KEY_HEX
        ):
            before, echoed, after = console_world.run(
                console_world.keys.operator, "acquirers status", "acquirers echo acq-sim", "acquirers status"
            )
            assert "00" in echoed.stdout, echoed
            row_before = next(line for line in before.stdout.splitlines() if line.startswith("acq-sim"))
            row_after = next(line for line in after.stdout.splitlines() if line.startswith("acq-sim"))
            stamp = re.compile(r"\d{4}-\d{2}-\d{2}")
            assert not stamp.search(row_before) and stamp.search(row_after), (before.stdout, after.stdout)
