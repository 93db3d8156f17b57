"""The export spool's answer to a disk with no room: a named refusal for want of room, a fault else."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switch.export_spool import NO_ROOM, _room_needed
from switch.report_export import ExportSpoolFullError

ERRNO_CASES = [  # (errno of the failed write, refused for want of room)
    (errno.ENOSPC, True),  # the disk is full
    (errno.EDQUOT, True),  # the switch's user's quota is full
    (errno.EFBIG, True),  # past the largest file the process (RLIMIT_FSIZE) or file system allows
    (errno.EIO, False),  # the disk failed: a fault, logged with a reference
    (errno.EACCES, False),
    (errno.EROFS, False),  # mounted read-only: the operator's to fix, not room to wait for
]


@pytest.mark.parametrize(("number", "refused"), ERRNO_CASES)
def test_only_a_write_that_found_no_room_is_refused_by_name(number: int, refused: bool) -> None:
    failure = OSError(number, "a row's text 4111111111111111")
    raised: pytest.ExceptionInfo[BaseException]
    with pytest.raises((ExportSpoolFullError, OSError)) as raised, _room_needed():
        raise failure
    if refused:
        assert isinstance(raised.value, ExportSpoolFullError)
        assert str(raised.value) == NO_ROOM
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
    else:
        assert raised.value is failure


# Run in a process of its own: its files stop at 100 kB (RLIMIT_FSIZE, SIGXFSZ ignored), as a full disk.
FULL_DISK_SCRIPT = """
import os, resource, signal, sys
from pathlib import Path
from switch.export_spool import Spool
from switch.report_export import ExportSpoolFullError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
directory = Path(sys.argv[1])
before = set(os.listdir("/proc/self/fd"))
spool = Spool(directory, 10_000_000)
try:
    spool.write_all([b"x" * 3_000] * 100)
except ExportSpoolFullError as refusal:
    print("refused:", refusal)
spool.close()  # bytes left in its buffer fail again: not raised
assert set(os.listdir("/proc/self/fd")) <= before, "the spool's file is still open"
print("closed")
"""


def test_a_spool_on_a_full_disk_is_refused_by_name_and_closes(tmp_path: Path) -> None:
    script = textwrap.dedent(FULL_DISK_SCRIPT)
    ran = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.splitlines() == [f"refused: {NO_ROOM}", "closed"], ran.stdout
    assert "EFBIG" in ran.stderr  # the warning names the errno
