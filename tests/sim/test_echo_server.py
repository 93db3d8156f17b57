"""The echo server refuses a bad command line by naming the flag, before it listens."""

from __future__ import annotations

import pytest

from terminal_sim import echo_server


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "-1"], "--port must be from 0 (any free port) to 65535, not -1"),
        (["--port", "70000"], "--port must be from 0 (any free port) to 65535, not 70000"),
        (["--host", ""], "--host must be a host name or IP address, as 127.0.0.1, not ''"),
        (["--host", " ::1"], "--host must be a host name or IP address, as 127.0.0.1, not ' ::1'"),
    ],
)
@pytest.mark.timeout(10)  # a port let through is served (70000 as 4464) until the test is stopped
def test_a_bad_flag_is_refused_by_name_before_it_listens(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        echo_server.main(argv)
    assert refused.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == f"python -m terminal_sim.echo_server: error: {message}"


@pytest.mark.timeout(30)  # a host let through is served until the test is stopped
def test_a_host_it_cannot_listen_on_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        echo_server.main(["--host", "nohost.invalid", "--port", "0"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "python -m terminal_sim.echo_server: error: cannot listen on nohost.invalid:0, set by --host and "
        "--port: "
    )
