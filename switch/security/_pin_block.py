"""ISO 9564-1 PIN block formats 0 (TDES) and 4 (AES): the only code that sees a clear PIN."""

from __future__ import annotations

import enum
import secrets
from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from switch.security.errors import PinBlockError

PIN_DIGITS_MIN: Final = 4
PIN_DIGITS_MAX: Final = 12
TDES_KEY_BYTES: Final = (16, 24)
AES_KEY_BYTES: Final = (16, 24, 32)
FORMAT0_BLOCK_BYTES: Final = 8
FORMAT4_BLOCK_BYTES: Final = 16


class PinBlockFormat(enum.IntEnum):
    ISO_0 = 0  # TDES, PIN XOR PAN, 8 bytes; legacy terminals and acquirers
    ISO_4 = 4  # AES, PIN and PAN fields enciphered twice, 16 bytes


def _check_pin(pin: str) -> None:
    if not (pin.isascii() and pin.isdigit() and PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX):
        raise PinBlockError(f"PIN must be {PIN_DIGITS_MIN}-{PIN_DIGITS_MAX} digits")


def _check_pan(pan: str) -> None:
    if not (pan.isascii() and pan.isdigit() and 1 <= len(pan) <= 19):
        raise PinBlockError("PAN must be 1-19 digits")


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def _pin_from_field(nibbles: str, control: str, fill: str) -> str:
    """Parse the PIN out of the hex of a format 0 or 4 PIN field (first 16 nibbles)."""
    if nibbles[0] != control:
        raise PinBlockError("PIN block control field does not match its format")
    length = int(nibbles[1], 16)
    if not PIN_DIGITS_MIN <= length <= PIN_DIGITS_MAX:
        raise PinBlockError("PIN block holds an impossible PIN length")
    pin = nibbles[2 : 2 + length]
    if not pin.isdigit() or nibbles[2 + length : 16] != fill * (14 - length):
        raise PinBlockError("PIN block digits or fill are invalid")
    return pin


# --- format 0 ---------------------------------------------------------------------------------


def format0_pin_field(pin: str) -> bytes:
    _check_pin(pin)
    return bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))


def format0_pan_field(pan: str) -> bytes:
    """0000 + the 12 rightmost PAN digits without the check digit."""
    _check_pan(pan)
    return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))


def triple_length(key: bytes) -> bytes:
    """K1 K2 K1: the same cipher as a double-length key, in the form cryptography keeps."""
    return key + key[:8] if len(key) == 16 else key


def _tdes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) not in TDES_KEY_BYTES:
        raise PinBlockError("format 0 needs a double- or triple-length TDES key")
    return Cipher(TripleDES(triple_length(key)), modes.ECB())


def encipher_format0(pin: str, pan: str, key: bytes) -> bytes:
    clear_block = _xor(format0_pin_field(pin), format0_pan_field(pan))
    encryptor = _tdes(key).encryptor()
    return encryptor.update(clear_block) + encryptor.finalize()


def decipher_format0(pin_block: bytes, pan: str, key: bytes) -> str:
    if len(pin_block) != FORMAT0_BLOCK_BYTES:
        raise PinBlockError("format 0 PIN block must be 8 bytes")
    decryptor = _tdes(key).decryptor()
    clear_block = decryptor.update(pin_block) + decryptor.finalize()
    pin_field = _xor(clear_block, format0_pan_field(pan))
    return _pin_from_field(pin_field.hex().upper(), "0", "F")


# --- format 4 ---------------------------------------------------------------------------------


def format4_pin_field(pin: str, random_fill: bytes | None = None) -> bytes:
    """4, PIN length, PIN digits, A fill to 8 bytes, then 8 random bytes."""
    _check_pin(pin)
    fill = secrets.token_bytes(8) if random_fill is None else random_fill
    assert len(fill) == 8, "format 4 random fill is 8 bytes"
    return bytes.fromhex(f"4{len(pin):X}{pin}".ljust(16, "A")) + fill


def format4_pan_field(pan: str) -> bytes:
    """M (PAN length - 12), the PAN (left-padded to 12 digits), 0 fill to 16 bytes."""
    _check_pan(pan)
    extra_digits = max(len(pan) - 12, 0)
    return bytes.fromhex(f"{extra_digits}{pan.rjust(12, '0')}".ljust(32, "0"))


def _aes(key: bytes) -> Cipher[modes.ECB]:
    if len(key) not in AES_KEY_BYTES:
        raise PinBlockError("format 4 needs an AES key")
    return Cipher(algorithms.AES(key), modes.ECB())


def encipher_format4(pin: str, pan: str, key: bytes, random_fill: bytes | None = None) -> bytes:
    cipher = _aes(key)
    encryptor = cipher.encryptor()
    intermediate = encryptor.update(format4_pin_field(pin, random_fill))
    return encryptor.update(_xor(intermediate, format4_pan_field(pan))) + encryptor.finalize()


def decipher_format4(pin_block: bytes, pan: str, key: bytes) -> str:
    if len(pin_block) != FORMAT4_BLOCK_BYTES:
        raise PinBlockError("format 4 PIN block must be 16 bytes")
    decryptor = _aes(key).decryptor()
    intermediate = _xor(decryptor.update(pin_block), format4_pan_field(pan))
    pin_field = decryptor.update(intermediate) + decryptor.finalize()
    return _pin_from_field(pin_field[:8].hex().upper(), "4", "A")


def encipher(pin: str, pan: str, key: bytes, block_format: PinBlockFormat) -> bytes:
    if block_format is PinBlockFormat.ISO_0:
        return encipher_format0(pin, pan, key)
    return encipher_format4(pin, pan, key)


def decipher(pin_block: bytes, pan: str, key: bytes, block_format: PinBlockFormat) -> str:
    if block_format is PinBlockFormat.ISO_0:
        return decipher_format0(pin_block, pan, key)
    return decipher_format4(pin_block, pan, key)
