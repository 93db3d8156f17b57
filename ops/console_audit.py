"""The console's audit log: one JSON line per command or login, who, when, what and outcome."""

from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path

from ops.console_auth import Caller
from ops.logs import scrub_cut, scrub_text

COMMAND_CHARS_MAX = 512


class AuditLog:
    """Appends and fsyncs each record: an audit trail that a crash can truncate is no trail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        caller: Caller,
        command: str,
        outcome: str,
        *,
        mode: str,
        exit_status: int | None = None,
    ) -> None:
        line = {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "who": caller.name,
            "role": caller.role.value,
            "key_fingerprint": caller.key_fingerprint,
            "ssh_user": scrub_text(caller.ssh_username, typed=True),
            "remote": caller.remote_address,
            "mode": mode,
            # Operators type card numbers; the audit log keeps only their masked form.
            # Cut as it is masked, a card number across the cut masked whole: the scrub reads a card
            # number's length past the cut, not the whole of a huge command.
            "command": scrub_cut(command, COMMAND_CHARS_MAX, typed=True),
            "outcome": outcome,
            "exit_status": exit_status,
        }
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
