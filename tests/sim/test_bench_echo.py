"""The bench's echo open loop: the switch's open loop replayed against the echo server."""

from __future__ import annotations

import json
from pathlib import Path

from terminal_sim import bench
from terminal_sim.config import LoadModel


def test_the_echo_open_loop_runs_the_same_open_loop_and_reports_it(tmp_path: Path) -> None:
    opened = bench.open_loop(bench.closed_loop(terminals=4, duration_s=1.0), rate_per_s=50.0)
    fleet = bench.measure_echo_open_loop(opened, cards=50, out_dir=tmp_path)
    statistics = fleet.statistics
    assert opened.load_model is LoadModel.open
    assert statistics.completed > 10  # about 50 flows/s for 1 s, a flow being one or two requests
    assert statistics.approved_per_s == statistics.completed_per_s  # the echo server approves all
    assert 0 < statistics.overall.p50_ms <= statistics.overall.p99_ms
    report = json.loads((tmp_path / "echo-open.json").read_text())
    assert report["requests"] == statistics.completed and "audit" not in report


def test_a_run_against_the_echo_server_reads_the_cpu_of_both_sides() -> None:
    run = bench.against_echo(bench.closed_loop(terminals=4, duration_s=1.0), cards=50)
    assert run.fleet.statistics.completed > 0
    # /proc counts in ticks of 10 ms: the echo server's share of a short run may round to none.
    assert run.server_ms_per_request is not None and 0 <= run.server_ms_per_request < 100
    assert run.simulator_ms_per_request is not None and 0 < run.simulator_ms_per_request < 100
