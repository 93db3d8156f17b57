"""txswitch-sim refuses a bad command line by naming the flag, before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal_sim import cli
from terminal_sim.config import LoadModel
from tests.sim.fleet_flags import FLEET_FLAG_ROWS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        *FLEET_FLAG_ROWS,
        (["--day-length-s", "0"], "--day-length-s must be above 0 and finite, not 0.0"),
        (["--load-model", "open", "--rate-per-s", "0"], "--rate-per-s must be above 0 and finite, not 0.0"),
        (["--rate-per-s", "-3"], "--rate-per-s must be above 0 and finite, not -3.0"),
        (["--think-ms", "-5"], "--think-ms must not be negative or infinite, not -5.0"),
        (["--think-ms", "inf"], "--think-ms must not be negative or infinite, not inf"),
        (["--employees", "0"], "--employees must be at least 1, not 0"),
        (["--connect-timeout-s", "0"], "--connect-timeout-s must be above 0 and finite, not 0.0"),
        (["--connect-timeout-s", "nan"], "--connect-timeout-s must be above 0 and finite, not nan"),
        (["--connect-timeout-s", "1e300"], "--connect-timeout-s must be at most 86400, not 1e+300"),
        (["--wrong-pin-share", "1.5"], "--wrong-pin-share must be from 0 to 1, not 1.5"),
        (["--duplicate-share", "-0.1"], "--duplicate-share must be from 0 to 1, not -0.1"),
        (["--timeout-share", "nan"], "--timeout-share must be from 0 to 1, not nan"),
        (["--abandon-share", "2"], "--abandon-share must be from 0 to 1, not 2.0"),
        (
            ["--duplicate-share", "0.6", "--timeout-share", "0.6"],
            "--duplicate-share, --timeout-share and --abandon-share together must not be above 1, not 1.21",
        ),
        (["--target", "localhost"], "--target must be host:port, as 127.0.0.1:50051, not 'localhost'"),
        (["--target", ":50051"], "--target must be host:port, as 127.0.0.1:50051, not ':50051'"),
        (["--target", "host:port"], "--target must be host:port, as 127.0.0.1:50051, not 'host:port'"),
        (["--target", "127.0.0.1:0"], "--target port must be from 1 to 65535, not 0"),
        (["--target", "127.0.0.1:70000"], "--target port must be from 1 to 65535, not 70000"),
    ],
)
def test_a_bad_flag_is_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(argv)
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"txswitch-sim: error: {message}"


def test_an_out_dir_that_cannot_be_made_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out_dir = a_file / "sim-out"
    with pytest.raises(SystemExit) as refused:
        # No switch listens at 127.0.0.1:1: a refusal after the out dir's check would say so instead.
        cli.main(["--target", "127.0.0.1:1", "--out-dir", str(out_dir)])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"txswitch-sim: error: --out-dir {out_dir} cannot be made: {a_file} is not a directory"
    )


@pytest.mark.skipif(not Path("/proc/1").is_dir(), reason="no /proc")
def test_an_out_dir_in_a_directory_not_writable_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(["--target", "127.0.0.1:1", "--out-dir", "/proc/1/sim-out"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "txswitch-sim: error: --out-dir /proc/1/sim-out cannot be written: /proc/1 is not writable"
    )


def test_good_flags_make_the_config() -> None:
    argv = ["--terminals", "7", "--employees", "3", "--load-model", "open", "--rate-per-s", "12"]
    args = cli.build_parser().parse_args(argv)
    assert cli.problem_of(args) is None
    config = cli.config_from(args)
    assert (config.terminals, config.employees, config.load_model, config.target_rate_per_s) == (
        7,
        3,
        LoadModel.open,
        12.0,
    )


def test_without_a_switch_it_says_where_it_looked_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Before, `make sim` with no switch ended in thirty lines of traceback.
    # A short wait for the switch: the message, not the default 5 s, is what this looks at.
    argv = ["--target", "127.0.0.1:1", "--connect-timeout-s", "0.2", "--terminals", "1", "--duration-s", "1"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "txswitch-sim: no switch answers at 127.0.0.1:1: start one (make run), "
        "or give its address with --target (with make: make sim SIM_TARGET=<host>:<port>)"
    )


def test_it_waits_for_the_switch_as_long_as_connect_timeout_s_says(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[tuple[str, float]] = []

    def listens(target: str, wait_s: float = cli.SWITCH_WAIT_S) -> bool:
        waits.append((target, wait_s))
        return False

    monkeypatch.setattr(cli, "_switch_listens", listens)
    assert cli.main(["--target", "127.0.0.1:1", "--connect-timeout-s", "0.25"]) == 2
    assert cli.main(["--target", "127.0.0.1:1"]) == 2
    assert waits == [("127.0.0.1:1", 0.25), ("127.0.0.1:1", cli.SWITCH_WAIT_S)]
