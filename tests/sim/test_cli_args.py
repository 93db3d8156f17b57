"""txswitch-sim refuses a bad command line by naming the flag, before it starts anything."""

from __future__ import annotations

import pytest

from terminal_sim import cli
from terminal_sim.config import LoadModel


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--terminals", "0"], "--terminals must be from 1 to 100,000, not 0"),
        (["--terminals", "100001"], "--terminals"),
        (["--duration-s", "-1"], "--duration-s must be above 0"),
        (["--day-length-s", "0"], "--day-length-s must be above 0"),
        (["--load-model", "open", "--rate-per-s", "0"], "--rate-per-s must be above 0"),
        (["--think-ms", "-5"], "--think-ms must not be negative"),
        (["--cards", "0"], "--cards must be at least 1"),
        (["--employees", "0"], "--employees must be at least 1, not 0"),
        (["--wrong-pin-share", "1.5"], "--wrong-pin-share must be from 0 to 1"),
        (["--duplicate-share", "-0.1"], "--duplicate-share must be from 0 to 1"),
        (["--duplicate-share", "0.6", "--timeout-share", "0.6"], "together must not be above 1"),
    ],
)
def test_a_bad_flag_is_refused_by_name(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(argv)
    assert refused.value.code == 2
    assert named in capsys.readouterr().err


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
    code = cli.main(["--target", "127.0.0.1:1", "--terminals", "1", "--duration-s", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "txswitch-sim: no switch answers at 127.0.0.1:1: start one (make run), "
        "or give its address with --target"
    )
