"""Keys and PINs: the only place a clear PIN may exist (see docs/pin-security.md)."""

from switch.security._pin_block import PinBlockFormat
from switch.security.card_data import PanToken, luhn_valid, mask_pan, tokenize_pan
from switch.security.errors import KeyIntegrityError, PinBlockError, SecurityError
from switch.security.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey
from switch.security.module import IssuedTerminalKey, PinCheck, SecurityModule, pin_block_format

__all__ = [
    "IssuedTerminalKey",
    "KeyAlgorithm",
    "KeyIntegrityError",
    "KeyUsage",
    "MasterKey",
    "PanToken",
    "PinBlockError",
    "PinBlockFormat",
    "PinCheck",
    "SecurityError",
    "SecurityModule",
    "WrappedKey",
    "luhn_valid",
    "mask_pan",
    "pin_block_format",
    "tokenize_pan",
]
