"""A commit whose answer is lost (the connection drops after PostgreSQL has committed) is in doubt,
like the journal process dying mid-batch. The journal reports it as a plain failure instead:
"database commit failed", which the card actor answers 96 with persisted=False and whose
reservation it releases (docs/design.md: "nothing was stored") although the money moved."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from actors.journal_writer import JournalWriter
from switch.store.engine import make_engine
from switch.store.journal import WriteResult
from tests.integration.journal_world import issue, make_world, redemption
from tests.pg import postgres_schema

PG_HOST, PG_PORT = "127.0.0.1", 5432
WITHIN_S = 60.0


class CommitReplyDropper:
    """A TCP proxy to PostgreSQL that, once armed, lets the next COMMIT through and drops the
    connection instead of passing the server's reply on: the commit lands, its answer is lost."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((PG_HOST, PG_PORT))
            commit_sent = threading.Event()
            threading.Thread(target=self._up, args=(client, server, commit_sent), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, commit_sent), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, commit_sent: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self.armed.is_set() and b"COMMIT\x00" in data:
                    self.armed.clear()
                    commit_sent.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()

    def _down(self, server: socket.socket, client: socket.socket, commit_sent: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if commit_sent.is_set():  # the server's reply to COMMIT: it has committed
                    self.dropped.set()
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.shutdown(socket.SHUT_RDWR)
            client.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_a_commit_whose_reply_is_lost_is_left_in_doubt_and_the_journal_is_lost(pg_url: str) -> None:
    # Before, it was answered "database commit failed" (96, nothing moved) although it had landed:
    # money moved on an answered decline. Now, as when the journal process dies, it is answered
    # nothing and the journal is lost (the switch exits and recovers from what is stored).
    engine = make_world(pg_url)
    proxy = CommitReplyDropper()
    proxied_url = pg_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}") + "&sslmode=disable"
    journal_engine = make_engine(proxied_url)
    lost: list[str] = []
    journal_lost = threading.Event()

    def on_lost(problem: str) -> None:
        lost.append(problem)
        journal_lost.set()

    writer = JournalWriter(journal_engine, batch_writes_max=8, queue_writes_max=8, on_lost=on_lost)
    try:
        issue(engine, "card_a", 1_000)
        writer.start()
        assert writer.write_and_wait(redemption("t0", "card_a", 100), 10).ok  # through the proxy
        proxy.armed.set()
        answers: list[WriteResult] = []
        assert writer.submit(redemption("t1", "card_a", 300), answers.append)
        assert journal_lost.wait(WITHIN_S)  # instead of waiting a 3 s answer timeout out
        assert proxy.dropped.is_set()
        assert lost == ["a commit failed while committing"]
        refused = writer.write_and_wait(redemption("t2", "card_a", 100), 3)
        assert not refused.ok and refused.problem.startswith("journal lost")
        writer.stop()  # its thread, the only one that answers writes, has ended
        assert answers == []  # t1 was never answered: neither stored nor refused
    finally:
        writer.stop()
        journal_engine.dispose()
        engine.dispose()
        proxy.close()
