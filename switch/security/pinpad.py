"""The terminal's side of the PIN scheme, for the terminal and acquirer simulators and tests only."""

from __future__ import annotations

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from switch.security import _pin_block
from switch.security._pin_block import PinBlockFormat
from switch.security.errors import KeyIntegrityError


def unwrap_delivered_pin_key(transport_key: bytes, delivery: bytes) -> bytes:
    """What a terminal does at activation: unwrap its PIN key with its transport key."""
    try:
        return aes_key_unwrap(transport_key, delivery)
    except InvalidUnwrap:
        raise KeyIntegrityError("delivered PIN key fails to unwrap") from None


def encipher_pin_block(pin: str, pan: str, pin_key: bytes, block_format: PinBlockFormat) -> bytes:
    """What a PIN pad does: an ISO 9564 PIN block of `pin` bound to `pan` under `pin_key`."""
    return _pin_block.encipher(pin, pan, pin_key, block_format)
