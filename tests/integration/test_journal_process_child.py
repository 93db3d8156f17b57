"""The journal's child process has the store imported and nothing of the switch's main module: under
`python -m switch.cli serve` multiprocessing's preparation of the child ran switch.cli again in it
(as __mp_main__), with grpc and the whole switch, before its first batch."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from switch.store.journal_process import JournalProcess


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the child's /proc/<pid>/maps")
def test_the_journal_child_does_not_run_the_switch_s_main_module_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # __main__ as `python -m switch.cli serve` has it: switch.cli, which imports grpc
    main = types.ModuleType("__main__")
    main.__spec__ = importlib.util.find_spec("switch.cli")
    monkeypatch.setitem(sys.modules, "__main__", main)
    journal = JournalProcess(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    journal.start()
    try:
        maps = Path(f"/proc/{journal.pid}/maps").read_text()
        status = Path(f"/proc/{journal.pid}/status").read_text()
    finally:
        journal.stop()
    assert "cygrpc" not in maps, "grpc's extension is loaded in the journal process"
    assert "\nThreads:\t1\n" in status, status
