"""What every test's child processes share: the switch's modules compiled once, not at every start;
and what every in-process test shares: password and PIN hashes at a test's cost, not production's."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from switch import credentials

# A test that starts `txswitch serve` (or the simulator, or the CLI) starts an interpreter that
# imports the whole switch, and the journal's forkserver imports the store again. With
# PYTHONDONTWRITEBYTECODE set (as on the machines that run CI) each of them compiled every module
# from source: some 0.5 s of a 2 s start. Children now write and reuse compiled files in a cache
# outside the tree (so it stays as clean as the variable keeps it), shared by the xdist workers:
# Python writes each file atomically and checks it against its source's time and size.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "txswitch-tests-pycache"))

# What a password or employee PIN hash costs in a test's own process. Each World hashed its
# merchant's password and checked it on each terminal's activation at production cost (scrypt
# n=2**14: about 40 ms each on a quiet machine, 0.1 to 0.2 s loaded), some 1,100 Worlds a run. A
# hash carries its parameters (`switch.credentials`), so one made here still verifies in a
# `txswitch serve` that shares the database, at the cost it was made with. A test that needs
# production's cost is marked `production_hash_cost`.
TEST_SCRYPT_N = 2**10
TEST_PIN_ITERATIONS = 1_000


@pytest.fixture(autouse=True)
def cheap_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("production_hash_cost") is None:
        monkeypatch.setattr(credentials, "PASSWORD_SCRYPT_N", TEST_SCRYPT_N)
        monkeypatch.setattr(credentials, "EMPLOYEE_PIN_ITERATIONS", TEST_PIN_ITERATIONS)
    yield
