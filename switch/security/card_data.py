"""Card-number handling that never keeps a clear PAN: masking, Luhn check, keyed PAN token."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

PAN_DIGITS_MIN = 12
PAN_DIGITS_MAX = 19
BIN_DIGITS = 6
LAST_DIGITS = 4
HIDDEN_DIGITS_MIN = 5  # a masked number keeps at least this many digits hidden
# A PAN hash key shorter than this gives an offline brute force of the hash too little work.
PAN_HASH_KEY_BYTES_MIN = 16


def is_pan_shaped(pan: str) -> bool:
    """True when `pan` is 12 to 19 ASCII digits (the Luhn check is separate)."""
    return pan.isascii() and pan.isdigit() and PAN_DIGITS_MIN <= len(pan) <= PAN_DIGITS_MAX


def luhn_valid(number: str) -> bool:
    """The ISO/IEC 7812 check digit of `number` is right."""
    if not (number.isascii() and number.isdigit()) or len(number) < 2:
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def mask_pan(pan: str) -> str:
    """first6****last4, the only form of a PAN allowed in logs, errors and metrics; for a number too
    short to keep HIDDEN_DIGITS_MIN hidden that way (a 10-digit field 2 showed every digit), the
    last 4 only, and below that nothing."""
    if len(pan) - BIN_DIGITS - LAST_DIGITS >= HIDDEN_DIGITS_MIN:
        return f"{pan[:BIN_DIGITS]}****{pan[-LAST_DIGITS:]}"
    if len(pan) - LAST_DIGITS >= HIDDEN_DIGITS_MIN:
        return "*" * (len(pan) - LAST_DIGITS) + pan[-LAST_DIGITS:]
    return "*" * len(pan)


@dataclass(frozen=True, slots=True)
class PanToken:
    """What the database may hold about a PAN: a keyed hash plus BIN and last 4."""

    pan_hash_hex: str
    bin6: str
    last4: str

    @property
    def masked(self) -> str:
        return f"{self.bin6}****{self.last4}"


def pan_hash(pan: str, pan_hash_key: bytes) -> str:
    """HMAC-SHA256 of the PAN under a secret key: equal PANs match, no rainbow table applies."""
    assert len(pan_hash_key) >= PAN_HASH_KEY_BYTES_MIN, "PAN hash key too short"
    return hmac.new(pan_hash_key, pan.encode("ascii"), hashlib.sha256).hexdigest()


def tokenize_pan(pan: str, pan_hash_key: bytes) -> PanToken:
    """The storable token of a PAN; raises ValueError (without the PAN) if it is not PAN-shaped."""
    if not is_pan_shaped(pan):
        raise ValueError(f"PAN must be {PAN_DIGITS_MIN}-{PAN_DIGITS_MAX} digits")
    return PanToken(
        pan_hash_hex=pan_hash(pan, pan_hash_key),
        bin6=pan[:BIN_DIGITS],
        last4=pan[-LAST_DIGITS:],
    )
