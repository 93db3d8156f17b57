"""Small real PNG images for the receipt-logo tests."""

from __future__ import annotations

import struct
import zlib


def tiny_png(width_px: int, height_px: int) -> bytes:
    """A valid greyscale PNG of this size, every pixel mid-grey."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width_px, height_px, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width_px for _ in range(height_px))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
