"""`txswitch serve`'s first line names everything its gRPC port serves: it said "terminals and
backoffice" only, so a newcomer looking for the merchant portal and the cardholders' balance (which
the README puts on the same port) was told they were not there. A real `txswitch serve`."""

from __future__ import annotations

import re
from pathlib import Path

from tests.serve import serve_process

QUIET = ("--metrics-port", "-1", "--console-port", "-1", "--grpc-port", "0")
SERVED_ON_THE_GRPC_PORT = {"terminals", "backoffice", "portal", "cardholders"}


def test_the_listening_line_names_every_service_of_the_grpc_port(tmp_path: Path) -> None:
    with serve_process(["--data-dir", str(tmp_path), *QUIET], tmp_path / "serve.log") as (_process, address):
        first_line = (tmp_path / "serve.out").read_text().splitlines()[0]
    listed = re.fullmatch(rf"txswitch listening for (.+) on grpc://{re.escape(address)}", first_line)
    assert listed, first_line
    assert set(re.split(r", | and ", listed[1])) == SERVED_ON_THE_GRPC_PORT
