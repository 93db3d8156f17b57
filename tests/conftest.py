"""What every test's child processes share: the switch's modules compiled once, not at every start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# A test that starts `txswitch serve` (or the simulator, or the CLI) starts an interpreter that
# imports the whole switch, and the journal's forkserver imports the store again. With
# PYTHONDONTWRITEBYTECODE set (as on the machines that run CI) each of them compiled every module
# from source: some 0.5 s of a 2 s start. Children now write and reuse compiled files in a cache
# outside the tree (so it stays as clean as the variable keeps it), shared by the xdist workers:
# Python writes each file atomically and checks it against its source's time and size.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "txswitch-tests-pycache"))
