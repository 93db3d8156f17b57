"""`txswitch admin` and `txswitch balance` whose reader leaves early (`| head -1`) stop quietly: a
newcomer following the README got a Python traceback (BrokenPipeError) instead."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_TOKEN, World, world_fixture

REPOSITORY = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 60


@pytest.fixture(params=["sqlite"])  # how stdout is written does not depend on the database
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


def run_into_a_closed_pipe(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """The command with stdout a pipe whose reader has gone, as after `| head` has read its fill."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [sys.executable, "-m", "switch.cli", *arguments],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPOSITORY,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    finally:
        os.close(writer)


@pytest.mark.parametrize(
    "command",
    [
        ["admin", "check-ledger"],
        ["admin", "transactions", "from_date=2026-01-01"],
        ["admin", "export-transactions", "from_date=2026-01-01"],
        ["balance"],
    ],
    ids=lambda command: "-".join(command[:2]),
)
def test_a_reader_that_left_early_gets_no_traceback(world: World, tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    card = world.issue(1_000)
    if command[0] == "admin":
        arguments = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address, *command[1:]]
    else:
        arguments = ["balance", "--target", world.server.address, card]
    finished = run_into_a_closed_pipe(arguments)
    assert finished.stderr == ""
    assert finished.returncode == 1
