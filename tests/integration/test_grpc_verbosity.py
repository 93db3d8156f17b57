"""grpc core's own error lines are quieted (GRPC_VERBOSITY=NONE) only in the txswitch program itself,
and only when the operator set no GRPC_VERBOSITY. Before, importing `switch.cli` set it for every
process that did (a test, an embedder, the load tester), hiding grpc core's errors there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve import REPO_ROOT, run_to_exit

GRPC_CORE_LINE = "add_port.cc"  # grpc core's "E... add_port.cc:83] Failed to add port to server: ..."
# As pip writes the `txswitch` script.
SCRIPT = "import sys\nfrom switch.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"


def run(command: list[str], operator_value: str | None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "GRPC_VERBOSITY"}
    environment["PYTHONPATH"] = str(REPO_ROOT)  # the script's directory is not the tree's
    if operator_value is not None:
        environment["GRPC_VERBOSITY"] = operator_value
    return run_to_exit(command, environment)


@pytest.mark.parametrize("module", ["switch.cli", "terminal_sim.echo_server"])
def test_importing_a_program_leaves_grpc_verbosity_as_it_was(module: str) -> None:
    shown = f"import os, {module}; print(os.environ.get('GRPC_VERBOSITY', 'unset'))"
    finished = run([sys.executable, "-c", shown], None)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip() == "unset"


@pytest.mark.parametrize(
    ("how", "operator_value", "grpc_core_shown"),
    [
        ("module", None, False),
        ("script", None, False),
        ("module", "ERROR", True),  # the operator's own value stands
        ("script", "ERROR", True),
    ],
)
def test_the_txswitch_program_quiets_grpc_core_unless_the_operator_set_it(
    tmp_path: Path, taken_port: int, how: str, operator_value: str | None, grpc_core_shown: bool
) -> None:
    script = tmp_path / "bin" / "txswitch"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    program = [sys.executable, "-m", "switch.cli"] if how == "module" else [sys.executable, str(script)]
    arguments = ["serve", "--data-dir", str(tmp_path / "data"), "--grpc-port", str(taken_port)]
    finished = run([*program, *arguments, "--metrics-port", "-1", "--console-port", "-1"], operator_value)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "txswitch serve: cannot listen for gRPC" in finished.stderr, finished.stderr[-2000:]
    assert (GRPC_CORE_LINE in finished.stderr) is grpc_core_shown, finished.stderr[-2000:]


@pytest.mark.parametrize(("operator_value", "grpc_core_shown"), [(None, False), ("ERROR", True)])
def test_the_echo_server_program_quiets_grpc_core_unless_the_operator_set_it(
    taken_port: int, operator_value: str | None, grpc_core_shown: bool
) -> None:
    program = [sys.executable, "-m", "terminal_sim.echo_server", "--port", str(taken_port)]
    finished = run(program, operator_value)
    assert finished.returncode == 2, finished.stderr[-2000:]
    assert "cannot listen" in finished.stderr, finished.stderr[-2000:]
    assert (GRPC_CORE_LINE in finished.stderr) is grpc_core_shown, finished.stderr[-2000:]
