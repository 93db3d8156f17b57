"""The journal process's forkserver, which can be started before the store is imported: `txswitch
serve` starts it first, so that the server's import of the store (sqlalchemy, the schema) runs on
the other core beside the switch's own imports and start-up instead of after them, when the
journal's child is first asked for."""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switch.config import Settings

JOURNAL_MODULE = "switch.store.journal_process"
# forkserver: each child is forked from a small single-threaded server that has imported the
# store once, so it starts in milliseconds and never inherits grpc's threads (a plain fork of
# the switch would). Started by start_forkserver, or else on first use.
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload([JOURNAL_MODULE])


def can_serve(database_url: str) -> bool:
    """Whether another process can open this database: not an in-memory SQLite one."""
    if not database_url.startswith("sqlite"):
        return True
    path = database_url.split("///", 1)[1] if "///" in database_url else ""
    return bool(path) and path != ":memory:" and "mode=memory" not in database_url


def journal_database_url(settings: Settings) -> str | None:
    """The database the journal process commits to, or None to commit on the writer's thread."""
    url = settings.effective_database_url
    return url if settings.journal_process and can_serve(url) else None


def start_forkserver() -> None:
    """The forkserver started now, if it is not running: it imports the store while the caller goes on."""
    forkserver.ensure_running()
