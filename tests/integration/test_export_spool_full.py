"""An export whose spool finds no room in the data directory is refused by name, RESOURCE_EXHAUSTED,
and counted as the other refusals are; it was answered INTERNAL with a logged reference, as a fault.

The disk is made full for real, for the switch alone: `txswitch serve` runs as a process of its own
whose files may grow to FILE_BYTES_MAX at most (RLIMIT_FSIZE), with SIGXFSZ ignored, so a spool
write past it fails with EFBIG as a write on a full disk fails with ENOSPC. Its database is a
PostgreSQL schema: no file of the switch's own grows but the spool (and its small log).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from switch.cli import export_transactions
from tests.integration.test_export_snapshot import add_rows
from tests.integration.test_journal_lost import redeem, terminal
from tests.integration.test_portal import days
from tests.pg import postgres_schema
from tests.serve import serve_process

FILE_BYTES_MAX = 1024 * 1024
BULK_ROWS = 10_000  # some 3 MB of CSV: far past FILE_BYTES_MAX
NO_ROOM = "no room in the data directory for the export's spool"


def files_limited() -> None:
    """In the switch's process, before it starts: its files stop at FILE_BYTES_MAX, and a write past
    it fails (EFBIG) rather than killing the process (SIGXFSZ, ignored here and after exec)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES_MAX, hard))


def requests_counted(metrics_url: str, code: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"rpc": "ExportTransactions", "code": code}
            if sample.name == "txswitch_requests_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def spools_open(pid: int, data_dir: Path) -> list[str]:
    """The process's open files in the data directory that have no name left: export spools."""
    found = []
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(data_dir.resolve()) + os.sep) and target.endswith(" (deleted)"):
            found.append(target)
    return found


def test_an_export_whose_spool_finds_the_disk_full_is_refused_by_name(tmp_path: Path) -> None:
    quiet = ["--grpc-port", "0", "--metrics-port", "0", "--console-port", "-1"]
    with postgres_schema() as database_url:
        args = ["--demo", "--data-dir", str(tmp_path), "--database-url", database_url, *quiet]
        with serve_process(args, tmp_path / "serve.log", preexec_fn=files_limited) as (process, address):
            channels: list[grpc.Channel] = []
            try:
                till, till_metadata = terminal(address, channels)
                card = json.loads((tmp_path / "demo_cards.json").read_text())[0]["card_number"]
                assert redeem(till, till_metadata, card, "spool-full-1").response_code == "00"
                engine = create_engine(database_url)
                try:
                    add_rows(engine, BULK_ROWS)
                finally:
                    engine.dispose()
                backoffice = bo_grpc.BackofficeStub(channels[0])
                admin = (("authorization", f"Bearer {(tmp_path / 'admin.token').read_text().strip()}"),)
                out = io.StringIO()
                request = bo.TransactionReportRequest(page_size=500, **days())
                with pytest.raises(grpc.RpcError) as refused:
                    export_transactions(backoffice, request, admin, out)
                code, details = refused.value.code(), refused.value.details() or ""
                assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, NO_ROOM), (code, details)
                assert out.getvalue() == "", "a refused export writes nothing, not even its header"
                metrics_url = (tmp_path / "serve.out").read_text().split("metrics: ", 1)[1].split()[0]
                assert requests_counted(metrics_url, "resource_exhausted") == 1
                assert requests_counted(metrics_url, "internal") == 0
                assert spools_open(process.pid, tmp_path) == [], "a refused export kept its spool"
                # Its slot was given back, and a small export still goes: the switch goes on.
                small = bo.TransactionReportRequest(page_size=500, merchant_id="mer_nope", **days())
                with pytest.raises(grpc.RpcError) as unknown:
                    export_transactions(backoffice, small, admin, io.StringIO())
                assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
            finally:
                for channel in channels:
                    channel.close()
    log = (tmp_path / "serve.log").read_text()
    assert "bulk-0" not in log, "the refusal's log line quotes a row"
