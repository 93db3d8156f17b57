"""grpc core's own log lines quieted in the txswitch program only: imported by switch.cli before grpc.

grpc's core prints its errors on stderr in a format of its own: above serve's one line for a taken
port ("E1207 ... add_port.cc:83] Failed to add port to server: ..."), and among the JSON log lines.
It reads GRPC_VERBOSITY once, when grpc is first imported, so this runs before. Only in the program
itself (`python -m switch.cli`, the `txswitch` script): a process that merely imports switch.cli (a
test, an embedder) keeps grpc core's errors. An operator's own value (ERROR, DEBUG) stands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROGRAM_NAME = "txswitch"
PROGRAM_MODULE = "switch.cli"


def is_the_program() -> bool:
    """This process runs `python -m switch.cli` or the `txswitch` script."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == PROGRAM_MODULE:
        return True
    return Path(sys.argv[0] if sys.argv else "").name == PROGRAM_NAME


if is_the_program():
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
