"""make bench reads the switch's CPU time from /proc: it must grow with work and be None without /proc."""

from __future__ import annotations

import hashlib
import os

import pytest

from terminal_sim.bench import process_cpu_s


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_cpu_time_of_a_process_grows_with_its_work() -> None:
    before = process_cpu_s(os.getpid())
    assert before is not None
    hashlib.pbkdf2_hmac("sha256", b"work", b"salt", 400_000)  # some tens of ms of CPU
    after = process_cpu_s(os.getpid())
    assert after is not None and after > before


def test_no_such_process_gives_none() -> None:
    assert process_cpu_s(2**22 + 12_345) is None
