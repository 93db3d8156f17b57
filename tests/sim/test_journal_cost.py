"""The journal-cost measurement: a bad command line is refused by name; a small run on SQLite
measures every write of its flow mix taken by a real journal process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from terminal_sim import journal_cost


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batches", "0"], "--batches must be from 1 to 100,000, not 0"),
        (["--writes", "0"], "--writes must be from 1 to 256, not 0"),
        (["--writes", "257"], "--writes must be from 1 to 256, not 257"),
        (["--rounds", "0"], "--rounds must be from 1 to 100, not 0"),
        (["--terminals", "0"], "--terminals must be from 1 to 1,000, not 0"),
        (["--cards", "-1"], "--cards must be from 1 to 100,000, not -1"),
        (
            ["--database-url", "sqlite:///:memory:"],
            "--database-url must be one another process can open, not an in-memory SQLite database",
        ),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        journal_cost.main(argv)
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.journal_cost: error: {message}"


@pytest.mark.parametrize("shared_cards", [False, True])
def test_a_small_run_reports_the_journal_process_cpu_per_write(
    shared_cards: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--batches", "40", "--writes", "3", "--rounds", "2", "--cards", "5", "--terminals", "2"]
    assert journal_cost.main(argv + (["--shared-cards"] if shared_cards else [])) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["writes_per_round"] == 120
    assert len(report["journal_cpu_us_per_write"]) == 2
    spread = report["journal_cpu_us_per_write_spread"]
    assert 0 <= spread["min"] <= spread["median"] <= spread["max"]
    assert report["wall_us_per_write_spread"]["median"] > 0


def test_two_runs_share_one_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each run makes its own programme, merchant, terminals and cards, as a PostgreSQL database
    shared by several measurements needs."""
    argv = ["--batches", "5", "--rounds", "1", "--cards", "2", "--terminals", "1"]
    argv += ["--database-url", f"sqlite:///{tmp_path / 'shared.sqlite'}"]
    for _ in range(2):
        assert journal_cost.main(argv) == 0
        assert json.loads(capsys.readouterr().out)["writes_per_round"] == 10
