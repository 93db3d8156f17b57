"""An export read from one snapshot used to stream from it: on SQLite that read transaction kept the
WAL from being checkpointed past it for as long as the client took to read (up to 15 minutes), so
under load the WAL grew meanwhile and every reader slowed down. The export is now read into a spool
(an unnamed file in the data directory) as fast as the database gives it, the read transaction
ends, and the client is fed from the spool."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from switch.cli import export_transactions
from tests.integration.harness import World, start_world, world_fixture
from tests.integration.test_export_snapshot import (
    STALL_ROWS,
    UNREADABLE_RESULT,
    _slot_free,
    add_rows,
    exported_ids,
    small_window_backoffice,
    soon,
)
from tests.integration.test_portal import days

if TYPE_CHECKING:  # grpc-stubs name the type a server stream's call has; grpc itself does not
    Export = grpc.CallIterator[bo.CsvChunk]

BULK_ROWS = 60_000  # some 10 s to spool on PostgreSQL here


@pytest.fixture(params=["sqlite"])
def sqlite_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1)


@pytest.fixture(params=["sqlite", "postgres"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, exports_duration_max_s=60.0)


def stalled_export(world: World, backoffice: bo_grpc.BackofficeStub) -> Export:
    """An export whose client (of a small window, with STALL_ROWS) has read its first chunk and
    reads no further."""
    request = bo.TransactionExportRequest(report=bo.TransactionReportRequest(page_size=500, **days()))
    call = backoffice.ExportTransactions(request, metadata=world.admin_metadata, timeout=60)
    assert next(iter(call)).csv.startswith(b"time,")
    return call


def wal_frames_left(world: World) -> tuple[int, int]:
    """A passive checkpoint's (frames in the WAL, frames it could not checkpoint)."""
    path = world.server.core.store.engine.url.database
    assert path, "an SQLite world's database is a file"
    with sqlite3.connect(path) as checkpointer:
        busy, frames, done = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0, "a passive checkpoint never waits for a lock"
    return frames, frames - done


def test_the_wal_is_checkpointed_while_an_export_client_has_not_finished_reading(sqlite_world: World) -> None:
    world = sqlite_world
    terminal, card = world.terminals[0], world.issue(50_000)
    assert terminal.redeem(card, 100).response_code == "00"
    add_rows(world.server.core.store.engine, STALL_ROWS)
    with small_window_backoffice(world) as backoffice:
        call = stalled_export(world, backoffice)
        try:
            for _ in range(20):  # writes go on while the export's client sits on its first chunk
                assert terminal.redeem(card, 100).response_code == "00"
            frames, left = wal_frames_left(world)
            assert frames > 0, "the writes went to the WAL"
            assert left == 0, f"{left} of the WAL's {frames} frames could not be checkpointed past the export"
            assert spools_open(world), "the export ended before the checkpoint: its client read it all"
        finally:
            cancel(call)


def spools_open(world: World) -> list[Path]:
    """This process's open files in the data directory that have no name left: export spools."""
    data_dir = str(world.server.settings.data_dir.resolve())
    found = []
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(data_dir + os.sep) and target.endswith(" (deleted)"):
            found.append(descriptor)
    return found


def read_to_the_end(call: Export) -> None:
    assert sum(1 for _ in call) > 0


def cancel(call: Export) -> None:
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave it untyped


ENDINGS = {"read to the end": read_to_the_end, "cancelled by the client": cancel}


@pytest.mark.parametrize("ending", ENDINGS)
def test_an_exports_spool_is_the_owners_alone_and_gone_when_the_stream_ends(
    any_world: World, ending: str
) -> None:
    world = any_world
    assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"
    add_rows(world.server.core.store.engine, STALL_ROWS)
    with small_window_backoffice(world) as backoffice:
        call = stalled_export(world, backoffice)
        try:
            (spool,) = spools_open(world)
            assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600, "only the switch's user reads the spool"
        finally:
            ENDINGS[ending](call)
    assert soon(lambda: not spools_open(world)), f"an export {ending} left its spool open"


def test_an_export_that_fails_leaves_no_spool_and_tells_no_row(any_world: World) -> None:
    world = any_world
    assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"
    add_rows(world.server.core.store.engine, 2_000)
    add_rows(
        world.server.core.store.engine, 1, result=UNREADABLE_RESULT, prefix="unreadable"
    )  # a row the CSV cannot be written for, on a late page
    request = bo.TransactionReportRequest(page_size=500, **days())
    with pytest.raises(grpc.RpcError) as failed:
        export_transactions(world.backoffice, request, world.admin_metadata, io.StringIO())
    assert failed.value.code() == grpc.StatusCode.INTERNAL, failed.value.details()
    assert UNREADABLE_RESULT not in (failed.value.details() or "")
    assert soon(lambda: not spools_open(world)), "a failed export left its spool open"


SPOOL_BYTES_MAX = 20_000  # some 70 rows


@pytest.fixture(params=["sqlite"])
def small_spool_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, export_spool_bytes_max=SPOOL_BYTES_MAX)


SPOOL_LIMIT_CASES = [  # (rows besides the first, refused)
    (0, False),
    (20, False),
    (200, True),
    (2_000, True),
]


@pytest.mark.parametrize(("rows", "refused"), SPOOL_LIMIT_CASES)
def test_an_export_larger_than_its_spool_may_be_is_refused_by_name(
    small_spool_world: World, rows: int, refused: bool
) -> None:
    world = small_spool_world
    assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"
    if rows:
        add_rows(world.server.core.store.engine, rows)
    out = io.StringIO()
    request = bo.TransactionReportRequest(page_size=50, **days())
    if not refused:
        export_transactions(world.backoffice, request, world.admin_metadata, out)
        assert len(exported_ids(out.getvalue())) == 1 + rows
        return
    with pytest.raises(grpc.RpcError) as refusal:
        export_transactions(world.backoffice, request, world.admin_metadata, out)
    assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.value.details()
    details = refusal.value.details() or ""
    assert "export_spool_bytes_max" in details and f"{SPOOL_BYTES_MAX:,} bytes" in details, details
    assert out.getvalue() == "", "a refused export writes nothing, not even its header"
    assert not spools_open(world)
    assert _slot_free(world), "a refused export kept its slot"


@pytest.fixture(params=["postgres"])
def one_export_postgres_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, terminals=1, exports_concurrent_max=1)


SPOOLING_CANCELLED_AFTER_S = 1.0  # 60,000 rows take some 10 s to spool on PostgreSQL here
SLOT_BACK_WITHIN_S = 4.0


def test_an_export_cancelled_while_it_is_spooled_stops_spooling(one_export_postgres_world: World) -> None:
    """The spooling step ran to its end after its call had ended (cancelled, or past its duration),
    holding the export's slot, connection and snapshot for nothing."""
    world = one_export_postgres_world
    assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"
    add_rows(world.server.core.store.engine, BULK_ROWS)
    request = bo.TransactionExportRequest(report=bo.TransactionReportRequest(page_size=500, **days()))
    call = world.backoffice.ExportTransactions(request, metadata=world.admin_metadata, timeout=60)
    time.sleep(SPOOLING_CANCELLED_AFTER_S)
    assert spools_open(world), "the export is being spooled"
    cancel(call)
    cancelled = time.monotonic()
    while not _slot_free(world) and time.monotonic() - cancelled < SLOT_BACK_WITHIN_S:
        time.sleep(0.05)
    assert _slot_free(world), f"the export kept its slot {SLOT_BACK_WITHIN_S:g} s after its client went"
    assert soon(lambda: not spools_open(world)), "the cancelled export left its spool open"


# (the reserve, as bytes more than the disk has free now, or a fixed one; refused). The spool
# shares the database's disk: an export may not take the room the ledger's commits need.
DISK_RESERVE_CASES = [
    ("none", 0, False),
    ("one byte", 1, False),
    ("all that is free, and a gigabyte more", -(2**30), True),
]


@pytest.mark.parametrize(
    ("reserve", "refused"), [c[1:] for c in DISK_RESERVE_CASES], ids=[c[0] for c in DISK_RESERVE_CASES]
)
def test_an_export_that_would_leave_the_disk_below_its_reserve_is_refused_by_name(
    tmp_path: Path, reserve: int, refused: bool
) -> None:
    if reserve < 0:
        reserve = shutil.disk_usage(tmp_path).free - reserve
    world = start_world(tmp_path, "", 1, export_disk_free_min_bytes=reserve)
    try:
        assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"
        out = io.StringIO()
        report = bo.TransactionReportRequest(page_size=50, **days())
        if not refused:
            export_transactions(world.backoffice, report, world.admin_metadata, out)
            assert len(exported_ids(out.getvalue())) == 1
            return
        with pytest.raises(grpc.RpcError) as refusal:
            export_transactions(world.backoffice, report, world.admin_metadata, out)
        assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal.value.details()
        details = refusal.value.details() or ""
        assert "export_disk_free_min_bytes" in details and f"{reserve:,} bytes" in details, details
        assert out.getvalue() == ""
        assert not spools_open(world)
        assert _slot_free(world), "a refused export kept its slot"
        assert world.terminals[0].redeem(world.issue(5_000), 100).response_code == "00"  # payments go on
    finally:
        world.channel.close()
        world.server.stop()
