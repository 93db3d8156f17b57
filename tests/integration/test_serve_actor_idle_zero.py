"""`txswitch serve` takes an actor idle time of 0 (an actor stops at the reaper's next pass once it
has nothing to do), as it did before every number setting had a range: the ranges (f8b58d7) made
both idle times positive, and a switch run so (the harness's `card_actor_idle_s=0.0`) was refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.serve import serve_process


@pytest.mark.parametrize("variable", ["TXSWITCH_CARD_ACTOR_IDLE_S", "TXSWITCH_TERMINAL_ACTOR_IDLE_S"])
def test_serve_takes_an_actor_idle_time_of_zero(variable: str, tmp_path: Path) -> None:
    env = {**os.environ, "TXSWITCH_METRICS_PORT": "-1", "TXSWITCH_CONSOLE_PORT": "-1", variable: "0"}
    args = ["--data-dir", str(tmp_path / "data"), "--grpc-port", "0"]
    with serve_process(args, tmp_path / "serve.log", env) as (_process, address):
        assert int(address.rpartition(":")[2]) > 0
