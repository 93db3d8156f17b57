"""`txswitch serve` as a real process, for the tests that signal, kill or restart it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
EXIT_WITHIN_S = 60.0


def run_to_exit(command: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`command` run from the tree's root until it exits (EXIT_WITHIN_S at most), its output kept as text."""
    return subprocess.run(
        list(command),
        check=False,
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
    )


@contextmanager
def serve_process(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`txswitch serve <args>`; yields the process and its gRPC address once it listens.

    Its standard output goes to log_path with the suffix .out, its standard error to log_path.
    A process still running at the end (a test that failed) is killed. `preexec_fn` runs in the
    child before it starts (a limit on its files, say).
    """
    out_path = log_path.with_suffix(".out")
    command = [sys.executable, "-m", "switch.cli", "serve", *args]
    with log_path.open("ab") as log, out_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=log,
            env=dict(env) if env is not None else None,
            preexec_fn=preexec_fn,  # noqa: PLW1509  # a signal and a limit: no lock is taken
        )
        try:
            deadline_s = time.monotonic() + START_TIMEOUT_S
            while "txswitch listening" not in out_path.read_text():
                assert process.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline_s, "txswitch serve did not start"
                time.sleep(0.05)
            yield process, out_path.read_text().split("grpc://", 1)[1].split()[0]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
