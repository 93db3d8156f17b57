"""Checks shared by the simulator's command lines: a setting's error in the flag's name, targets, out dirs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from switch.listening import host_port
from terminal_sim.config import SettingError, joined

PORT_MAX = 65_535


def flag_problem(error: SettingError, flag_of: Mapping[str, str]) -> str:
    """The error's rule, naming the flags that set its fields (a field with no flag by its own name)."""
    return f"{joined(tuple(flag_of.get(name, name) for name in error.names))} {error.rule}"


def target_problem(flag: str, target: str) -> str | None:
    """What is wrong with a grpc address given as host:port; None when nothing is."""
    host, colon, port = target.rpartition(":")
    if not colon or not host.strip() or host != host.strip() or not port.isdigit():
        return f"{flag} must be host:port, as 127.0.0.1:50051, not {target!r}"
    if not 1 <= int(port) <= PORT_MAX:
        return f"{flag} port must be from 1 to {PORT_MAX}, not {port}"
    return None


def listen_problem(host_flag: str, host: str, port_flag: str, port: int) -> str | None:
    """What is wrong with a host and port to listen on; None when nothing is. Out of range ports are
    not refused by the socket layers: they bind the port modulo 65536 (70000 as 4464)."""
    if not host.strip() or host != host.strip():
        return f"{host_flag} must be a host name or IP address, as 127.0.0.1, not {host!r}"
    if not 0 <= port <= PORT_MAX:
        return f"{port_flag} must be from 0 (any free port) to {PORT_MAX}, not {port}"
    return None


def cannot_listen_problem(host_flag: str, host: str, port_flag: str, port: int, error: OSError) -> str:
    """A bind that failed, in one line naming both flags: either may be at fault (a host that does not
    resolve or is no address of this machine, a port that is taken)."""
    reason = error.strerror or str(error)
    return f"cannot listen on {host_port(host, port)}, set by {host_flag} and {port_flag}: {reason}"


def out_dir_problem(flag: str, out_dir: Path) -> str | None:
    """What keeps out_dir from being made or written to, checked before a run rather than after it;
    None when nothing does. Nothing is created here."""
    existing = next((path for path in (out_dir, *out_dir.parents) if path.exists()), Path("."))
    if not existing.is_dir():
        return f"{flag} {out_dir} cannot be made: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {out_dir} cannot be written: {existing} is not writable"
    return None
