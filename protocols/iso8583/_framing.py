"""The 2-byte big-endian length header around each ISO 8583 message, sans-I/O plus a trio reader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import trio

from protocols.iso8583._codec import MESSAGE_BYTES_MAX, Iso8583Error, encode_message

HEADER_BYTES: Final = 2
RECEIVE_CHUNK_BYTES: Final = 4096


class FrameError(Iso8583Error):
    """The byte stream broke framing: a zero or oversized length, or the peer left mid-frame."""


def frame(body: bytes) -> bytes:
    """Prefix `body` with its length as 2 big-endian bytes."""
    if not 0 < len(body) <= MESSAGE_BYTES_MAX:
        raise FrameError(f"frame body is {len(body)} bytes, allowed 1..{MESSAGE_BYTES_MAX}")
    return len(body).to_bytes(HEADER_BYTES, "big") + body


def encode_frame(message: Mapping[str, str]) -> bytes:
    """Encode a message and frame it, ready for the wire."""
    return frame(encode_message(message))


class FrameBuffer:
    """Collects received bytes and hands out whole frame bodies; knows nothing of sockets."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._pending += data
        # Bounds memory: at most one maximal frame plus one receive chunk is ever held.
        if len(self._pending) > HEADER_BYTES + MESSAGE_BYTES_MAX + RECEIVE_CHUNK_BYTES:
            self._check_header()

    def _check_header(self) -> int | None:
        if len(self._pending) < HEADER_BYTES:
            return None
        length = int.from_bytes(self._pending[:HEADER_BYTES], "big")
        if not 0 < length <= MESSAGE_BYTES_MAX:
            raise FrameError(f"frame length {length} outside 1..{MESSAGE_BYTES_MAX}")
        return length

    def next_frame(self) -> bytes | None:
        """The next whole frame body, or None until more bytes arrive."""
        length = self._check_header()
        if length is None or len(self._pending) < HEADER_BYTES + length:
            return None
        body = bytes(self._pending[HEADER_BYTES : HEADER_BYTES + length])
        del self._pending[: HEADER_BYTES + length]
        return body

    @property
    def buffered_bytes(self) -> int:
        return len(self._pending)


async def receive_frame(stream: trio.abc.ReceiveStream, buffer: FrameBuffer) -> bytes | None:
    """The next frame body from `stream`; None at a clean end of stream between frames."""
    while True:
        body = buffer.next_frame()
        if body is not None:
            return body
        data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
        if not data:
            if buffer.buffered_bytes:
                raise FrameError("stream ended inside a frame")
            return None
        buffer.feed(data)
