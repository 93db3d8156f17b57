"""The latency probe against a real switch on loopback: it signs in, asks, and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switch.server import SwitchServer
from terminal_sim import switch_probe


def test_probe_reports_the_unknown_card_answer(
    running_switch: SwitchServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = switch_probe.main(
        [
            "--target",
            running_switch.address,
            "--data-dir",
            str(running_switch.settings.data_dir),
            "--seconds",
            "0.5",
            "--interval-ms",
            "10",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["response_code"] == "14"  # unknown card: the probe's number is issued by no one
    assert result["count"] >= 5
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]


def test_probe_without_the_admin_token_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = switch_probe.main(["--target", "127.0.0.1:1", "--data-dir", str(tmp_path), "--seconds", "1"])
    assert code == 2
    assert "admin token" in capsys.readouterr().err


def test_probe_with_a_wrong_admin_token_names_the_refusal(
    running_switch: SwitchServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"  # not the switch's own data dir, which is tmp_path
    elsewhere.mkdir()
    (elsewhere / "admin.token").write_text("not-the-token")
    code = switch_probe.main(
        ["--target", running_switch.address, "--data-dir", str(elsewhere), "--seconds", "0.5"]
    )
    assert code == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "0"], "--seconds must be above 0 and finite, not 0.0"),
        (["--seconds", "nan"], "--seconds must be above 0 and finite, not nan"),
        (["--seconds", "inf"], "--seconds must be above 0 and finite, not inf"),
        (["--interval-ms", "-1"], "--interval-ms must not be negative or infinite, not -1.0"),
        (["--interval-ms", "nan"], "--interval-ms must not be negative or infinite, not nan"),
        (["--interval-ms", "inf"], "--interval-ms must not be negative or infinite, not inf"),
        (["--target", "localhost"], "--target must be host:port, as 127.0.0.1:50051, not 'localhost'"),
        (["--target", "127.0.0.1:0"], "--target port must be from 1 to 65535, not 0"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_the_token_is_read(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        switch_probe.main(["--data-dir", str(tmp_path), *argv])  # no token there: it is never read
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.switch_probe: error: {message}"
