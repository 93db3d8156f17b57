"""`make profile` (terminal_sim.profile): it counts the switch's SQL statements with a listener on
the switch's engine. Audit session 23: the listener was added after the switch started and removed
while it ran; SQLAlchemy keeps an engine's listeners in a deque each statement iterates, so a
statement in flight on another thread then failed ("deque mutated during iteration")."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from switch.store.engine import make_engine
from terminal_sim import cli, profile
from terminal_sim.profile import StatementCounts
from tests.sim.fleet_flags import FLEET_FLAG_ROWS

WAIT_S = 10.0
IN_FLIGHT = "statement-in-flight"


def engine_in(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'profile.sqlite'}")


def run_one(engine: Engine, results: list[object]) -> None:
    try:
        with engine.connect() as conn:
            results.append(conn.execute(text("SELECT 1")).scalar())
    except Exception as error:  # what the test looks at
        results.append(error)


def test_ending_the_count_fails_no_statement_in_flight(tmp_path: Path) -> None:
    engine = engine_in(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:  # a switch thread paused between two of the engine's listeners
        if threading.current_thread().name == IN_FLIGHT:
            inside.set()
            release.wait(WAIT_S)

    try:
        event.listen(engine, "before_cursor_execute", hold)  # before any thread runs a statement
        counts = StatementCounts(engine)
        results: list[object] = []
        statement = threading.Thread(target=run_one, args=(engine, results), name=IN_FLIGHT)
        statement.start()
        assert inside.wait(WAIT_S)
        counts.stop()  # the measuring window ends while the statement is on its way
        release.set()
        statement.join(WAIT_S)
        assert results == [1]
    finally:
        release.set()
        engine.dispose()


def test_only_the_statements_of_the_measuring_window_are_counted(tmp_path: Path) -> None:
    engine = engine_in(tmp_path)
    try:
        counts = StatementCounts(engine)
        for window in (False, True, False):
            if window:
                counts.start()
            with engine.connect() as conn:
                conn.execute(text("SELECT 1" if window else "SELECT 2"))
            if window:
                counts.stop()
        assert dict(counts.counts) == {("MainThread", "SELECT 1"): 1}
    finally:
        engine.dispose()


def test_make_profile_runs_against_a_real_switch_and_reports(tmp_path: Path) -> None:
    """A run shorter than the simulator's progress interval: the profile used to wait for a progress
    line that never came and fail with "the simulator ended before its run began"."""
    command = [
        sys.executable,
        "-m",
        "terminal_sim.profile",
        "--terminals",
        "2",
        "--cards",
        "20",
        "--duration-s",
        "0.5",
        "--top",
        "3",
        "--out-dir",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SQL statements per request:" in done.stdout, done.stdout
    assert "Top 3 functions by own CPU time" in done.stdout, done.stdout
    assert "deque mutated" not in done.stdout + done.stderr
    assert (tmp_path / "out" / "switch.pstat").stat().st_size > 0
    assert "ended before its run began" not in done.stderr


@pytest.mark.parametrize(
    ("line", "began"),
    [
        ("measuring window started\n", True),
        ("t=  1.0s rate=     12/s approved=      12 p99=   3.10ms errors=0\n", True),
        ("provisioning a simulator shop with 20 cards on 127.0.0.1:1\n", False),
        ("running 2 terminals for 0 s\n", False),
    ],
)
def test_the_run_begins_at_the_window_start_line_before_any_progress_line(line: str, began: bool) -> None:
    assert profile.run_began(line) is began


def test_the_simulator_prints_the_window_start_line_the_profile_waits_for() -> None:
    assert profile.run_began(cli.WINDOW_START_LINE + "\n")


SMALL_RUN = ["--terminals", "2", "--cards", "5", "--duration-s", "0.5"]  # what a row let through costs


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        *FLEET_FLAG_ROWS,
        (["--top", "0"], "--top must be from 1 to 1,000, not 0"),
        (["--top", "-3"], "--top must be from 1 to 1,000, not -3"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_a_switch_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "profile-out"
    with pytest.raises(SystemExit) as refused:
        profile.main([*SMALL_RUN, *argv, "--out-dir", str(out_dir)])
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.profile: error: {message}"
    assert not out_dir.exists()


def test_an_out_dir_that_cannot_be_made_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as refused:
        profile.main([*SMALL_RUN, "--out-dir", str(a_file / "profile-out")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m terminal_sim.profile: error: --out-dir {a_file / 'profile-out'} cannot be made: "
        f"{a_file} is not a directory"
    )


PROFILE_GRPC_PORT = 50999  # as if from free_port(); nothing listens in these rows


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        # The simulator finds the switch's admin token and database in the profile's data dir.
        ("TXSWITCH_DATA_DIR", "{tmp}/from-variable", "data_dir", "{tmp}/profile-data"),
        ("TXSWITCH_DATABASE_URL", "sqlite:////nonexistent-profile/x.sqlite", "database_url", ""),
        ("TXSWITCH_GRPC_PORT", "not-a-port", "grpc_port", PROFILE_GRPC_PORT),
        ("TXSWITCH_METRICS_PORT", "9464", "metrics_port", -1),
        ("TXSWITCH_CONSOLE_PORT", "not-a-port", "console_port", -1),
        ("TXSWITCH_DEMO_DATA", "1", "demo_data", False),
        # A setting the profile leaves alone is still the variable's.
        ("TXSWITCH_CARD_ACTOR_IDLE_S", "7.5", "card_actor_idle_s", 7.5),
    ],
)
def test_the_profiles_own_settings_win_over_txswitch_variables(
    variable: str, value: str, field: str, expected: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    settings = profile.switch_settings(tmp_path / "profile-data", PROFILE_GRPC_PORT)
    wanted = Path(str(expected).format(tmp=tmp_path)) if field == "data_dir" else expected
    assert getattr(settings, field) == wanted
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'profile-data' / 'txswitch.sqlite'}"
