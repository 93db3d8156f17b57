"""Console sessions that misbehave, through a real asyncssh client: bounded, and the switch serves on."""

from __future__ import annotations

import asyncio
import time

from ops.console import OUTPUT_BUFFERED_BYTES_MAX
from ops.ssh import asyncssh
from tests.ops.conftest import ConsoleWorld
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
    time.sleep(1.0)
    assert _helps_run(console_world) == run  # the dropped session ran none of the lines left
