"""The SSH ops console of a real switch, through a real asyncssh client: each command, roles, audit."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from aiosmtpd.controller import Controller
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event

from ops.console_auth import AuthorizedKeys
from ops.console_commands import Outcome
from ops.logs import holds_card_number
from ops.ssh import asyncssh
from protocols.wire import terminal_pb2 as pb
from switch.domain.cards import CardStatus, mask
from switch.store.journal import PeriodClose, Write, WriteResult
from switch.store.repository import DAY_CLOSES_LISTED_DEFAULT
from terminal_sim.processes import free_port
from tests.integration.harness import World, new_txn
from tests.integration.test_card_replacement import card_event_kinds
from tests.integration.test_receipts import Mailbox
from tests.integration.test_top_up_sweep import left_confirming
from tests.integration.test_top_ups import confirm, start
from tests.ops.conftest import (
    CLIENT_TIMEOUT_S,
    ConsoleWorld,
    ExecResult,
    Keys,
    console_world_with,
    exec_commands,
)


def audit_lines(console: ConsoleWorld) -> list[dict[str, object]]:
    return [json.loads(line) for line in console.audit_path.read_text().splitlines()]


def card_id_of(console: ConsoleWorld, number: str) -> str:
    card_id = console.world.server.core.cards.card_id(number)
    assert card_id is not None
    return card_id


def assert_ok(result: ExecResult, *expected: str) -> None:
    assert result.exit_status == 0, result
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_viewer_reads_status_terminals_cards_and_day_closes(console_world: ConsoleWorld) -> None:
    world = console_world.world
    terminal = world.terminals[0]
    number = world.issue(2_500)
    assert terminal.redeem(number, 700).response_code == "00"
    close = terminal.stub.DayClose(
        pb.DayCloseRequest(close_id=new_txn()), metadata=terminal.metadata, timeout=20
    )
    assert close.sequence_number == 1
    assert terminal.redeem(number, 300).response_code == "00"  # in the open period
    tid = terminal.terminal_id
    card_id = card_id_of(console_world, number)

    status, listing, show, card, card_by_id, closes, helped = console_world.run(
        console_world.keys.viewer,
        "status",
        "terminals list",
        f"terminals show {tid}",
        f"cards show {number}",
        f"cards show {card_id}",
        f"day-close list {tid}",
        "help",
    )

    assert_ok(status, "state               serving", "terminals active    1", "acquirer links up   0/0")
    assert_ok(status, "location changes    0 pending")
    assert_ok(listing, tid, "Shop", "A77-0", "active")
    assert_ok(show, f"terminal      {tid}", "day closes    1", "last seen at")
    assert_ok(card, mask(number), card_id, "15.00 EUR", "active", "Gift (gift)")
    assert_ok(card_by_id, mask(number), "15.00 EUR")
    assert_ok(closes, "#1", "closed", "redemption  1      7.00 EUR", "#2", "open (X report)", "3.00 EUR")
    assert_ok(helped, "terminals deactivate ID", "(operator only)")
    assert all(number not in result.stdout for result in (card, card_by_id))


def test_day_close_list_pages_back_through_older_closes(console_world: ConsoleWorld) -> None:
    """Three closes, two a page: the newest page ends with the open period and names the command
    for the older one, which holds the first close and names none. Before, the list was the
    newest 100 closes, and no command reached an older one."""
    world = console_world.world
    terminal = world.terminals[0]
    number = world.issue(2_500)
    for amount_minor in (100, 200, 300):
        assert terminal.redeem(number, amount_minor).response_code == "00"
        terminal.stub.DayClose(pb.DayCloseRequest(close_id=new_txn()), metadata=terminal.metadata, timeout=20)
    tid = terminal.terminal_id

    newest, older, all_of_them, none_before = console_world.run(
        console_world.keys.viewer,
        f"day-close list {tid} --page-size 2",
        f"day-close list {tid} --before 2 --page-size 2",
        f"day-close list {tid}",
        f"day-close list {tid} --before 1",
    )

    assert_ok(newest, "#2", "2.00 EUR", "#3", "3.00 EUR", "#4", "open (X report)")
    assert "#1" not in newest.stdout
    assert newest.stdout.strip().endswith(f"older closes: day-close list {tid} --before 2 --page-size 2")
    assert_ok(older, "#1", "1.00 EUR")
    assert not any(f"#{n}" in older.stdout for n in (2, 3, 4)), older.stdout
    assert "older closes" not in older.stdout
    assert_ok(all_of_them, "#1", "#2", "#3", "#4  opened")
    assert "older closes" not in all_of_them.stdout
    assert_ok(none_before, f"no day closes for {tid} before #1")

    # Past a page of the default size: `terminals show` names the newest close, read alone; it read
    # the newest 100 closes, totals and all, for their highest number.
    _close_periods(world, tid, DAY_CLOSES_LISTED_DEFAULT)
    closes_read: list[str] = []

    def read(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "totals_json" in statement and "FROM day_closes" in statement:
            closes_read.append(statement)

    engine = world.server.core.store.engine
    event.listen(engine, "before_cursor_execute", read)
    try:
        show = console_world.run_one(console_world.keys.viewer, f"terminals show {tid}")
    finally:
        event.remove(engine, "before_cursor_execute", read)
    assert_ok(show, f"day closes    {3 + DAY_CLOSES_LISTED_DEFAULT}\n")
    assert closes_read == [], closes_read


def _close_periods(world: World, terminal_id: str, count: int) -> None:
    """count closes of the terminal's periods through the journal, in one go: no gRPC round trip each."""
    info = world.server.core.store.terminal(terminal_id)
    assert info is not None
    landed: list[WriteResult] = []
    all_landed = threading.Event()

    def done(result: WriteResult) -> None:
        landed.append(result)
        if len(landed) == count:
            all_landed.set()

    for period_number in range(info.period_number, info.period_number + count):
        moment = info.period_opened_at + datetime.timedelta(seconds=period_number)
        close = PeriodClose(terminal_id, new_txn(), period_number, moment, moment)
        assert world.server.core.writer.submit(Write(period_close=close), done)
    assert all_landed.wait(CLIENT_TIMEOUT_S), f"{len(landed)} of {count} closes landed"
    assert all(result.ok for result in landed), [result.problem for result in landed if not result.ok]


def test_status_says_how_many_location_changes_wait_for_the_operator(console_world: ConsoleWorld) -> None:
    world = console_world.world
    core = world.server.core
    (location,) = core.admin.list_locations(world.merchant_id)
    core.location_changes.ask(
        world.merchant_id, location.location_id, "Shop Centre", "", "owner@example.test"
    )
    (status,) = console_world.run(console_world.keys.viewer, "status")
    assert_ok(
        status, "location changes    1 pending, the oldest for 0 h", "list-location-changes status=pending"
    )


def test_status_says_how_many_top_ups_wait_as_the_sweep_counted_them(console_world: ConsoleWorld) -> None:
    """Session 28: status showed the location changes waiting, not the online top-ups confirming (a
    load not known yet) or refund_due (the holder owed a refund): the operator found them only in
    the metrics or ListTopUps. Status shows the sweep's last count, as txswitch_top_ups_waiting."""
    world = console_world.world
    cards = [world.issue(0, world.benefit_programme) for _ in range(3)]
    owed, stuck, _pending = (start(world, card, 500) for card in cards)
    assert confirm(world, owed.top_up_id, "p-owed", 100).status == "refund_due"
    left_confirming(world, stuck.top_up_id, 180, minutes_ago=1)  # younger than the sweep's grace
    world.server.core.top_ups.count_waiting()  # what the sweep does after its tries
    (status,) = console_world.run(console_world.keys.viewer, "status")
    assert_ok(
        status,
        "top-ups waiting     1 confirming, the oldest for 1 min; 1 refund_due, the oldest for 0 min "
        "(txswitch admin list-top-ups status=refund_due); as the last sweep counted them",
    )
    assert not any(card in status.stdout for card in cards) and owed.top_up_id not in status.stdout


def test_operator_blocks_unblocks_and_replaces_cards_in_the_switch(console_world: ConsoleWorld) -> None:
    world = console_world.world
    terminal = world.terminals[0]
    lost, replacement = world.issue(4_000), world.issue(500)
    store = world.server.core.store
    lost_id, new_id = card_id_of(console_world, lost), card_id_of(console_world, replacement)

    # A card blocked already is blocked again: each reason is stored (audits.md, kept on purpose).
    blocked, blocked_again = console_world.run(
        console_world.keys.operator, f"cards block {lost}", f"cards block {lost_id}"
    )
    assert_ok(blocked, f"card {lost_id}", "blocked")
    assert_ok(blocked_again, f"card {lost_id}", "blocked")
    assert card_event_kinds(world, lost) == ["blocked", "blocked"]
    assert store.card_state(lost_id).status is CardStatus.blocked
    assert terminal.redeem(lost, 100).response_code == "62"

    (unblocked,) = console_world.run(console_world.keys.operator, f"cards unblock {lost_id}")
    assert_ok(unblocked, "active")
    assert terminal.redeem(lost, 100).response_code == "00"

    replaced, unblock_lost, block_lost = console_world.run(
        console_world.keys.operator,
        f"cards replace {lost} {replacement}",
        f"cards unblock {lost}",
        f"cards block {lost}",
    )
    assert_ok(replaced, "moved 39.00 EUR", mask(lost), mask(replacement), "lost")
    assert store.card_state(lost_id).balance_minor == 0
    assert store.card_state(lost_id).status is CardStatus.lost
    assert store.card_state(new_id).balance_minor == 500 + 3_900
    assert unblock_lost.exit_status == Outcome.failed.exit_status
    stays_lost = f"is lost and replaced by {mask(replacement)} ({new_id}): it stays out of use"
    assert stays_lost in unblock_lost.stderr
    # Audit in session 28: a block rewrote the replaced card's status to blocked; it stays lost.
    assert block_lost.exit_status == Outcome.failed.exit_status
    assert f"is lost and replaced by {mask(replacement)} ({new_id})" in block_lost.stderr
    assert store.card_state(lost_id).status is CardStatus.lost
    assert world.ledger().balance_mismatches == 0


def test_a_console_replacement_never_draws_an_id_that_holds_a_card_number(
    console_world: ConsoleWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console draws the replacement's request id; the switch refuses an id holding a card
    number, which a 32-digit uuid4 does about once in 370 draws."""
    world = console_world.world
    lost, replacement = world.issue(1_000), world.issue(0)
    holding = uuid.UUID("ab411111-1111-1111-11cd-ef0123abcd45")  # 4111 1111 1111 1111 in its hex
    assert holds_card_number(f"ops-{holding.hex}")
    real_uuid4, drawn = uuid.uuid4, itertools.count()
    # The first few draws hold a card number, whoever draws them: the replacement is among them.
    monkeypatch.setattr(uuid, "uuid4", lambda: holding if next(drawn) < 3 else real_uuid4())
    (replaced,) = console_world.run(console_world.keys.operator, f"cards replace {lost} {replacement}")
    assert_ok(replaced, "moved 10.00 EUR")
    assert next(drawn) > 3  # the three drawn above went to the replacement, and it drew again


def test_operator_deactivates_a_terminal(console_world: ConsoleWorld) -> None:
    terminal = console_world.world.terminals[0]
    tid = terminal.terminal_id
    done, shown, again = console_world.run(
        console_world.keys.operator,
        f"terminals deactivate {tid}",
        f"terminals show {tid}",
        f"terminals deactivate {tid}",
    )
    assert_ok(done, f"terminal {tid} deactivated")
    assert "closed" not in done.stdout  # nothing approved in its period: no close to report
    assert_ok(shown, "deactivated", "online        no")
    assert again.exit_status == Outcome.failed.exit_status
    assert "already deactivated" in again.stderr
    with pytest.raises(grpc.RpcError) as refused:
        terminal.balance("6001010000000000")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_terminal_deactivated_with_takings_says_it_closed_their_period(console_world: ConsoleWorld) -> None:
    world = console_world.world
    terminal = world.terminals[0]
    assert terminal.redeem(world.issue(1_000), 250).response_code == "00"
    (done,) = console_world.run(console_world.keys.operator, f"terminals deactivate {terminal.terminal_id}")
    assert_ok(done, f"terminal {terminal.terminal_id} deactivated", "its period 1 closed (sequence number 1)")


def test_acquirer_and_saf_commands_without_acquirer_links(console_world: ConsoleWorld) -> None:
    viewed = console_world.run(console_world.keys.viewer, "acquirers status", "saf list")
    for result in viewed:
        assert_ok(result, "no acquirer links configured")
    acted = console_world.run(
        console_world.keys.operator, "acquirers sign-on acq-a", "acquirers echo acq-a", "saf retry"
    )
    for result in acted:
        assert result.exit_status == Outcome.failed.exit_status
        assert "no acquirer links configured" in result.stderr


def test_drain_stops_new_terminal_work_and_reports_not_serving(console_world: ConsoleWorld) -> None:
    world = console_world.world
    terminal = world.terminals[0]
    number = world.issue(1_000)
    drained, status = console_world.run(console_world.keys.operator, "drain", "status")
    assert_ok(drained, "draining", "UNAVAILABLE")
    assert_ok(status, "state               draining", "requests in flight  0")
    health = health_pb2_grpc.HealthStub(world.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as refused:
        terminal.redeem(number, 100)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "draining" in str(refused.value.details())
    assert world.ledger().entries == 1  # only the issue load; the refused redemption moved nothing


OPERATOR_ONLY = [
    "terminals deactivate {tid}",
    "cards block {card}",
    "cards unblock {card}",
    "cards replace {card} {other}",
    "acquirers sign-on acq-a",
    "acquirers echo acq-a",
    "saf retry",
    "drain",
]


def test_viewer_cannot_run_operator_commands(console_world: ConsoleWorld) -> None:
    world = console_world.world
    card, other = world.issue(1_000), world.issue(0)
    tid = world.terminals[0].terminal_id
    commands = [template.format(tid=tid, card=card, other=other) for template in OPERATOR_ONLY]
    results = console_world.run(console_world.keys.viewer, *commands)
    for command, result in zip(commands, results, strict=True):
        assert result.exit_status == Outcome.refused.exit_status, command
        assert "permission denied" in result.stderr and "operator role" in result.stderr
    core = world.server.core
    assert core.store.card_state(card_id_of(console_world, card)).status is CardStatus.active
    assert core.store.card_state(card_id_of(console_world, card)).balance_minor == 1_000
    info = core.store.terminal(tid)
    assert info is not None and info.active
    assert not world.server.draining.is_set()
    refused = [line for line in audit_lines(console_world) if line["outcome"] == "refused"]
    assert [(line["who"], line["role"]) for line in refused] == [("victor@ops", "viewer")] * len(commands)


# (bad command line, message expected on stderr, exit status)
BAD_COMMANDS = [
    ("frobnicate", "unknown command 'frobnicate'; type help", Outcome.usage),
    ("cards", "cards: choose one of show, block, unblock, replace", Outcome.usage),
    ("cards shred C-1", "cards: choose one of", Outcome.usage),
    ("cards show", "usage: cards show REF", Outcome.usage),
    ("cards replace C-1", "usage: cards replace LOST NEW", Outcome.usage),
    ("status now please", "usage: status", Outcome.usage),
    ("cards show 'C-1", "cannot parse the command", Outcome.usage),
    ("cards replace C-1 C-1", "must differ", Outcome.usage),
    ("terminals show T-9999", "no terminal T-9999", Outcome.failed),
    ("terminals deactivate T-9999", "no terminal T-9999", Outcome.failed),
    ("cards show card_404", "no such card", Outcome.failed),
    ("cards show 6001019999999999", "no such card", Outcome.failed),
    ("cards block card_404", "no such card", Outcome.failed),
    # A number failing the Luhn check is named so, as the backoffice's gRPC names it; before, the
    # console answered "no such card". Typed grouped or not, it is never echoed in clear.
    ("cards block 6001019999999999", "failed: card.card_number fails the Luhn check", Outcome.failed),
    ("cards block '6001 0199 9999 9999'", "failed: card.card_number fails the Luhn check", Outcome.failed),
    ("cards unblock 6001-0199-9999-9999", "failed: card.card_number fails the Luhn check", Outcome.failed),
    ("cards block 600101999999", "failed: card.card_number must have 16 digits, got 12", Outcome.failed),
    # Grouped as no card prints it: not a card number, as gRPC's entries judge it (cards.typed_card_digits),
    # so it is looked up as a card id.
    ("cards block '6001  0199  9999  9999'", "failed: no such card", Outcome.failed),
    ("cards block '6001 0199 9999 9999 9'", "failed: no such card", Outcome.failed),
    (
        "cards replace 6001019999999999 card_404",
        "failed: lost_card.card_number fails the Luhn check",
        Outcome.failed,
    ),
    ("day-close list T-9999", "no terminal T-9999", Outcome.failed),
    ("day-close list T-9999 --before 2", "no terminal T-9999", Outcome.failed),
    ("day-close list T-1 --before 0", "--before 0: give a whole number from 1", Outcome.usage),
    ("day-close list T-1 --before two", "--before two: give a whole number from 1", Outcome.usage),
    (
        "day-close list T-1 --page-size 1001",
        "--page-size 1001: give a whole number from 1 to 1000",
        Outcome.usage,
    ),
    ("day-close list T-1 --page-size -5", "--page-size -5: give a whole number", Outcome.usage),
    (
        "day-close list T-1 --before",
        "usage: day-close list TERMINAL [--before SEQUENCE] [--page-size N]",
        Outcome.usage,
    ),
    ("day-close list T-1 --before 2 --before 3", "usage: day-close list TERMINAL", Outcome.usage),
    ("day-close list T-1 T-2", "usage: day-close list TERMINAL", Outcome.usage),
    ("x" * 2000, "longer than", Outcome.usage),
]


def test_bad_commands_get_a_clear_message(console_world: ConsoleWorld) -> None:
    commands = [command for command, _, _ in BAD_COMMANDS]
    results = console_world.run(console_world.keys.operator, *commands)
    for (command, message, outcome), result in zip(BAD_COMMANDS, results, strict=True):
        assert result.exit_status == outcome.exit_status, (command[:30], result)
        assert message in result.stderr, (command[:30], result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        if "6001" in command:  # a mistyped card number: not echoed, masked or not
            assert "6001" not in result.stderr and "9999" not in result.stderr, command[:30]


def test_wrong_key_and_password_are_refused(console_world: ConsoleWorld) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        console_world.run(console_world.keys.stranger, "status")

    async def password_login() -> None:
        async with asyncssh.connect(
            "127.0.0.1",
            console_world.port,
            username="olga",
            password="correct horse battery staple",
            client_keys=None,
            known_hosts=None,
            agent_path=None,
            preferred_auth="password,keyboard-interactive",
        ):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(password_login())


def test_audit_log_records_who_when_what_and_outcome(console_world: ConsoleWorld) -> None:
    number = console_world.world.issue(100)
    console_world.run(console_world.keys.operator, f"cards block {number}", "nonsense")
    console_world.run(console_world.keys.viewer, "drain")
    commands = [line for line in audit_lines(console_world) if line["command"] != "(login)"]
    assert [(line["who"], line["outcome"], line["exit_status"]) for line in commands] == [
        ("olga@ops", "started", None),  # a change is in the log before it runs
        ("olga@ops", "ok", 0),
        ("olga@ops", "usage", Outcome.usage.exit_status),
        ("victor@ops", "refused", Outcome.refused.exit_status),
    ]
    first = commands[0]
    assert first["role"] == "operator"
    assert str(first["key_fingerprint"]).startswith("SHA256:")
    assert str(first["remote"]).startswith("127.0.0.1:")
    moment = datetime.datetime.fromisoformat(str(first["ts"]))
    assert abs(datetime.datetime.now(datetime.UTC) - moment) < datetime.timedelta(minutes=5)
    # The operator typed a full card number; the audit trail keeps no copy of it.
    assert number not in console_world.audit_path.read_text()
    assert first["command"] == "cards block [REDACTED-PAN]"


async def _shell_session(port: int, key: asyncssh.SSHKey, lines: Sequence[str]) -> str:
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        process = await connection.create_process(term_type="xterm", term_size=(120, 40))
        output = await _read_until(process, "> ")
        for line in lines:
            process.stdin.write(line + "\r")
            output += await _read_until(process, "> " if line != "exit" else "bye")
        process.stdin.write_eof()
        await asyncio.wait_for(process.wait_closed(), CLIENT_TIMEOUT_S)
    return output


async def _read_until(process: asyncssh.SSHClientProcess[str], marker: str) -> str:
    seen = ""
    while not seen.rstrip().endswith(marker.rstrip()):
        chunk = await asyncio.wait_for(process.stdout.read(4096), CLIENT_TIMEOUT_S)
        if not chunk:
            break
        seen += chunk
    return seen


def test_interactive_shell(console_world: ConsoleWorld) -> None:
    number = console_world.world.issue(1_250)
    lines = ["status", f"cards show {number}", "bogus", "exit"]
    output = asyncio.run(_shell_session(console_world.port, console_world.keys.operator, lines))
    assert "you are olga@ops (operator)" in output
    assert "txswitch operator> " in output
    assert "terminals online" in output
    assert mask(number) in output and "12.50 EUR" in output
    assert "unknown command 'bogus'" in output
    assert "bye" in output
    assert {line["mode"] for line in audit_lines(console_world)} == {"shell"}


def test_exec_commands_helper_reports_exit_status(console_world: ConsoleWorld) -> None:
    # One connection, several sessions: the console keeps each command's own exit status.
    results = asyncio.run(exec_commands(console_world.port, console_world.keys.viewer, ["help", "nope"]))
    assert [result.exit_status for result in results] == [0, Outcome.usage.exit_status]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("admin ssh-ed25519 AAAA", "line 1: role must be one of viewer, operator"),
        ("operator ssh-ed25519 not-base64", "line 1: not an OpenSSH public key"),
        ("operator", "line 1: not an OpenSSH public key"),
    ],
)
def test_bad_authorized_key_lines_are_configuration_errors(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthorizedKeys.from_lines([line])


def test_receipts_waiting_for_the_mail_server_are_listed_masked_and_sent_on_retry(
    keys: Keys, tmp_path: Path
) -> None:
    port = free_port()  # the mail server is down for now
    for console in console_world_with(
        keys, tmp_path, smtp_host="127.0.0.1", smtp_port=port, receipt_retry_s=600
    ):
        terminal = console.world.terminals[0]
        terminal.redeem(console.world.issue(1_000), 250, "sale-1")
        terminal.stub.SendReceipt(
            pb.SendReceiptRequest(transaction_id="sale-1", email="jane.doe@example.com"),
            metadata=terminal.metadata,
            timeout=20,
        )
        deadline = time.monotonic() + 10
        while console.world.server.core.receipts.outbox()[1][0].attempts == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (waiting,) = console.run(console.keys.viewer, "receipts list")
        assert_ok(
            waiting, "receipts: queued 1, sent 0, failed 0", "sale-1", "j***@example.com", "not reached"
        )
        assert "jane.doe" not in waiting.stdout
        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            refused, retried = (
                console.run(console.keys.viewer, "receipts retry"),
                console.run(console.keys.operator, "receipts retry"),
            )
            assert refused[0].exit_status == Outcome.refused.exit_status
            assert_ok(retried[0], "1 waiting receipts are due now")
            deadline = time.monotonic() + 10
            while not mailbox.messages:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            controller.stop()
        (after,) = console.run(console.keys.viewer, "receipts list")
        assert_ok(after, "receipts: queued 0, sent 1, failed 0; none waiting or given up")


def test_receipts_commands_say_when_receipts_are_off(console_world: ConsoleWorld) -> None:
    listed, retried = console_world.run(console_world.keys.operator, "receipts list", "receipts retry")
    assert_ok(listed, "e-mailed receipts are off")
    assert retried.exit_status == Outcome.failed.exit_status and "e-mailed receipts are off" in retried.stderr


def test_the_console_imports_without_warnings_on_stderr() -> None:
    # asyncssh's crypto layer warned about DSA at import: ten lines before `make run` said anything.
    started = subprocess.run(
        [sys.executable, "-c", "import ops.console"], capture_output=True, text=True, check=True, timeout=60
    )
    assert started.stderr == ""
