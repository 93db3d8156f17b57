"""The accept-cost measurement refuses a bad command line by naming the flag, before a server starts."""

from __future__ import annotations

import pytest

from terminal_sim import accept_cost


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--calls", "0"], "--calls must be from 1 to 1,000,000, not 0"),
        (["--calls", "1000000000"], "--calls must be from 1 to 1,000,000, not 1000000000"),
        (["--calls", "5", "--threads", "16"], "--calls must be at least --threads (16), not 5"),
        (["--threads", "0"], "--threads must be from 1 to 256, not 0"),
        (["--threads", "-4"], "--threads must be from 1 to 256, not -4"),
        (["--threads", "100000"], "--threads must be from 1 to 256, not 100000"),
        (["--rounds", "0"], "--rounds must be from 1 to 100, not 0"),
        (["--rounds", "1000000000"], "--rounds must be from 1 to 100, not 1000000000"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_a_server_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        accept_cost.main(argv)
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.accept_cost: error: {message}"
