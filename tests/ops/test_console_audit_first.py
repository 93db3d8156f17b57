"""A command that changes the switch is in the audit log before it runs, or it does not run."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from ops.ssh import asyncssh
from switch.domain.cards import CardStatus
from tests.ops.conftest import CLIENT_TIMEOUT_S, ConsoleWorld
from tests.ops.test_console import audit_lines


async def _read_some(process: asyncssh.SSHClientProcess[str], marker: str) -> str:
    seen = ""
    while marker not in seen:
        chunk = await asyncio.wait_for(process.stdout.read(4096), CLIENT_TIMEOUT_S)
        if not chunk:
            break
        seen += chunk
    return seen


async def _block_with_the_audit_log_gone(console: ConsoleWorld, card_id: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1",
        console.port,
        username="olga",
        client_keys=[console.keys.operator],
        known_hosts=None,
        agent_path=None,
    ) as connection:
        process = await connection.create_process(term_type="xterm", term_size=(120, 40))
        output = await _read_some(process, "> ")
        # Logged in; now the audit log cannot be written (a directory stands where the file was).
        _replace_with_a_directory(console.audit_path)
        process.stdin.write(f"cards block {card_id}\r")
        output += await _read_some(process, "> ")
        process.stdin.write_eof()
    return output


def _replace_with_a_directory(path: Path) -> None:
    shutil.move(path, path.with_suffix(".aside"))
    path.mkdir()


def test_a_card_is_not_blocked_when_the_audit_log_cannot_record_it(console_world: ConsoleWorld) -> None:
    world = console_world.world
    number = world.issue(1_000)
    card_id = world.server.core.cards.card_id(number)
    assert card_id is not None
    output = asyncio.run(_block_with_the_audit_log_gone(console_world, card_id))
    assert "audit log" in output and "nothing was done" in output, output
    assert world.server.core.store.card_state(card_id).status is CardStatus.active
    assert world.terminals[0].redeem(number, 100).response_code == "00"


def test_a_command_that_changes_the_switch_is_audited_before_it_runs(console_world: ConsoleWorld) -> None:
    number = console_world.world.issue(100)
    console_world.run(console_world.keys.operator, f"cards block {number}", "status")
    commands = [(line["command"], line["outcome"]) for line in audit_lines(console_world)]
    assert commands == [
        ("(login)", "ok"),
        ("cards block [REDACTED-PAN]", "started"),
        ("cards block [REDACTED-PAN]", "ok"),
        ("(login)", "ok"),
        ("status", "ok"),  # reading changes nothing: one line
    ]
