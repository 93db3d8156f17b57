"""`txswitch serve` starts with any value in a setting of a feature that is switched off, as it did
before the settings were checked (this session's ranges, ports and paths): such a setting is never
read. The checks refused a missing authorized-keys file with the console off (`--console-port -1`),
and so a switch that had started until then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.serve import serve_process

HUGE = str(10**20)


@pytest.mark.parametrize(
    ("feature_off", "arguments", "variables"),
    [
        (
            "console, by its port",
            ["--console-port", "-1", "--console-authorized-keys", "/nonexistent/keys"],
            {},
        ),
        ("console, without keys", [], {"TXSWITCH_CONSOLE_PORT": "70000"}),
        (
            "ISO 8583 listener",
            [],
            {
                "TXSWITCH_ISO_LISTEN_PORT": "-1",
                "TXSWITCH_ISO_INBOUND_IN_FLIGHT_MAX": HUGE,
                "TXSWITCH_ISO_INBOUND_IDLE_S": "1e20",
            },
        ),
        (
            "mail (no SMTP host)",
            ["--console-port", "-1"],
            {
                "TXSWITCH_SMTP_PORT": "0",
                "TXSWITCH_SMTP_TIMEOUT_S": "nan",
                "TXSWITCH_RECEIPT_RETRY_S": "0",
                "TXSWITCH_PASSWORD_RESET_CODE_S": "0",
                "TXSWITCH_PASSWORD_RESET_URL": "portal.example/reset#",
            },
        ),
        (
            "garbage collector tuning",
            ["--console-port", "-1"],
            {"TXSWITCH_GC_GEN0_THRESHOLD": "0", "TXSWITCH_GC_GEN1_THRESHOLD": "-1"},
        ),
        (
            "several nodes (one, on SQLite)",
            ["--console-port", "-1"],
            {"TXSWITCH_SHARED_COPY_MAX_AGE_S": "1e20"},
        ),
    ],
)
def test_serve_starts_with_any_value_in_a_setting_of_a_feature_that_is_off(
    feature_off: str, arguments: list[str], variables: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, "TXSWITCH_METRICS_PORT": "-1", **variables}
    args = ["--data-dir", str(tmp_path / "data"), "--grpc-port", "0", *arguments]
    with serve_process(args, tmp_path / "serve.log", env) as (_process, address):
        assert int(address.rpartition(":")[2]) > 0, feature_off
        output = (tmp_path / "serve.out").read_text()
        assert "ops console: off" in output and "ISO 8583 inbound: off" in output, feature_off
