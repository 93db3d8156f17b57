"""A real switch (SwitchServer, SQLite, gRPC on loopback) with its SSH console, and a real SSH client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ops.console import ConsoleConfig, OpsConsole
from ops.ssh import asyncssh
from switch.ops_backend import SwitchOpsBackend
from tests.integration.harness import World, start_world

CLIENT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Keys:
    operator: asyncssh.SSHKey
    viewer: asyncssh.SSHKey
    stranger: asyncssh.SSHKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(*(asyncssh.generate_private_key("ssh-ed25519") for _ in range(3)))


def public_line(key: asyncssh.SSHKey, comment: str) -> str:
    exported: bytes = key.export_public_key("openssh")
    return exported.decode().strip() + " " + comment


def write_authorized_keys(path: Path, keys: Keys) -> Path:
    path.write_text(
        "# role, then the OpenSSH public key line\n"
        f"operator {public_line(keys.operator, 'olga@ops')}\n"
        f"viewer {public_line(keys.viewer, 'victor@ops')}\n"
    )
    return path


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_status: int | None


@dataclass(frozen=True)
class ConsoleWorld:
    world: World
    keys: Keys
    port: int
    audit_path: Path

    def run(self, key: asyncssh.SSHKey, *commands: str) -> list[ExecResult]:
        """Each command in its own exec session over one SSH connection."""
        return asyncio.run(exec_commands(self.port, key, commands))

    def run_one(self, key: asyncssh.SSHKey, command: str) -> ExecResult:
        return self.run(key, command)[0]


async def exec_commands(port: int, key: asyncssh.SSHKey, commands: Sequence[str]) -> list[ExecResult]:
    async with asyncssh.connect(
        "127.0.0.1",
        port,
        username="someone",
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        preferred_auth="publickey",
    ) as connection:
        results = []
        for command in commands:
            done = await connection.run(command, check=False, timeout=CLIENT_TIMEOUT_S)
            results.append(ExecResult(str(done.stdout), str(done.stderr), done.exit_status))
        return results


@pytest.fixture
def console_world(keys: Keys, tmp_path: Path) -> Iterator[ConsoleWorld]:
    yield from console_world_with(keys, tmp_path)


def console_world_with(keys: Keys, tmp_path: Path, **overrides: object) -> Iterator[ConsoleWorld]:
    """A switch with the console on an ephemeral port; overrides are switch settings."""
    keys_path = write_authorized_keys(tmp_path / "ops_authorized_keys", keys)
    world = start_world(
        tmp_path / "data", "", 1, console_port=0, console_authorized_keys=keys_path, **overrides
    )
    try:
        port = world.server.ops.console_port
        assert port is not None and port > 0
        yield ConsoleWorld(world, keys, port, tmp_path / "data" / "ops-audit.jsonl")
    finally:
        world.channel.close()
        world.server.stop()


@pytest.fixture
def bare_world(tmp_path: Path) -> Iterator[World]:
    """A switch without terminals or a console of its own: for a console a test configures."""
    world = start_world(tmp_path / "data", "", 0)
    try:
        yield world
    finally:
        world.channel.close()
        world.server.stop()


@contextmanager
def console_of(world: World, keys: Keys, audit_path: Path, **config: float) -> Iterator[OpsConsole]:
    """A console on an ephemeral port over world's switch, the operator key only; config: the
    ConsoleConfig fields a test sets (timeouts, intervals)."""
    backend = SwitchOpsBackend(world.server.core, drain=lambda: None, draining=lambda: False)
    authorized = [f"operator {public_line(keys.operator, 'olga@ops')}"]
    console = OpsConsole(backend, ConsoleConfig(authorized, audit_path, port=0, **config))  # type: ignore[arg-type]
    console.start()
    try:
        yield console
    finally:
        console.stop()
