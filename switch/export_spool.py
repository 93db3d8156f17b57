"""An export's spool: its CSV chunks in an unnamed file in the data directory, read back in order."""

from __future__ import annotations

import errno
import logging
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from switch.config import setting_named
from switch.report_export import ExportSpoolFullError, ExportTooLargeError

log = logging.getLogger(__name__)

# Each chunk is stored after its length: the chunks come back as they were cut (between lines).
_LENGTH = struct.Struct(">Q")

# A write that fails for want of room, not for a fault: the disk full (ENOSPC), the user's quota
# full (EDQUOT), the file past the largest the process or file system allows (EFBIG: RLIMIT_FSIZE,
# which the tests use as a full disk of the switch's own). The export is refused by name for them.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NO_ROOM = "no room in the data directory for the export's spool"
DISK_FREE_SETTING = "export_disk_free_min_bytes"


class Spool:
    """Chunks written once, then read once; at most bytes_max bytes of chunks (lengths aside).

    The file has no name from the start (O_TMPFILE, or made and unlinked at once; 0600 either way),
    so its disk is given back when it is closed or the process ends, even killed: nothing is left
    in the data directory to clean up. It holds what the export sends the client and no more.
    """

    def __init__(self, directory: Path, bytes_max: int, disk_free_min_bytes: int = 0) -> None:
        assert bytes_max > 0, bytes_max
        assert disk_free_min_bytes >= 0, disk_free_min_bytes
        with _room_needed():  # no inode left: the file cannot be made
            self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory, prefix="export-spool-")  # noqa: SIM115  # closed by close()
        self._directory = directory
        self._bytes_max = bytes_max
        self._disk_free_min_bytes = disk_free_min_bytes
        self._bytes = 0

    def write_all(self, chunks: Iterable[bytes]) -> None:
        """The chunks, after those written before; ExportTooLargeError past bytes_max,
        ExportSpoolFullError when the disk has no room for them, or would keep less than
        disk_free_min_bytes free after them. Flushed before it returns, so a full disk is found
        while the export can still be refused, not as its chunks are read."""
        chunks = list(chunks)  # one page's: at most a page's rows
        self._keep_disk_free(sum(_LENGTH.size + len(chunk) for chunk in chunks))
        with _room_needed():
            for chunk in chunks:
                self._bytes += len(chunk)
                if self._bytes > self._bytes_max:
                    raise ExportTooLargeError(
                        f"the export is larger than {setting_named('export_spool_bytes_max')}, "
                        f"{self._bytes_max:,} bytes; export fewer days, or one merchant or terminal"
                    )
                self._file.write(_LENGTH.pack(len(chunk)))
                self._file.write(chunk)
            self._file.flush()

    def _keep_disk_free(self, bytes_to_write: int) -> None:
        """The spool shares the database's disk: an export may not take the room the ledger's
        commits need (a full disk turns every payment into 96). One statvfs a page."""
        if not self._disk_free_min_bytes:
            return
        free_bytes = shutil.disk_usage(self._directory).free
        if free_bytes - bytes_to_write < self._disk_free_min_bytes:
            log.warning("export refused: %s (%s keeps room for the ledger)", NO_ROOM, DISK_FREE_SETTING)
            raise ExportSpoolFullError(
                f"{NO_ROOM}: {setting_named(DISK_FREE_SETTING)} keeps "
                f"{self._disk_free_min_bytes:,} bytes free for the ledger"
            )

    def chunks(self) -> Iterator[bytes]:
        """The chunks written, in order (read from the start)."""
        self._file.flush()
        self._file.seek(0)
        while length_bytes := self._file.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(length_bytes)
            chunk = self._file.read(length)
            assert len(chunk) == length, f"spool cut short: {len(chunk)} of {length} bytes"
            yield chunk

    def close(self) -> None:
        """Closes the file, whatever it holds: bytes still buffered after a write that found no room
        make its close fail again, but no one reads them and the file is closed all the same."""
        with suppress(OSError):
            self._file.close()


@contextmanager
def _room_needed() -> Iterator[None]:
    """ExportSpoolFullError for a write that found no room (NO_ROOM_ERRNOS), logged by its errno
    alone (an OSError of a write names no row; its text is not passed on all the same); any other
    OSError is a fault and goes on as it is."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_ROOM_ERRNOS:
            raise
        log.warning("export refused: %s (%s)", NO_ROOM, errno.errorcode.get(error.errno, error.errno))
        raise ExportSpoolFullError(NO_ROOM) from None
