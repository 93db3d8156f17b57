"""The SSH ops console through a real asyncssh client on loopback: login, roles, commands, audit."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from ops.console import ConsoleConfig, OpsConsole
from ops.console_backend import (
    AcquirerInfo,
    ActionResult,
    CardInfo,
    DayCloseReport,
    DayCloseTotal,
    StoreAndForwardEntry,
    SwitchStatus,
    TerminalInfo,
)
from ops.console_commands import Outcome

CLIENT_TIMEOUT_S = 10.0
CARD_NUMBER = "6036120000000019"
NEW_CARD_NUMBER = "6036120000000027"
NOW = datetime.datetime(2026, 11, 21, 9, 30, tzinfo=datetime.UTC)


def masked(number: str) -> str:
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


# -- a backend that keeps the switch's state in memory, until the real switch implements it --


@dataclass
class MemoryCard:
    ref: str
    number: str
    status: str
    balance_minor: int


class MemoryBackend:
    """Stands in for the switch behind the OpsBackend protocol; state in dicts."""

    def __init__(self) -> None:
        self.draining = False
        self.fail_status = False
        # Plays a buggy switch that hands the console a full card number.
        self.leak_card_numbers = False
        self.terminals = {
            "T-0001": TerminalInfo("T-0001", "Bakker", "Utrecht", "A77-1", True, True, NOW, NOW, 3),
            "T-0002": TerminalInfo("T-0002", "Bakker", "Utrecht", "A77-2", True, False, NOW, None, 0),
        }
        self.cards = {
            "C-1": MemoryCard("C-1", CARD_NUMBER, "active", 2_500),
            "C-2": MemoryCard("C-2", NEW_CARD_NUMBER, "active", 0),
        }
        self.acquirers = {"acquirer-a": "signed_on", "acquirer-b": "down"}
        self.saf = [StoreAndForwardEntry("S-1", "acquirer-b", "0420", "000123", 1_999, "EUR", 2, 4, NOW, NOW)]
        self.actions: list[tuple[str, str, str]] = []

    def _card(self, ref: str) -> MemoryCard | None:
        return self.cards.get(ref) or next((card for card in self.cards.values() if card.number == ref), None)

    def status(self) -> SwitchStatus:
        if self.fail_status:
            raise RuntimeError("database is gone")
        up = sum(state == "signed_on" for state in self.acquirers.values())
        return SwitchStatus("0.1.0", 3_600, self.draining, 2, 1, 17, 0, up, 2, len(self.saf))

    def list_terminals(self) -> Sequence[TerminalInfo]:
        return list(self.terminals.values())

    def find_terminal(self, terminal_id: str) -> TerminalInfo | None:
        return self.terminals.get(terminal_id)

    def deactivate_terminal(self, terminal_id: str, actor: str) -> ActionResult:
        terminal = self.terminals.get(terminal_id)
        if terminal is None:
            return ActionResult(False, f"no terminal {terminal_id}")
        self.terminals[terminal_id] = dataclasses.replace(terminal, active=False, online=False)
        self.actions.append(("deactivate", terminal_id, actor))
        return ActionResult(True, f"terminal {terminal_id} deactivated")

    def find_card(self, card_ref: str) -> CardInfo | None:
        card = self._card(card_ref)
        if card is None:
            return None
        expiry = datetime.date(2029, 12, 31)
        number = card.number if self.leak_card_numbers else masked(card.number)
        return CardInfo(
            card.ref, number, "gift", card.status, expiry, card.balance_minor,
            "EUR", 2, False,
        )  # fmt: skip

    def _set_status(self, card_ref: str, status: str, actor: str) -> ActionResult:
        card = self._card(card_ref)
        if card is None:
            return ActionResult(False, "no such card")
        card.status = status
        self.actions.append((status, card.ref, actor))
        return ActionResult(True, f"card {card.ref} {status}")

    def block_card(self, card_ref: str, actor: str) -> ActionResult:
        return self._set_status(card_ref, "blocked", actor)

    def unblock_card(self, card_ref: str, actor: str) -> ActionResult:
        return self._set_status(card_ref, "active", actor)

    def replace_card(self, lost_card_ref: str, new_card_ref: str, actor: str) -> ActionResult:
        lost, new = self._card(lost_card_ref), self._card(new_card_ref)
        if lost is None or new is None:
            return ActionResult(False, "no such card")
        moved_minor, lost.balance_minor = lost.balance_minor, 0
        new.balance_minor += moved_minor
        lost.status = "lost"
        self.actions.append(("replace", f"{lost.ref}->{new.ref}", actor))
        return ActionResult(True, f"moved {moved_minor} minor units from {lost.ref} to {new.ref}")

    def day_close_reports(self, terminal_id: str) -> Sequence[DayCloseReport] | None:
        if terminal_id not in self.terminals:
            return None
        totals = [DayCloseTotal("redeem", 12, 30_050, "EUR", 2)]
        return [
            DayCloseReport(terminal_id, 3, NOW, NOW, totals),
            DayCloseReport(terminal_id, 4, NOW, None, []),
        ]

    def list_acquirers(self) -> Sequence[AcquirerInfo]:
        return [
            AcquirerInfo(name, state, "127.0.0.1", 8583, 0, NOW, 0) for name, state in self.acquirers.items()
        ]

    def acquirer_sign_on(self, name: str, actor: str) -> ActionResult:
        if name not in self.acquirers:
            return ActionResult(False, f"no acquirer {name}")
        self.acquirers[name] = "signed_on"
        self.actions.append(("sign-on", name, actor))
        return ActionResult(True, f"{name} signed on")

    def acquirer_echo(self, name: str, actor: str) -> ActionResult:
        if name not in self.acquirers:
            return ActionResult(False, f"no acquirer {name}")
        return ActionResult(True, f"{name} answered echo in 3 ms")

    def store_and_forward_entries(self) -> Sequence[StoreAndForwardEntry]:
        return list(self.saf)

    def store_and_forward_retry(self, actor: str) -> ActionResult:
        count = len(self.saf)
        self.actions.append(("saf-retry", str(count), actor))
        return ActionResult(True, f"{count} advices queued for retransmission")

    def drain(self, actor: str) -> ActionResult:
        self.draining = True
        self.actions.append(("drain", "", actor))
        return ActionResult(True, "draining: no new requests; in-flight ones finish")


# -- fixtures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    operator: asyncssh.SSHKey
    viewer: asyncssh.SSHKey
    stranger: asyncssh.SSHKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*(asyncssh.generate_private_key("ssh-ed25519") for _ in range(3)))


@dataclass(frozen=True)
class Running:
    console: OpsConsole
    backend: MemoryBackend
    audit_path: Path
    keys: Keys

    def audit_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def public_line(key: asyncssh.SSHKey, comment: str) -> str:
    exported: bytes = key.export_public_key("openssh")
    return exported.decode().strip() + " " + comment


@pytest.fixture
def running(keys: Keys, tmp_path: Path) -> Iterator[Running]:
    backend = MemoryBackend()
    audit_path = tmp_path / "audit" / "console.jsonl"
    config = ConsoleConfig(
        authorized_keys=[
            "# role, then the OpenSSH public key line",
            "operator " + public_line(keys.operator, "olga@ops"),
            "viewer " + public_line(keys.viewer, "victor@ops"),
        ],
        audit_log_path=audit_path,
        port=0,
        host_key_path=tmp_path / "host_key",
    )
    console = OpsConsole(backend, config)
    console.start()
    try:
        yield Running(console, backend, audit_path, keys)
    finally:
        console.stop()


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_status: int | None


async def _exec(port: int, key: asyncssh.SSHKey, command: str) -> ExecResult:
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="someone",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        preferred_auth="publickey",
    ) as connection:
        completed = await connection.run(command, check=False, timeout=CLIENT_TIMEOUT_S)
    return ExecResult(str(completed.stdout), str(completed.stderr), completed.exit_status)


def run_exec(running: Running, key: asyncssh.SSHKey, command: str) -> ExecResult:
    return asyncio.run(_exec(running.console.port, key, command))


# -- tests ----------------------------------------------------------------------------------

# (command, substrings the operator's output must contain)
OPERATOR_COMMANDS = [
    ("status", ("serving", "acquirer links up   1/2")),
    ("terminals list", ("T-0001", "T-0002", "online")),
    ("terminals show T-0001", ("A77-1", "day closes", "3")),
    ("terminals deactivate T-0002", ("terminal T-0002 deactivated",)),
    ("cards show C-1", (masked(CARD_NUMBER), "25.00 EUR", "active")),
    (f"cards show {CARD_NUMBER}", (masked(CARD_NUMBER),)),
    ("cards block C-1", ("card C-1 blocked",)),
    ("cards unblock C-1", ("card C-1 active",)),
    ("cards replace C-1 C-2", ("moved 2500 minor units from C-1 to C-2",)),
    ("day-close list T-0001", ("#3", "closed", "redeem", "300.50 EUR", "#4", "X report")),
    ("acquirers status", ("acquirer-a", "signed_on", "acquirer-b", "down")),
    ("acquirers sign-on acquirer-b", ("acquirer-b signed on",)),
    ("acquirers echo acquirer-a", ("answered echo",)),
    ("saf list", ("S-1", "0420", "000123", "19.99 EUR")),
    ("saf retry", ("1 advices queued",)),
    ("drain", ("draining",)),
    ("help", ("terminals deactivate ID", "cards replace LOST NEW", "saf retry")),
]


@pytest.mark.parametrize(("command", "expected"), OPERATOR_COMMANDS, ids=[c for c, _ in OPERATOR_COMMANDS])
def test_operator_runs_each_command(running: Running, command: str, expected: tuple[str, ...]) -> None:
    result = run_exec(running, running.keys.operator, command)
    assert result.exit_status == 0, result
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    assert CARD_NUMBER not in result.stdout


def test_operator_actions_reach_the_backend_with_who(running: Running) -> None:
    run_exec(running, running.keys.operator, "cards block C-1")
    run_exec(running, running.keys.operator, "drain")
    assert running.backend.cards["C-1"].status == "blocked"
    assert running.backend.draining
    assert running.backend.actions == [("blocked", "C-1", "olga@ops"), ("drain", "", "olga@ops")]
    status = run_exec(running, running.keys.viewer, "status")
    assert "draining" in status.stdout


VIEWER_ALLOWED = [
    "status",
    "terminals list",
    "terminals show T-0001",
    "cards show C-1",
    "day-close list T-0001",
    "acquirers status",
    "saf list",
    "help",
]
OPERATOR_ONLY = [
    "terminals deactivate T-0001",
    "cards block C-1",
    "cards unblock C-1",
    "cards replace C-1 C-2",
    "acquirers sign-on acquirer-b",
    "acquirers echo acquirer-a",
    "saf retry",
    "drain",
]


@pytest.mark.parametrize("command", VIEWER_ALLOWED)
def test_viewer_runs_read_only_commands(running: Running, command: str) -> None:
    result = run_exec(running, running.keys.viewer, command)
    assert result.exit_status == 0, result
    assert result.stdout.strip()


@pytest.mark.parametrize("command", OPERATOR_ONLY)
def test_viewer_cannot_run_operator_commands(running: Running, command: str) -> None:
    result = run_exec(running, running.keys.viewer, command)
    assert result.exit_status == Outcome.refused.value
    assert "permission denied" in result.stderr
    assert "operator role" in result.stderr
    assert running.backend.actions == []
    assert running.backend.cards["C-1"].status == "active"
    refused = [line for line in running.audit_lines() if line["outcome"] == "refused"]
    assert [(line["who"], line["role"], line["command"]) for line in refused] == [
        ("victor@ops", "viewer", command)
    ]


def test_viewer_help_marks_operator_commands(running: Running) -> None:
    result = run_exec(running, running.keys.viewer, "help")
    assert "drain" in result.stdout
    assert "(operator only)" in result.stdout


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
    ("cards show C-404", "no such card", Outcome.failed),
    ("day-close list T-9999", "no terminal T-9999", Outcome.failed),
    ("acquirers echo nobody", "failed: no acquirer nobody", Outcome.failed),
    ("x" * 2000, "longer than", Outcome.usage),
]


@pytest.mark.parametrize(
    ("command", "message", "outcome"), BAD_COMMANDS, ids=[c[:20] for c, _, _ in BAD_COMMANDS]
)
def test_bad_command_gets_a_clear_message(
    running: Running, command: str, message: str, outcome: Outcome
) -> None:
    result = run_exec(running, running.keys.operator, command)
    assert result.exit_status == outcome.value
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_backend_failure_is_a_message_not_a_traceback(running: Running) -> None:
    running.backend.fail_status = True
    result = run_exec(running, running.keys.viewer, "status")
    assert result.exit_status == Outcome.error.value
    assert "status failed inside the switch" in result.stderr
    assert "Traceback" not in result.stderr
    assert "database is gone" not in result.stderr


def test_wrong_key_is_refused(running: Running) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        run_exec(running, running.keys.stranger, "status")


async def _password_login(port: int) -> None:
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="olga",
        password="correct horse battery staple",
        client_keys=None,
        known_hosts=None,
        agent_path=None,
        preferred_auth="password,keyboard-interactive",
    ):
        pass


def test_password_is_refused(running: Running) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_password_login(running.console.port))


def test_audit_log_records_who_when_what_and_outcome(running: Running) -> None:
    run_exec(running, running.keys.operator, f"cards block {CARD_NUMBER}")
    run_exec(running, running.keys.viewer, "drain")
    run_exec(running, running.keys.operator, "nonsense")
    commands = [line for line in running.audit_lines() if line["command"] != "(login)"]
    assert [(line["who"], line["outcome"], line["exit_status"]) for line in commands] == [
        ("olga@ops", "ok", 0),
        ("victor@ops", "refused", Outcome.refused.value),
        ("olga@ops", "usage", Outcome.usage.value),
    ]
    first = commands[0]
    assert first["role"] == "operator"
    assert str(first["key_fingerprint"]).startswith("SHA256:")
    assert str(first["remote"]).startswith("127.0.0.1:")
    assert datetime.datetime.fromisoformat(str(first["ts"])).tzinfo is not None
    # The operator typed a full card number; the audit trail keeps no copy of it.
    assert CARD_NUMBER not in running.audit_path.read_text()
    assert first["command"] == "cards block [REDACTED-PAN]"


def test_card_data_leaking_from_a_backend_is_masked_in_output(running: Running) -> None:
    running.backend.leak_card_numbers = True
    result = run_exec(running, running.keys.operator, "cards show C-1")
    assert CARD_NUMBER not in result.stdout
    assert "[REDACTED-PAN]" in result.stdout


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


def test_interactive_shell_with_line_editor(running: Running) -> None:
    output = asyncio.run(
        _shell_session(
            running.console.port,
            running.keys.operator,
            ["status", "cards show C-1", "bogus", "saf retry", "exit"],
        )
    )
    assert "you are olga@ops (operator)" in output
    assert "txswitch operator> " in output
    assert "terminals online" in output
    assert masked(CARD_NUMBER) in output
    assert "unknown command 'bogus'" in output
    assert "1 advices queued" in output
    assert "bye" in output
    modes = {line["mode"] for line in running.audit_lines()}
    assert modes == {"shell"}
    assert [line["command"] for line in running.audit_lines()] == [
        "(login)",
        "status",
        "cards show C-1",
        "bogus",
        "saf retry",
    ]


def test_console_binds_loopback_and_reports_its_port(running: Running) -> None:
    assert running.console.port > 0
    assert running.console.host_key_fingerprint.startswith("SHA256:")


async def _hold_shell_until_closed(port: int, key: asyncssh.SSHKey, opened: asyncio.Event) -> str:
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        process = await connection.create_process(term_type="xterm")
        await _read_until(process, "> ")
        opened.set()
        await asyncio.wait_for(process.wait_closed(), CLIENT_TIMEOUT_S)
        return "closed"


def test_stop_closes_live_sessions(keys: Keys, tmp_path: Path) -> None:
    config = ConsoleConfig(
        authorized_keys=["operator " + public_line(keys.operator, "olga@ops")],
        audit_log_path=tmp_path / "audit.jsonl",
        port=0,
    )
    console = OpsConsole(MemoryBackend(), config)
    port = console.start()

    async def scenario() -> str:
        opened = asyncio.Event()
        session = asyncio.create_task(_hold_shell_until_closed(port, keys.operator, opened))
        await asyncio.wait_for(opened.wait(), CLIENT_TIMEOUT_S)
        await asyncio.to_thread(console.stop)
        return await session

    assert asyncio.run(scenario()) == "closed"


def test_authorized_keys_from_a_file(keys: Keys, tmp_path: Path) -> None:
    keys_path = tmp_path / "authorized_keys"
    keys_path.write_text("viewer " + public_line(keys.viewer, "victor@ops") + "\n")
    config = ConsoleConfig(authorized_keys=keys_path, audit_log_path=tmp_path / "a.jsonl", port=0)
    console = OpsConsole(MemoryBackend(), config)
    port = console.start()
    try:
        result = asyncio.run(_exec(port, keys.viewer, "terminals list"))
        assert result.exit_status == 0
        assert "T-0001" in result.stdout
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(_exec(port, keys.operator, "status"))
    finally:
        console.stop()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("admin ssh-ed25519 AAAA", "line 1: role must be one of viewer, operator"),
        ("operator ssh-ed25519 not-base64", "line 1: not an OpenSSH public key"),
        ("operator", "line 1: not an OpenSSH public key"),
    ],
)
def test_bad_authorized_key_lines_are_configuration_errors(tmp_path: Path, line: str, message: str) -> None:
    config = ConsoleConfig(authorized_keys=[line], audit_log_path=tmp_path / "a.jsonl", port=0)
    with pytest.raises(ValueError, match=message):
        OpsConsole(MemoryBackend(), config)
