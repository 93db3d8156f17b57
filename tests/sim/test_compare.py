"""terminal_sim.compare: the run order, the summary, and one real round of two switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal_sim import bench, compare
from terminal_sim.compare import RunFigures
from terminal_sim.config import LoadModel
from tests.sim.fleet_flags import FLEET_FLAG_ROWS

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_order_alternates_which_tree_goes_first() -> None:
    assert compare.order(3) == ["before", "after", "after", "before", "before", "after"]


def test_the_summary_pairs_runs_by_round() -> None:
    runs = {
        "before": [RunFigures(500.0, 2.0, True, 50.0), RunFigures(400.0, 2.5, True, 80.0)],
        "after": [RunFigures(600.0, 1.5, True, 50.0), RunFigures(400.0, 2.5, False, 40.0)],
    }
    report = compare.summary(runs)
    assert report["before"]["median_approved_per_s"] == 450.0
    assert report["after"]["audits_clean"] is False
    assert report["before"]["audits_clean"] is True
    assert report["after_over_before"] == {"approved_per_s": 1.1, "cpu_ms_per_request": 0.875, "p99_ms": 0.75}
    assert report["before"]["p99_ms"] == [50.0, 80.0]
    assert report["before"]["median_p99_ms"] == 65.0


def test_a_rate_makes_the_runs_the_benchs_open_loop_after_its_closed_loop() -> None:
    closed, no_warm_up = compare.run_configs(200, 12.0, 0.0)
    assert (closed.load_model, no_warm_up) == (LoadModel.closed, None)
    opened, warm_up = compare.run_configs(200, 12.0, 890.0)
    assert (opened.load_model, opened.target_rate_per_s) == (LoadModel.open, 890.0)
    assert opened == bench.open_loop(closed, 890.0)
    assert warm_up == closed
    assert (opened.terminals, opened.duration_s, opened.faults) == (200, 12.0, closed.faults)


def test_a_negative_rate_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        compare.main(["--before", str(ROOT), "--open-rate-per-s", "-5"])
    assert refused.value.code == 2
    assert "--open-rate-per-s must not be negative" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "--rounds must be from 1 to 100, not 0"),
        (["--rounds", "1000000000"], "--rounds must be from 1 to 100, not 1000000000"),
        *FLEET_FLAG_ROWS,
        (["--open-rate-per-s", "-5"], "--open-rate-per-s must not be negative or infinite, not -5.0"),
        (["--open-rate-per-s", "nan"], "--open-rate-per-s must not be negative or infinite, not nan"),
        (["--open-rate-per-s", "inf"], "--open-rate-per-s must not be negative or infinite, not inf"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_a_switch_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        compare.main(["--before", str(ROOT), "--after", str(ROOT), *argv])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"python -m terminal_sim.compare: error: {message}"


def test_a_directory_that_is_not_a_tree_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        compare.main(["--before", str(tmp_path), "--after", str(ROOT)])
    assert refused.value.code == 2
    assert "--before" in capsys.readouterr().err


@pytest.mark.usefixtures("collector_restored")
def test_one_round_of_two_real_switches(capsys: pytest.CaptureFixture[str]) -> None:
    tree = str(ROOT)
    argv = ["--before", tree, "--after", tree, "--rounds", "1", "--terminals", "4", "--cards", "20"]
    assert compare.main([*argv, "--duration-s", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for side in compare.SIDES:
        assert report[side]["audits_clean"] is True
        assert len(report[side]["approved_per_s"]) == 1
        assert report[side]["approved_per_s"][0] > 0
        assert report[side]["cpu_ms_per_request"][0] > 0
        assert report[side]["p99_ms"][0] > 0


@pytest.mark.usefixtures("collector_restored")
def test_one_round_of_two_real_switches_in_an_open_loop(capsys: pytest.CaptureFixture[str]) -> None:
    tree = str(ROOT)
    argv = ["--before", tree, "--after", tree, "--rounds", "1", "--terminals", "4", "--cards", "20"]
    assert compare.main([*argv, "--duration-s", "0.5", "--open-rate-per-s", "40"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for side in compare.SIDES:
        assert report[side]["audits_clean"] is True
        assert report[side]["p99_ms"][0] > 0
