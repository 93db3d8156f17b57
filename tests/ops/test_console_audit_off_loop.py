"""Audit lines are written off the console's loop: a login whose line waits for the disk holds no
other session up (a FIFO without a reader stands for the disk: its open waits, as a stuck disk)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from ops.ssh import asyncssh
from tests.integration.harness import World
from tests.ops.conftest import CLIENT_TIMEOUT_S, Keys, console_of, exec_commands
from tests.ops.test_console_audit_first import _read_some

LOGIN_REACHED_S = 1.0  # a login on loopback takes a few tens of milliseconds
PROMPT_WAIT_S = 2.0


async def _prompt_while_a_login_waits_for_the_audit(port: int, key: asyncssh.SSHKey, audit: Path) -> bool:
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        shell = await connection.create_process(term_type="xterm", term_size=(120, 40))
        await _read_some(shell, "> ")
        shutil.move(audit, audit.with_suffix(".aside"))
        os.mkfifo(audit)
        waiting = asyncio.create_task(exec_commands(port, key, ["status"]))
        await asyncio.sleep(LOGIN_REACHED_S)  # its "(login)" line is being written
        try:
            shell.stdin.write("\r")  # an empty line: a new prompt, nothing audited
            try:
                prompt = await asyncio.wait_for(_read_some(shell, "> "), PROMPT_WAIT_S)
            except TimeoutError:
                return False
            return "> " in prompt
        finally:
            # A reader lets the waiting line through (fsync then fails on a FIFO: not this test's).
            reader = os.open(audit, os.O_RDWR | os.O_NONBLOCK)
            try:
                await asyncio.wait_for(waiting, CLIENT_TIMEOUT_S)
            finally:
                os.close(reader)
                shell.stdin.write_eof()


def test_a_login_waiting_for_its_audit_line_holds_no_other_session_up(
    bare_world: World, keys: Keys, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    with console_of(bare_world, keys, audit) as console:
        prompted = asyncio.run(_prompt_while_a_login_waits_for_the_audit(console.port, keys.operator, audit))
    assert prompted, "a logged-in shell waited for another login's audit line"
