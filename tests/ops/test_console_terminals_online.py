"""`status` (and txswitch_terminals_online) must agree with `terminals list`/`terminals show`: a
deactivated terminal has no session (its credential no longer works), so it is not online."""

from __future__ import annotations

import re

from tests.ops.conftest import ConsoleWorld


def _field(text: str, name: str) -> str:
    found = re.search(rf"^{name}\s+(.*)$", text, re.MULTILINE)
    assert found, text
    return found.group(1).strip()


def test_a_deactivated_terminal_is_not_counted_online(console_world: ConsoleWorld) -> None:
    world = console_world.world
    terminal = world.terminals[0]
    card = world.issue(1_000)
    assert terminal.redeem(card, 100).response_code == "00"
    operator = console_world.keys.operator
    (deactivated,) = console_world.run(operator, f"terminals deactivate {terminal.terminal_id}")
    assert deactivated.exit_status == 0, deactivated

    status, show = console_world.run(operator, "status", f"terminals show {terminal.terminal_id}")
    assert _field(show.stdout, "online") == "no"
    assert _field(status.stdout, "terminals active") == "0"
    assert _field(status.stdout, "terminals online") == "0", status.stdout
    metrics_online = world.server.ops.metrics.registry.get_sample_value("txswitch_terminals_online")
    assert metrics_online == 0, f"txswitch_terminals_online is {metrics_online} with no active terminal"
