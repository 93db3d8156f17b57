"""`txswitch serve` on a database it cannot use says so in one line and exits 2: a newcomer got a
traceback of about 90 lines (a PostgreSQL schema that does not exist, PostgreSQL not running, an
SQLite file in a directory that does not exist). Real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve import REPO_ROOT

CLOSED_PORT = 9  # discard: nothing listens there on loopback


@pytest.mark.parametrize(
    ("database_url", "named"),
    [
        ("sqlite:////nonexistent-h24/txswitch.sqlite", "/nonexistent-h24/txswitch.sqlite"),
        (f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{CLOSED_PORT}/test", "Connection refused"),
        # A mistyped port: the URL does not parse (a ValueError's traceback, not SQLAlchemy's error).
        ("postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:x5432/test", "does not parse"),
        ("not a database url s3cret-pw", "does not parse"),
    ],
)
def test_a_database_it_cannot_use_is_named_in_one_line(tmp_path: Path, database_url: str, named: str) -> None:
    command = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(tmp_path)]
    command += ["--database-url", database_url, "--grpc-port", "0", "--metrics-port", "-1"]
    refused = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr[-2000:]
    said = [line for line in refused.stderr.splitlines() if line.startswith("txswitch serve: ")]
    assert len(said) == 1 and named in said[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and "s3cret-pw" not in refused.stderr


def test_a_password_given_as_a_query_parameter_is_hidden_too(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{CLOSED_PORT}/test?password=s3cret-pw"
    command = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(tmp_path)]
    command += ["--database-url", url, "--grpc-port", "0", "--metrics-port", "-1"]
    refused = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "Connection refused" in refused.stderr and "s3cret-pw" not in refused.stderr, refused.stderr
