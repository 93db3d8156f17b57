"""`txswitch serve`: a flag given on its command line wins over its TXSWITCH_* variable, which is then
not read (flags, then variables, then defaults). The data dir and the database URL went the other way:
a variable left in the environment moved the switch's data away from the directory the command named.
Real processes; each row sets a variable the switch could not use, and checks what it used instead."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.serve import serve_process

VARIABLE_DIR = "from-variable"  # under the test's tmp_path
FLAG_DIR = "from-flag"
PRINTED_WITHIN_S = 20.0


def printed_at_start(out_path: Path) -> str:
    """What serve printed up to its data directory's line, which follows every address."""
    deadline_s = time.monotonic() + PRINTED_WITHIN_S
    while "data in " not in (printed := out_path.read_text()):
        assert time.monotonic() < deadline_s, printed
        time.sleep(0.05)
    return printed


@pytest.mark.parametrize(
    ("variable", "value", "flags", "printed"),
    [
        # A directory of its own: the data (keys, database, admin token) went there, not to --data-dir.
        ("TXSWITCH_DATA_DIR", "{tmp}/" + VARIABLE_DIR, [], "data in {tmp}/" + FLAG_DIR + " (database sqlite"),
        (
            "TXSWITCH_DATABASE_URL",
            "sqlite:////nonexistent-envflags/txswitch.sqlite",
            ["--database-url", "sqlite:///{tmp}/flag.sqlite"],
            "(database sqlite:///{tmp}/flag.sqlite)",
        ),
        ("TXSWITCH_GRPC_PORT", "not-a-port", ["--grpc-port", "0"], "listening for terminals"),
        ("TXSWITCH_METRICS_PORT", "not-a-port", ["--metrics-port", "-1"], "metrics: off\n"),
        ("TXSWITCH_CONSOLE_PORT", "not-a-port", ["--console-port", "-1"], "ops console: off\n"),
        (
            "TXSWITCH_CONSOLE_AUTHORIZED_KEYS",
            "",
            ["--console-authorized-keys", "{tmp}/keys", "--console-port", "0"],
            "ops console: ssh -p ",
        ),
        # The flag won here before: a row to keep it so.
        ("TXSWITCH_DEMO_DATA", "1", ["--no-demo"], "data in "),
    ],
)
def test_a_flag_wins_over_its_variable(
    variable: str, value: str, flags: list[str], printed: str, tmp_path: Path
) -> None:
    (tmp_path / "keys").write_text("")
    env = {
        **os.environ,
        "TXSWITCH_METRICS_PORT": "-1",
        "TXSWITCH_CONSOLE_PORT": "-1",
        variable: value.format(tmp=tmp_path),
    }
    args = ["--data-dir", str(tmp_path / FLAG_DIR), "--grpc-port", "0"]
    args += [flag.format(tmp=tmp_path) for flag in flags]
    with serve_process(args, tmp_path / "serve.log", env) as (_process, address):
        assert int(address.rpartition(":")[2]) > 0
        said = printed_at_start(tmp_path / "serve.out")
    assert printed.format(tmp=tmp_path) in said, said
    assert (tmp_path / FLAG_DIR / "admin.token").is_file()
    assert not (tmp_path / VARIABLE_DIR).exists()
    assert not (tmp_path / FLAG_DIR / "demo_cards.json").exists()
