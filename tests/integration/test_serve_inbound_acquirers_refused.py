"""`txswitch serve` with TXSWITCH_ISO_INBOUND_ACQUIRERS malformed says so in one line, naming the setting,
and exits 2: it ended in a traceback (exit 1) of the listener's parse, which names no setting. It is
refused before the switch makes or opens anything (its data directory, database, journal process): it
was read only once those had started. Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve import REPO_ROOT

ZONE_KEY_HEX = bytes(range(16)).hex()  # a zone PIN key in clear: never repeated in the refusal


@pytest.mark.parametrize(
    ("acquirers", "named"),
    [
        ("not-an-entry", "expected <digits>:<merchant e-mail>"),
        (f"4711:no-at-sign:{ZONE_KEY_HEX}", "expected <digits>:<merchant e-mail>"),
        ("4711:shop@example.com:not-hex", "zone key or algorithm malformed"),
        (f"4711:shop@example.com:{ZONE_KEY_HEX}:rsa", "zone key or algorithm malformed"),
    ],
)
def test_malformed_inbound_acquirers_are_refused_in_one_line(
    tmp_path: Path, acquirers: str, named: str
) -> None:
    data_dir = tmp_path / "data"
    command = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(data_dir)]
    command += ["--grpc-port", "0", "--metrics-port", "-1", "--console-port", "-1"]
    env = {**os.environ, "TXSWITCH_ISO_LISTEN_PORT": "0", "TXSWITCH_ISO_INBOUND_ACQUIRERS": acquirers}
    refused = subprocess.run(
        command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    said = [line for line in refused.stderr.splitlines() if line.startswith("txswitch serve: ")]
    assert len(said) == 1, refused.stderr[-2000:]
    assert "TXSWITCH_ISO_INBOUND_ACQUIRERS" in said[0] and named in said[0], said
    assert "Traceback" not in refused.stderr and ZONE_KEY_HEX not in refused.stderr, refused.stderr[-2000:]
    assert not data_dir.exists(), sorted(path.name for path in data_dir.iterdir())
