"""A SwitchServer in the test's own process, on a free loopback port, for tests that drive it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from switch.config import Settings
from switch.server import SwitchServer


@contextmanager
def switch_on_loopback(data_dir: Path, **overrides: object) -> Iterator[SwitchServer]:
    """Started on the SQLite file in data_dir, without demo data, metrics or console unless overridden."""
    settings = Settings(
        data_dir=data_dir, grpc_port=0, metrics_port=-1, console_port=-1, demo_data=False
    ).with_overrides(**overrides)
    server = SwitchServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
