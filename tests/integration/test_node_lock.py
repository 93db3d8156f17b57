"""One switch at a time on an SQLite file unless its nodes share it knowingly: a second `txswitch
serve` on the same data is refused by name (an audit found it started, and the first went on
spending a card the second had blocked). Real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from switch.store.node_lock import node_lock_for
from tests.serve import REPO_ROOT, serve_process

QUIET = ("--metrics-port", "-1", "--console-port", "-1", "--grpc-port", "0")


def serve_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), *QUIET]


def second_serve(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "switch.cli", "serve", *serve_args(data_dir)]
    return subprocess.run(
        command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_second_switch_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "TXSWITCH_SEVERAL_NODES": "auto"}
    with serve_process(serve_args(tmp_path), tmp_path / "first.log", env=env) as (first, _address):
        refused = second_serve(tmp_path, env)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert "another switch is running on" in refused.stderr
        assert "TXSWITCH_SEVERAL_NODES=yes" in refused.stderr
        assert first.poll() is None, "the first switch must go on serving"
    # The first is gone (killed): its lock went with it, so a switch starts on the file again.
    with serve_process(serve_args(tmp_path), tmp_path / "again.log", env=env) as (again, _address):
        assert again.poll() is None


def test_nodes_that_share_the_file_knowingly_both_start(tmp_path: Path) -> None:
    env = {**os.environ, "TXSWITCH_SEVERAL_NODES": "yes"}
    with (
        serve_process(serve_args(tmp_path), tmp_path / "a.log", env=env) as (a, _),
        serve_process(serve_args(tmp_path), tmp_path / "b.log", env=env) as (b, _),
    ):
        assert a.poll() is None and b.poll() is None


def test_a_switch_on_the_file_refuses_another_before_that_one_loads_the_switch(tmp_path: Path) -> None:
    """The refusal comes first: before, a second `serve` imported and built most of the switch
    (seconds) to be refused. The lock is held here as a running switch holds it."""
    held = node_lock_for(f"sqlite:///{tmp_path / 'txswitch.sqlite'}", shared=False)
    assert held is not None
    held.acquire()
    try:
        program = (
            "import runpy, sys\n"
            f"sys.argv = ['txswitch', 'serve', *{serve_args(tmp_path)!r}]\n"
            "try:\n"
            "    runpy.run_module('switch.cli', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as done:\n"
            "    print(done.code, 'switch.server' in sys.modules)\n"
        )
        env = {**os.environ, "TXSWITCH_SEVERAL_NODES": "auto"}
        refused = subprocess.run(
            [sys.executable, "-c", program],
            check=False,
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.release()
    assert "another switch is running on" in refused.stderr, refused.stderr[-2000:]
    assert refused.stdout.split() == ["2", "False"], refused.stderr[-2000:]
