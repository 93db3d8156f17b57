"""`python -m switch.acquiring wrap-key`, the README's step for the acquirers file: a wrong key or
master key file is named in one line, exit 2, never a traceback and never the key typed. Before, a
key of the wrong length, a key that is no hex and a master key file that is not there each ended
in a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve import REPO_ROOT

MASTER_HEX = bytes(range(32)).hex()
CLEAR_KEY = "00112233445566778899aabbccddeeff"
SHORT_KEY = "a1b2c3d4e5f6a7b8"  # 8 bytes of an aes128 key's 16
NOT_HEX_KEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5zz"
WITHIN_S = 60.0
WRAP_KEY = [sys.executable, "-m", "switch.acquiring", "wrap-key", "--key-id", "zpk-a", "--usage", "zone-pin"]


def wrap_key(tmp_path: Path, stdin: str, master_file_text: str | None) -> subprocess.CompletedProcess[str]:
    master_file = tmp_path / "master.key"
    if master_file_text is not None:
        master_file.write_text(master_file_text)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TXSWITCH_")}
    return subprocess.run(
        [*WRAP_KEY, "--master-key-file", str(master_file)],
        input=stdin,
        check=False,
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=WITHIN_S,
    )


def test_a_good_key_is_wrapped(tmp_path: Path) -> None:
    finished = wrap_key(tmp_path, CLEAR_KEY + "\n", MASTER_HEX)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("v1:zpk-a:zone-pin:aes128:"), finished.stdout
    assert CLEAR_KEY not in finished.stdout


@pytest.mark.parametrize(
    ("case", "stdin", "master_file_text", "message"),
    [
        (
            "key too short",
            SHORT_KEY,
            MASTER_HEX,
            "the key on stdin: aes128 key must be 16 bytes (32 hex digits)",
        ),
        ("key not hex", NOT_HEX_KEY, MASTER_HEX, "the key on stdin must be hex digits"),
        ("no key", "", MASTER_HEX, "the key on stdin must be hex digits"),
        (
            "no master key file",
            CLEAR_KEY,
            None,
            "--master-key-file {tmp}/master.key: No such file or directory",
        ),
        ("master key not hex", CLEAR_KEY, "not hex at all", "--master-key-file: master key must be hex"),
        ("master key too short", CLEAR_KEY, "0011", "--master-key-file: master key must be 32 bytes"),
    ],
)
def test_a_wrong_key_or_master_key_is_named_in_one_line(
    tmp_path: Path, case: str, stdin: str, master_file_text: str | None, message: str
) -> None:
    finished = wrap_key(tmp_path, stdin + "\n", master_file_text)
    assert finished.returncode == 2, (case, finished.stderr)
    assert "Traceback" not in finished.stderr, finished.stderr
    assert message.format(tmp=tmp_path) in finished.stderr, finished.stderr
    assert finished.stdout == ""
    for secret in (SHORT_KEY, NOT_HEX_KEY, CLEAR_KEY, MASTER_HEX):
        assert secret not in finished.stderr


def test_wrapping_a_key_loads_neither_the_store_nor_the_gateway(tmp_path: Path) -> None:
    """The command needs the security module alone: before, it imported all of switch.acquiring
    (SQLAlchemy, trio, the acquirer gateway, the payments), most of a second per call."""
    (tmp_path / "master.key").write_text(MASTER_HEX)
    argv = [*WRAP_KEY[2:], "--master-key-file", str(tmp_path / "master.key")]
    program = (
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n"
        "    runpy.run_module('switch.acquiring', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "heavy = ('sqlalchemy', 'trio', 'grpc', 'actors', 'switch.config', 'switch.store')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in heavy or name in heavy))\n"
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TXSWITCH_")}
    finished = subprocess.run(
        [sys.executable, "-c", program],
        input=CLEAR_KEY + "\n",
        check=False,
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=WITHIN_S,
    )
    assert finished.returncode == 0, finished.stderr
    wrapped, loaded = finished.stdout.splitlines()
    assert wrapped.startswith("v1:zpk-a:zone-pin:aes128:"), finished.stdout
    assert loaded == "[]", loaded
