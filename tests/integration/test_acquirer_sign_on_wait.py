"""How long the switch's start waits for its acquirers' sign-on is a setting
(TXSWITCH_ACQUIRER_SIGN_ON_WAIT_MS): it was a fixed 2 s (SIGN_ON_WAIT_MS), which an operator could
neither shorten (a switch whose acquirer is down started 2 s late, every start) nor lengthen (an
acquirer slower to sign on declined the first payments). In-process, gateway on loopback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from switch.acquiring import Acquiring
from switch.config import Settings
from switch.security import MasterKey, SecurityModule
from switch.store.engine import create_schema, make_engine
from tests.integration.payment_harness import MASTER_KEY_HEX, acquirers_file

WAIT_MS = 600


def test_the_start_waits_the_sign_on_wait_set_for_an_acquirer_that_never_answers(tmp_path: Path) -> None:
    with socket.socket() as silent:  # listens, never accepts: the link never signs on
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        path = acquirers_file(tmp_path / "acquirers.toml", silent.getsockname()[1])
        settings = Settings(data_dir=tmp_path, acquirers_file=path, acquirer_sign_on_wait_ms=WAIT_MS)
        settings.check()
        engine = make_engine(f"sqlite:///{tmp_path / 'switch.sqlite'}")
        create_schema(engine)
        security = SecurityModule(MasterKey.from_hex(MASTER_KEY_HEX))
        acquiring = Acquiring.from_settings(settings, engine, security, bytes(32))
        assert acquiring is not None and acquiring.sign_on_wait_ms == WAIT_MS
        started_s = time.monotonic()
        acquiring.start()
        try:
            waited_s = time.monotonic() - started_s  # at least: a loaded machine only makes it longer
            assert waited_s >= WAIT_MS / 1000, waited_s
            assert not acquiring.gateway.wait_signed_on(0)
        finally:
            acquiring.stop()
            engine.dispose()
