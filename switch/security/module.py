"""SecurityModule: PIN translation and verification, key generation and delivery; clear PINs stay inside."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from switch.security import _pin_block
from switch.security._pin_block import PinBlockFormat
from switch.security.card_data import PanToken, tokenize_pan
from switch.security.errors import KeyIntegrityError, PinBlockError
from switch.security.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey, unwrap_key, wrap_key

PVV_DOMAIN: Final = b"txswitch-pvv-v1"
HMAC_KEY_BYTES: Final = 32

FORMAT_BY_ALGORITHM: Final = {
    KeyAlgorithm.tdes: PinBlockFormat.ISO_0,
    KeyAlgorithm.aes128: PinBlockFormat.ISO_4,
}
PIN_BLOCK_KEY_USAGES: Final = (KeyUsage.terminal_pin, KeyUsage.zone_pin)


class PinCheck(enum.Enum):
    """The outcome of a PIN verification: a value, not an exception."""

    correct = "correct"
    incorrect = "incorrect"
    malformed_block = "malformed_block"  # wrong key, wrong PAN or a corrupted block


@dataclass(frozen=True, slots=True)
class IssuedTerminalKey:
    """A new terminal PIN key: `stored` for the database, `delivery` for the terminal."""

    stored: WrappedKey
    delivery: bytes  # RFC 3394 AES key wrap under the terminal transport key
    check_value: str


def pin_block_format(key: WrappedKey) -> PinBlockFormat:
    """Format 0 under TDES keys, format 4 under AES keys."""
    return FORMAT_BY_ALGORITHM[key.algorithm]


def _pvv(pvv_key: bytes, card_id: str, pin: str) -> str:
    message = b"\x00".join((PVV_DOMAIN, card_id.encode(), pin.encode()))
    return hmac.new(pvv_key, message, hashlib.sha256).hexdigest()


class SecurityModule:
    """Holds the master key; every operation unwraps the keys it needs and forgets them after."""

    def __init__(self, master_key: MasterKey) -> None:
        self._master = master_key

    def __repr__(self) -> str:
        return "SecurityModule(<master key hidden>)"

    # --- keys ---------------------------------------------------------------------------------

    def generate_key(self, key_id: str, usage: KeyUsage, algorithm: KeyAlgorithm) -> WrappedKey:
        clear_key = secrets.token_bytes(algorithm.key_bytes)
        return wrap_key(self._master, clear_key, key_id, usage, algorithm)

    def import_key(
        self, clear_key: bytes, key_id: str, usage: KeyUsage, algorithm: KeyAlgorithm
    ) -> WrappedKey:
        """Wrap a key agreed outside (an acquirer zone key from a key ceremony, a test key)."""
        return wrap_key(self._master, clear_key, key_id, usage, algorithm)

    def issue_terminal_pin_key(
        self, key_id: str, transport_key: WrappedKey, algorithm: KeyAlgorithm = KeyAlgorithm.aes128
    ) -> IssuedTerminalKey:
        """At activation: a fresh PIN key, stored under the master key, delivered under the TTK."""
        transport = unwrap_key(self._master, transport_key, KeyUsage.terminal_transport)
        if transport_key.algorithm is not KeyAlgorithm.aes128:
            raise KeyIntegrityError("terminal transport key must be AES")
        clear_key = secrets.token_bytes(algorithm.key_bytes)
        stored = wrap_key(self._master, clear_key, key_id, KeyUsage.terminal_pin, algorithm)
        delivery = aes_key_wrap(transport, clear_key)
        return IssuedTerminalKey(stored=stored, delivery=delivery, check_value=stored.check_value)

    # --- PIN ----------------------------------------------------------------------------------

    def _clear_pin(self, pin_block: bytes, pan: str, key: WrappedKey) -> str:
        if key.usage not in PIN_BLOCK_KEY_USAGES:
            raise KeyIntegrityError(f"key {key.key_id} is not a PIN block key")
        clear_key = unwrap_key(self._master, key, key.usage)
        return _pin_block.decipher(pin_block, pan, clear_key, pin_block_format(key))

    def translate_pin_block(
        self, pin_block: bytes, pan: str, source_key: WrappedKey, zone_key: WrappedKey
    ) -> bytes:
        """Re-encipher a PIN block from a terminal (or zone) key to an acquirer zone key.

        Raises PinBlockError when the block does not decode; the clear PIN never leaves.
        """
        if zone_key.usage is not KeyUsage.zone_pin:
            raise KeyIntegrityError(f"key {zone_key.key_id} is not a zone PIN key")
        pin = self._clear_pin(pin_block, pan, source_key)
        clear_zone_key = unwrap_key(self._master, zone_key, KeyUsage.zone_pin)
        return _pin_block.encipher(pin, pan, clear_zone_key, pin_block_format(zone_key))

    def verify_pin(
        self,
        pin_block: bytes,
        pan: str,
        pin_key: WrappedKey,
        pvv_key: WrappedKey,
        card_id: str,
        stored_pvv: str,
    ) -> PinCheck:
        """Compare the PIN in a block with a stored verification value, in constant time."""
        try:
            pin = self._clear_pin(pin_block, pan, pin_key)
        except PinBlockError:
            return PinCheck.malformed_block
        candidate = self._pvv(pvv_key, card_id, pin)
        if hmac.compare_digest(candidate.encode(), stored_pvv.encode()):
            return PinCheck.correct
        return PinCheck.incorrect

    def pvv_from_pin_block(
        self, pin_block: bytes, pan: str, pin_key: WrappedKey, pvv_key: WrappedKey, card_id: str
    ) -> str:
        """The verification value to store when a cardholder sets a PIN through a PIN pad."""
        return self._pvv(pvv_key, card_id, self._clear_pin(pin_block, pan, pin_key))

    def pvv_for_issuance(self, pvv_key: WrappedKey, card_id: str, pin: str) -> str:
        """The verification value of a PIN chosen at card issuance (demo data, card printing)."""
        _pin_block.format0_pin_field(pin)  # the same PIN rules as a PIN block
        return self._pvv(pvv_key, card_id, pin)

    def _pvv(self, pvv_key: WrappedKey, card_id: str, pin: str) -> str:
        return _pvv(unwrap_key(self._master, pvv_key, KeyUsage.pin_verification), card_id, pin)

    # --- PAN ----------------------------------------------------------------------------------

    def open_pan_hash_key(self, pan_hash_key: WrappedKey) -> bytes:
        """The clear card hash key, for the switch's card lookups, which hash every card number they
        see (an HSM would hash instead); KeyIntegrityError if it is not a pan-hash key sealed under
        this master key."""
        return unwrap_key(self._master, pan_hash_key, KeyUsage.pan_hash)

    def tokenize_pan(self, pan: str, pan_hash_key: WrappedKey) -> PanToken:
        return tokenize_pan(pan, unwrap_key(self._master, pan_hash_key, KeyUsage.pan_hash))
