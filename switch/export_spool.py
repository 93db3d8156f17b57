"""An export's spool: its CSV chunks in an unnamed file in the data directory, read back in order."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from switch.config import setting_named
from switch.report_export import ExportTooLargeError

# Each chunk is stored after its length: the chunks come back as they were cut (between lines).
_LENGTH = struct.Struct(">Q")


class Spool:
    """Chunks written once, then read once; at most bytes_max bytes of chunks (lengths aside).

    The file has no name from the start (O_TMPFILE, or made and unlinked at once; 0600 either way),
    so its disk is given back when it is closed or the process ends, even killed: nothing is left
    in the data directory to clean up. It holds what the export sends the client and no more.
    """

    def __init__(self, directory: Path, bytes_max: int) -> None:
        assert bytes_max > 0, bytes_max
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory, prefix="export-spool-")  # noqa: SIM115  # closed by close()
        self._bytes_max = bytes_max
        self._bytes = 0

    def write_all(self, chunks: Iterable[bytes]) -> None:
        """The chunks, after those written before; ExportTooLargeError past bytes_max."""
        for chunk in chunks:
            self._bytes += len(chunk)
            if self._bytes > self._bytes_max:
                raise ExportTooLargeError(
                    f"the export is larger than {setting_named('export_spool_bytes_max')}, "
                    f"{self._bytes_max:,} bytes; export fewer days, or one merchant or terminal"
                )
            self._file.write(_LENGTH.pack(len(chunk)))
            self._file.write(chunk)

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
        self._file.close()
