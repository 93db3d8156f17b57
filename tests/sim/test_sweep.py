"""terminal_sim.sweep: the shares it runs, the share it reports, and one short sweep of a real switch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from terminal_sim import sweep
from terminal_sim.sweep import SweepPoint
from tests.sim.fleet_flags import FLEET_FLAG_ROWS


def point(share: float, p99_ms: float, audit_clean: bool = True) -> SweepPoint:
    return SweepPoint(share, share * 1_000, share * 1_300, 2.0, p99_ms, p99_ms * 2, 0, audit_clean)


def test_shares_are_run_lowest_first_once_each() -> None:
    assert sweep.parse_shares("0.5, 0.1,0.3,0.1") == [0.1, 0.3, 0.5]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "--shares is empty"),
        ("0.1,half", "--shares must be numbers separated by commas, got '0.1,half'"),
        ("0,0.5", "--shares must each be above 0 and at most 1.5, got '0,0.5'"),
        ("0.5,2", "--shares must each be above 0 and at most 1.5, got '0.5,2'"),
    ],
)
def test_bad_shares_are_refused_by_name(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        sweep.parse_shares(text)
    assert str(refused.value) == problem


def test_the_highest_share_within_the_bound_stops_at_the_first_share_past_it() -> None:
    points = [point(0.1, 9.0), point(0.2, 14.9), point(0.3, 15.1), point(0.4, 12.0)]
    assert sweep.highest_share_within(points, 15.0) == 0.2  # 0.4 came in under it again, by luck
    assert sweep.highest_share_within(points, 20.0) == 0.4
    assert sweep.highest_share_within(points, 5.0) == 0.0


def test_a_share_whose_audit_failed_is_not_within_the_bound() -> None:
    points = [point(0.1, 3.0), point(0.2, 4.0, audit_clean=False), point(0.3, 5.0)]
    assert sweep.highest_share_within(points, 15.0) == 0.1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shares", "0.1,nan"], "--shares must each be above 0 and at most 1.5, got '0.1,nan'"),
        *FLEET_FLAG_ROWS,
        (["--p99-ms", "-1"], "--p99-ms must be above 0 and finite, not -1.0"),
        (["--p99-ms", "nan"], "--p99-ms must be above 0 and finite, not nan"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_a_switch_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        sweep.main([*argv, "--out-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m terminal_sim.sweep: error: {message}"
    assert list(tmp_path.iterdir()) == []  # no switch log: no switch was started


def test_an_out_dir_that_cannot_be_made_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as refused:
        sweep.main(["--out-dir", str(a_file / "out")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m terminal_sim.sweep: error: --out-dir {a_file / 'out'} cannot be made: "
        f"{a_file} is not a directory"
    )


@pytest.mark.usefixtures("collector_restored")
def test_a_short_sweep_of_a_real_switch_reports_every_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--shares", "0.5,0.2", "--terminals", "4", "--cards", "40", "--duration-s", "0.75"]
    out_dir = tmp_path / "sweep-out"  # not there yet, as bench-out before the first `make sweep`
    environment_before = {k: v for k, v in os.environ.items() if k.startswith("TXSWITCH_")}
    assert sweep.main([*argv, "--p99-ms", "10000", "--out-dir", str(out_dir)]) == 0
    # Run in-process (as here), it leaves the environment as it found it: a TXSWITCH_CONSOLE_PORT left
    # behind turned the console off for every later test of the process.
    assert {k: v for k, v in os.environ.items() if k.startswith("TXSWITCH_")} == environment_before
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == json.loads((out_dir / "sweep.json").read_text())
    assert result["audits_clean"] is True
    assert [p["share"] for p in result["points"]] == [0.2, 0.5]
    for p in result["points"]:
        assert p["offered_flows_per_s"] == pytest.approx(p["share"] * result["closed_flows_per_s"], abs=0.1)
        assert p["requests_per_s"] > 0 and 0 < p["p50_ms"] <= p["p99_ms"] <= p["p999_ms"]
    assert result["highest_share_within"] == 0.5  # every p99 is within 10 s
    assert (out_dir / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert (out_dir / "sweep-switch.log").is_file()
