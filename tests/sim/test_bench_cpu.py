"""make bench reads the switch's CPU time from /proc: it must grow with work and be None without /proc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from terminal_sim.bench import (
    CpuUse,
    idle_share,
    machine_cpu_ticks,
    process_cpu_s,
    process_tree_cpu_s,
    ratio_the_cores_allow,
)
from terminal_sim.profile import thread_kind


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_cpu_time_of_a_process_grows_with_its_work() -> None:
    before = process_cpu_s(os.getpid())
    assert before is not None
    hashlib.pbkdf2_hmac("sha256", b"work", b"salt", 400_000)  # some tens of ms of CPU
    after = process_cpu_s(os.getpid())
    assert after is not None and after > before


def test_no_such_process_gives_none() -> None:
    assert process_cpu_s(2**22 + 12_345) is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_machine_idle_share_is_a_share_of_the_time_between_two_readings() -> None:
    before = machine_cpu_ticks()
    hashlib.pbkdf2_hmac("sha256", b"work", b"salt", 400_000)
    after = machine_cpu_ticks()
    assert before is not None and after is not None and after[1] > before[1]
    share = idle_share(before, after)
    assert share is not None and 0.0 <= share <= 1.0


def test_idle_share_without_readings_or_elapsed_ticks_is_none() -> None:
    assert idle_share(None, (5, 10)) is None
    assert idle_share((5, 10), (5, 10)) is None
    assert idle_share((0, 0), (3, 4)) == 0.75


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("CardActor-17 (_actor_loop)", "CardActor"),
        ("TerminalActor-3", "TerminalActor"),
        ("grpc_12", "grpc"),
        ("Thread-1 (_serve)", "grpcio poller"),
        ("journal-writer", "journal-writer"),
    ],
)
def test_profile_groups_threads_by_kind(name: str, kind: str) -> None:
    assert thread_kind(name) == kind


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_the_cpu_of_a_process_tree_counts_its_living_children() -> None:
    burn = (
        "import hashlib, time; hashlib.pbkdf2_hmac('sha256', b'w', b's', 2_000_000);"
        "print(1, flush=True); time.sleep(30)"
    )
    with subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "1"  # it has burnt its CPU
            own, tree, childs = (
                process_cpu_s(os.getpid()),
                process_tree_cpu_s(os.getpid()),
                process_cpu_s(child.pid),
            )
            assert own is not None and tree is not None and childs is not None and childs > 0.1
            assert tree >= own + childs - 0.05  # the clock ticks between the readings
        finally:
            child.kill()


def test_the_cpu_of_no_such_process_tree_is_none() -> None:
    assert process_tree_cpu_s(2**22 + 12_345) is None


def test_the_ratio_the_cores_allow_fills_every_core_at_the_measured_cost_per_request() -> None:
    # 0.5 ms of switch, journal and simulator per request: 2 cores answer at most 4,000 a second,
    # of which 90 % approved, against a ceiling of 6,000 requests a second.
    cpu = CpuUse(0.3, 0.05, 0.15, machine_idle_share=0.1)
    assert ratio_the_cores_allow(cpu, 2_000.0, 1_800.0, 6_000.0, cores=2) == 0.6
    assert ratio_the_cores_allow(cpu, 2_000.0, 1_800.0, 6_000.0, cores=1) == 0.3


def test_the_ratio_the_cores_allow_needs_every_reading() -> None:
    assert ratio_the_cores_allow(CpuUse(0.3, None, 0.15, None), 2_000.0, 1_800.0, 6_000.0, 2) is None
    assert ratio_the_cores_allow(CpuUse(0.3, 0.05, 0.15, None), 0.0, 0.0, 6_000.0, 2) is None
    assert ratio_the_cores_allow(CpuUse(0.3, 0.05, 0.15, None), 2_000.0, 1_800.0, 0.0, 2) is None
