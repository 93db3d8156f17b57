"""One switch at a time on an SQLite file, unless its nodes share it knowingly.

A node that is alone (TXSWITCH_SEVERAL_NODES no, or auto on SQLite) keeps what it reads: card
balances, statuses, terminals. A second switch started on the same file by mistake would spend,
block and close behind the first one's back, and the first would go on deciding on what it read
(a card blocked and spent there is still spendable here). So a node that is alone holds an
exclusive lock on a file beside the database for as long as it runs, and a second one is refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import make_url


class NodeLockError(RuntimeError):
    """Another switch holds the database."""


def sqlite_file(database_url: str) -> Path | None:
    """The file of an SQLite database URL; None for another database or an in-memory one."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if "mode=memory" in database_url:
        return None
    return Path(url.database)


def node_lock_for(database_url: str, shared: bool) -> NodeLock | None:
    """The lock a node alone on an SQLite file holds while it runs; None for a node that shares its
    file knowingly, another database or an in-memory one."""
    database_file = sqlite_file(database_url)
    return NodeLock(database_file) if database_file is not None and not shared else None


class NodeLock:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".node-lock")
        self._descriptor: int | None = None

    def acquire(self) -> None:
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_or_refuse(descriptor)
        self._descriptor = descriptor

    def check_free(self) -> None:
        """NodeLockError if a switch holds the lock now; holds nothing, makes no file. For `txswitch
        serve` to refuse at once, before its imports: acquire() decides, later, as before."""
        try:
            descriptor = os.open(self.path, os.O_RDWR)
        except OSError:  # none there (no switch ever ran on it), or no way to it: acquire() says which
            return
        self._lock_or_refuse(descriptor)
        os.close(descriptor)  # lets the lock go

    def _lock_or_refuse(self, descriptor: int) -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise NodeLockError(
                f"another switch is running on {self.path.with_suffix('')}: stop it first, or, if "
                "nodes are to share the file, set TXSWITCH_SEVERAL_NODES=yes on every one of them"
            ) from None

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing it lets the lock go
            self._descriptor = None
