"""Console sessions that misbehave, through a real asyncssh client: bounded, and the switch serves on."""

from __future__ import annotations

import asyncio
import time

from ops.console import OUTPUT_BUFFERED_BYTES_MAX, SESSIONS_PER_CONNECTION_MAX
from ops.console_commands import Outcome
from ops.ssh import asyncssh
from tests.ops.conftest import CLIENT_TIMEOUT_S, ConsoleWorld
from tests.ops.test_console import audit_lines

CLIENT_WINDOW_BYTES = 8192  # what the client lets the console send before it reads
COMMANDS_TYPED = 400
HELP_OUTPUT_BYTES_MIN = 1000


async def _type_without_reading(port: int, key: asyncssh.SSHKey, lines: int, settle_s: float) -> None:
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="olga",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        window=CLIENT_WINDOW_BYTES,
    ) as connection:
        process = await connection.create_process(term_type="xterm", term_size=(120, 40))
        process.stdin.write("help\r" * lines)
        await asyncio.sleep(settle_s)  # never reads its output


def _helps_run(console: ConsoleWorld) -> int:
    return sum(line["command"] == "help" for line in audit_lines(console))


def test_a_session_that_never_reads_its_output_stops_running_commands(console_world: ConsoleWorld) -> None:
    world = console_world.world
    asyncio.run(_type_without_reading(console_world.port, console_world.keys.viewer, COMMANDS_TYPED, 3.0))
    run = _helps_run(console_world)
    # Each help is over 1 kB: without a bound the console ran all of them and kept every answer in memory.
    # Twice what the console's buffer and the client's window hold: slack for echoes and prompts.
    helps_max = 2 * (OUTPUT_BUFFERED_BYTES_MAX + CLIENT_WINDOW_BYTES) // HELP_OUTPUT_BYTES_MIN
    assert helps_max < COMMANDS_TYPED
    assert 0 < run <= helps_max, (run, helps_max)
    number = world.issue(500)
    assert world.terminals[0].redeem(number, 100).response_code == "00"  # the switch serves on
    (status,) = console_world.run(console_world.keys.viewer, "status")
    assert status.exit_status == 0
    # Once no session is open on the console, none can run a line: it waited a fixed 1 s for that.
    _until_no_session_open(console_world)
    assert _helps_run(console_world) == run  # the dropped session ran none of the lines left


def _until_no_session_open(console_world: ConsoleWorld) -> None:
    """Until the console's sessions have all ended (their audit lines are written before they end)."""
    console = console_world.world.server.ops.console
    assert console is not None
    deadline_s = time.monotonic() + CLIENT_TIMEOUT_S
    while console._sessions_open:  # read off the loop thread: only whether the dict is empty
        assert time.monotonic() < deadline_s, "a console session never ended"
        time.sleep(0.02)


SESSIONS_OPENED = SESSIONS_PER_CONNECTION_MAX + 3


async def _many_shells(port: int, key: asyncssh.SSHKey) -> tuple[list[str], list[int | None]]:
    """Opens SESSIONS_OPENED shells on one connection, all at once; each one's greeting and,
    for those the console ended, their exit status."""
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        processes = [
            await connection.create_process(term_type="xterm", term_size=(120, 40))
            for _ in range(SESSIONS_OPENED)
        ]
        greetings = [await _first_words(process) for process in processes]
        statuses = [process.exit_status for process in processes]
    return greetings, statuses


async def _first_words(process: asyncssh.SSHClientProcess[str]) -> str:
    seen = ""
    while "> " not in seen and "sessions" not in seen:
        out, err = process.stdout.read(1024), process.stderr.read(1024)
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(out), asyncio.ensure_future(err)],
            timeout=CLIENT_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        chunks = [task.result() for task in done]
        if not any(chunks):
            break
        seen += "".join(chunks)
    await asyncio.sleep(0.05)  # the refused session's exit status follows its message
    return seen


def test_one_connection_opens_no_more_than_the_session_limit(console_world: ConsoleWorld) -> None:
    greetings, statuses = asyncio.run(_many_shells(console_world.port, console_world.keys.operator))
    served = [greeting for greeting in greetings if "txswitch operator> " in greeting]
    refused = [greeting for greeting in greetings if "too many sessions" in greeting]
    assert len(served) == SESSIONS_PER_CONNECTION_MAX, greetings
    assert len(refused) == SESSIONS_OPENED - SESSIONS_PER_CONNECTION_MAX, greetings
    assert all(f"at most {SESSIONS_PER_CONNECTION_MAX}" in greeting for greeting in refused)
    assert statuses.count(Outcome.refused.exit_status) == len(refused), statuses
    # The sessions ended free their places: the next connection is served.
    (status,) = console_world.run(console_world.keys.operator, "status")
    assert status.exit_status == 0
