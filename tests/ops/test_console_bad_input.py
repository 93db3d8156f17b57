"""Bad input to the SSH console, through a real asyncssh client: refused by name, nothing echoed raw."""

from __future__ import annotations

from ops.console_commands import Outcome
from tests.ops.conftest import ConsoleWorld

# (command line, what the refusal must name)
CONTROL_CHARACTER_COMMANDS = [
    ("terminals show T-1\x1b[2J", "U+001B"),
    ("terminals show \x1b]0;owned\x07", "U+001B"),
    ("day-close list T\x00", "U+0000"),
    ("cards show C-1\x7f", "U+007F"),
    ("frob\x9bnicate", "U+009B"),
]


def test_a_control_character_in_a_command_is_refused_by_name_and_never_echoed(
    console_world: ConsoleWorld,
) -> None:
    commands = [command for command, _ in CONTROL_CHARACTER_COMMANDS]
    results = console_world.run(console_world.keys.operator, *commands)
    for (command, named), result in zip(CONTROL_CHARACTER_COMMANDS, results, strict=True):
        assert result.exit_status == Outcome.usage.value, (command, result)
        assert "control character" in result.stderr and named in result.stderr, (command, result)
        # An escape sequence echoed to the operator's terminal would be run by that terminal.
        assert not any(ch in result.stdout + result.stderr for ch in "\x1b\x00\x07\x7f\x9b"), result
    (after,) = console_world.run(console_world.keys.operator, "status")
    assert after.exit_status == 0
