"""Console identities: roles, and authorized public keys loaded from configuration."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ops.ssh import asyncssh

AUTHORIZED_KEYS_MAX = 1000


class Role(enum.Enum):
    viewer = "viewer"
    operator = "operator"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who runs a command: the key's name (its comment, else fingerprint) and role."""

    name: str
    role: Role
    key_fingerprint: str
    ssh_username: str
    remote_address: str


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    role: Role
    name: str
    fingerprint: str
    public_data: bytes


class AuthorizedKeys:
    """Lines of `<role> <OpenSSH public key line>`, e.g. `operator ssh-ed25519 AAAA... alice`.

    Blank lines and lines starting with # are ignored; a bad line is a configuration error
    that names its line number (never the key material)."""

    def __init__(self, keys: Sequence[AuthorizedKey]) -> None:
        self._by_public_data = {key.public_data: key for key in keys}

    @classmethod
    def from_lines(cls, lines: Sequence[str]) -> AuthorizedKeys:
        keys: list[AuthorizedKey] = []
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                keys.append(_parse_line(number, line))
        if len(keys) > AUTHORIZED_KEYS_MAX:
            raise ValueError(f"authorized keys: more than {AUTHORIZED_KEYS_MAX} keys")
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> AuthorizedKeys:
        return cls.from_lines(path.read_text().splitlines())

    def find(self, key: asyncssh.SSHKey) -> AuthorizedKey | None:
        return self._by_public_data.get(key.public_data)

    def __len__(self) -> int:
        return len(self._by_public_data)


def _parse_line(number: int, line: str) -> AuthorizedKey:
    role_text, _, key_text = line.partition(" ")
    try:
        role = Role(role_text)
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise ValueError(
            f"authorized keys line {number}: role must be one of {roles}, got {role_text!r}"
        ) from None
    try:
        key = asyncssh.import_public_key(key_text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise ValueError(f"authorized keys line {number}: not an OpenSSH public key") from None
    fingerprint = key.get_fingerprint()
    comment = key.get_comment()
    return AuthorizedKey(role, comment or fingerprint, fingerprint, key.public_data)
