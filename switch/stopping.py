"""How a stop waits for a background thread: within a limit, so a thread stuck in the database (a lock
never released, a connection that hangs) is left to itself, daemon, and logged, and the switch's stop
still ends. Imports nothing of the switch's, so any module may use it."""

from __future__ import annotations

import logging
import threading


def join_within(thread: threading.Thread, limit_s: float, log: logging.Logger, what: str) -> bool:
    """Wait up to limit_s for thread to end; whether it did. If not, an error on the caller's log:
    "<what> did not stop within <limit_s> s; left to its thread"."""
    thread.join(limit_s)
    if not thread.is_alive():
        return True
    log.error("%s did not stop within %s s; left to its thread", what, limit_s)
    return False
