"""The bridge probe refuses a bad command line by naming the flag, before an echo server starts."""

from __future__ import annotations

import pytest

from terminal_sim import bridge_probe

NO_SERVER = ["--address", "127.0.0.1:1"]  # so that a flag let through fails fast rather than probes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--in-flight", "0"], "--in-flight must each be from 1 to 1,024, not 0"),
        (["--in-flight", "4", "-1"], "--in-flight must each be from 1 to 1,024, not -1"),
        (["--in-flight", "1000000"], "--in-flight must each be from 1 to 1,024, not 1000000"),
        (["--duration-s", "0"], "--duration-s must be above 0 and finite, not 0.0"),
        (["--duration-s", "nan"], "--duration-s must be above 0 and finite, not nan"),
        (["--duration-s", "inf"], "--duration-s must be above 0 and finite, not inf"),
        (["--warmup-s", "-1"], "--warmup-s must not be negative or infinite, not -1.0"),
        (["--warmup-s", "inf"], "--warmup-s must not be negative or infinite, not inf"),
        (["--switch-interval-s", "0"], "--switch-interval-s must be above 0 and finite, not 0.0"),
        (["--switch-interval-s", "nan"], "--switch-interval-s must be above 0 and finite, not nan"),
        (["--address", "localhost"], "--address must be host:port, as 127.0.0.1:50051, not 'localhost'"),
        (["--address", "127.0.0.1:70000"], "--address port must be from 1 to 65535, not 70000"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        bridge_probe.main([*NO_SERVER, *argv])
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.bridge_probe: error: {message}"
