"""Bad input to the SSH console, through a real asyncssh client: refused by name, nothing echoed raw."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ops.console_commands import COMMAND_LINE_CHARS_MAX, Outcome
from ops.ssh import asyncssh
from switch.domain.cards import CardStatus
from tests.ops.conftest import CLIENT_TIMEOUT_S, ConsoleWorld
from tests.ops.test_console import audit_lines

# (command line, what the refusal must name)
CONTROL_CHARACTER_COMMANDS = [
    ("terminals show T-1\x1b[2J", "U+001B"),
    ("terminals show \x1b]0;owned\x07", "U+001B"),
    ("day-close list T\x00", "U+0000"),
    ("cards show C-1\x7f", "U+007F"),
    ("frob\x9bnicate", "U+009B"),
    # Format characters: invisible, yet one turns the rest of the line around on screen.
    ("terminals show T-\u202e1-T", "U+202E"),
    ("cards block C-\u200b1", "U+200B"),
]
NEVER_ECHOED = "\x1b\x00\x07\x7f\x9b\u202e\u200b"


def test_a_control_character_in_a_command_is_refused_by_name_and_never_echoed(
    console_world: ConsoleWorld,
) -> None:
    commands = [command for command, _ in CONTROL_CHARACTER_COMMANDS]
    results = console_world.run(console_world.keys.operator, *commands)
    for (command, named), result in zip(CONTROL_CHARACTER_COMMANDS, results, strict=True):
        assert result.exit_status == Outcome.usage.exit_status, (command, result)
        assert "character" in result.stderr and named in result.stderr, (command, result)
        # An escape sequence echoed to the operator's terminal would be run by that terminal.
        assert not any(ch in result.stdout + result.stderr for ch in NEVER_ECHOED), result
    (after,) = console_world.run(console_world.keys.operator, "status")
    assert after.exit_status == 0


async def _raw_shell(port: int, key: asyncssh.SSHKey, lines: Sequence[bytes]) -> bytes:
    """A shell session that types raw bytes, as a terminal set to Latin-1 would."""
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        process = await connection.create_process(term_type="xterm", term_size=(120, 40), encoding=None)
        output = await _read_until(process, b"> ")
        for line in lines:
            process.stdin.write(line + b"\r")
            output += await _read_until(process, b"> ")
        process.stdin.write(b"exit\r")
        output += await _read_until(process, b"bye")
        await asyncio.wait_for(process.wait_closed(), CLIENT_TIMEOUT_S)
    return output


async def _read_until(process: asyncssh.SSHClientProcess[bytes], marker: bytes) -> bytes:
    seen = b""
    while not seen.rstrip().endswith(marker.rstrip()):
        chunk = await asyncio.wait_for(process.stdout.read(4096), CLIENT_TIMEOUT_S)
        if not chunk:
            raise AssertionError(f"the session ended; it said {seen[-300:]!r}")
        seen += chunk
    return seen


def test_bytes_that_are_not_utf8_are_refused_and_the_session_goes_on(console_world: ConsoleWorld) -> None:
    typed = [b"terminals show caf\xe9", b"cards block \xff\xfe"]
    output = asyncio.run(_raw_shell(console_world.port, console_world.keys.operator, [*typed, b"status"]))
    assert output.count(b"not UTF-8") == len(typed), output
    assert b"terminals online" in output  # the status typed after them was answered
    commands = [line["command"] for line in audit_lines(console_world)]
    assert commands[-1] == "status" and len(commands) == 2 + len(typed)  # login, the refusals, status


# A card number typed where an id goes, one digit off (so not Luhn-valid): the refusal names the
# mistake without showing the number, as the audit log keeps only its masked form.
MISTYPED_NUMBER = "6001019999999998"
CARD_NUMBER_IN_THE_WRONG_PLACE = [
    (f"terminals show {MISTYPED_NUMBER}", Outcome.failed, "no terminal"),
    (f"terminals deactivate {MISTYPED_NUMBER}", Outcome.failed, "no terminal"),
    (f"day-close list {MISTYPED_NUMBER}", Outcome.failed, "no terminal"),
    ("terminals show '6001 0199 9999 9998'", Outcome.failed, "no terminal"),
    (MISTYPED_NUMBER, Outcome.usage, "unknown command"),
    (f"{MISTYPED_NUMBER} show", Outcome.usage, "unknown command"),
]


def test_a_card_number_typed_as_an_argument_is_not_echoed_back(console_world: ConsoleWorld) -> None:
    commands = [command for command, _, _ in CARD_NUMBER_IN_THE_WRONG_PLACE]
    results = console_world.run(console_world.keys.operator, *commands)
    for (command, outcome, message), result in zip(CARD_NUMBER_IN_THE_WRONG_PLACE, results, strict=True):
        assert result.exit_status == outcome.exit_status, (command, result)
        assert message in result.stderr, (command, result)
        shown = (result.stdout + result.stderr).replace(" ", "")
        assert "60010199" not in shown and "[REDACTED-PAN]" in shown, (command, result)
    assert "60010199" not in console_world.audit_path.read_text().replace(" ", "")


async def _shell(port: int, key: asyncssh.SSHKey, lines: Sequence[str]) -> str:
    raw = await _raw_shell(port, key, [line.encode() for line in lines])
    return raw.decode()


def test_a_shell_line_over_the_limit_is_refused_whole_never_run_cut(console_world: ConsoleWorld) -> None:
    world = console_world.world
    number = world.issue(1_000)
    card_id = world.server.core.cards.card_id(number)
    assert card_id is not None
    # Cut at the limit, this line is 'cards block <card>' and spaces: a command nobody typed.
    typed = f"cards block {card_id}" + " " * COMMAND_LINE_CHARS_MAX + "and-more"
    output = asyncio.run(_shell(console_world.port, console_world.keys.operator, [typed, "status"]))
    assert f"command longer than {COMMAND_LINE_CHARS_MAX} characters" in output
    assert "terminals online" in output  # the session goes on
    assert world.server.core.store.card_state(card_id).status is CardStatus.active
    assert world.terminals[0].redeem(number, 100).response_code == "00"


# asyncssh decodes an exec request's command itself and answers bytes that are not UTF-8 with a
# bare channel failure, before the console is called (no hook): the client is told only that the
# request failed. What holds: the connection goes on, and nothing is run or audited.
async def _exec_bytes_then_status(port: int, key: asyncssh.SSHKey, command: bytes) -> tuple[str, int | None]:
    async with asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        raw: Any = command  # the client sends bytes as they are; its type says str
        try:
            await connection.run(raw, check=False, timeout=CLIENT_TIMEOUT_S)
            refused = "ran"
        except asyncssh.ChannelOpenError as error:
            refused = error.reason
        after = await connection.run("status", check=False, timeout=CLIENT_TIMEOUT_S)
        return refused, after.exit_status


def test_an_exec_request_that_is_not_utf8_is_refused_and_the_connection_goes_on(
    console_world: ConsoleWorld,
) -> None:
    number = console_world.world.issue(100)
    card_id = console_world.world.server.core.cards.card_id(number)
    assert card_id is not None
    command = f"cards block {card_id} \xff".encode("latin-1")
    refused, after = asyncio.run(
        _exec_bytes_then_status(console_world.port, console_world.keys.operator, command)
    )
    assert refused == "Session request failed", refused
    assert after == 0
    assert console_world.world.server.core.store.card_state(card_id).status is CardStatus.active
    commands = [line["command"] for line in audit_lines(console_world)]
    assert commands == ["(login)", "status"], commands
