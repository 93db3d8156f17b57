"""Keys at rest: each key wrapped by AES-256-GCM under the configured master key, bound to its use."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC

from switch.security._pin_block import triple_length
from switch.security.errors import KeyIntegrityError

MASTER_KEY_BYTES: Final = 32
GCM_NONCE_BYTES: Final = 12
GCM_TAG_BYTES: Final = 16
CHECK_VALUE_HEX_CHARS: Final = 6
WRAP_FORMAT_VERSION: Final = "v1"


class KeyAlgorithm(enum.Enum):
    tdes = "tdes"  # 16-byte double-length TDES: ISO 9564 format 0
    aes128 = "aes128"  # ISO 9564 format 4, AES key wrap for transport keys
    hmac_sha256 = "hmac-sha256"  # 32-byte HMAC key: the card hash key

    @property
    def key_bytes(self) -> int:
        return 32 if self is KeyAlgorithm.hmac_sha256 else 16


class KeyUsage(enum.Enum):
    terminal_pin = "terminal-pin"  # PIN blocks from one terminal
    zone_pin = "zone-pin"  # field 52 between switch and one acquirer
    terminal_transport = "terminal-transport"  # wraps a terminal PIN key for delivery
    pin_verification = "pin-verification"  # HMAC key of closed-loop PIN verification values
    pan_hash = "pan-hash"  # HMAC key of stored PAN hashes


# Keys only ever used as HMAC keys; the others encipher PIN blocks or keys, so AES or TDES only.
HMAC_KEY_USAGES: Final = (KeyUsage.pan_hash, KeyUsage.pin_verification)


class MasterKey:
    """The key-encrypting key from configuration; it never leaves this object, not even in repr."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise KeyIntegrityError(f"master key must be {MASTER_KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_hex(cls, text: str) -> MasterKey:
        try:
            return cls(bytes.fromhex(text))
        except ValueError:
            raise KeyIntegrityError("master key must be hex") from None

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    def seal(self, clear_key: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(GCM_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, clear_key, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        nonce, ciphertext = sealed[:GCM_NONCE_BYTES], sealed[GCM_NONCE_BYTES:]
        if len(nonce) < GCM_NONCE_BYTES or len(ciphertext) < GCM_TAG_BYTES:
            raise KeyIntegrityError("wrapped key is cut short")
        try:
            return self._aead.decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise KeyIntegrityError("wrapped key fails authentication") from None


def check_value(clear_key: bytes, algorithm: KeyAlgorithm) -> str:
    """Key check value (X9.24): TDES-encrypt zeros, AES-CMAC of zeros, or (HMAC keys, which X9.24
    does not cover) HMAC-SHA256 of 16 zeros; first 3 bytes, hex."""
    if algorithm is KeyAlgorithm.hmac_sha256:
        digest = hmac.new(clear_key, bytes(16), hashlib.sha256).digest()
    elif algorithm is KeyAlgorithm.tdes:
        encryptor = Cipher(TripleDES(triple_length(clear_key)), modes.ECB()).encryptor()
        digest = encryptor.update(bytes(8)) + encryptor.finalize()
    else:
        mac = CMAC(algorithms.AES(clear_key))
        mac.update(bytes(16))
        digest = mac.finalize()
    return digest.hex().upper()[:CHECK_VALUE_HEX_CHARS]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A key as stored: encrypted under the master key, bound to its id, usage and algorithm."""

    key_id: str
    usage: KeyUsage
    algorithm: KeyAlgorithm
    sealed: bytes
    check_value: str

    def associated_data(self) -> bytes:
        # Binding these into the GCM tag stops a stored key being swapped into another role.
        parts = (WRAP_FORMAT_VERSION, self.key_id, self.usage.value, self.algorithm.value)
        return "|".join(parts).encode()

    def to_text(self) -> str:
        """One storable line: v1:key_id:usage:algorithm:check_value:base64(sealed)."""
        sealed_text = base64.b64encode(self.sealed).decode()
        parts = (WRAP_FORMAT_VERSION, self.key_id, self.usage.value, self.algorithm.value)
        return ":".join((*parts, self.check_value, sealed_text))

    @classmethod
    def from_text(cls, text: str) -> WrappedKey:
        parts = text.split(":")
        if len(parts) != 6 or parts[0] != WRAP_FORMAT_VERSION:
            raise KeyIntegrityError("wrapped key text is not in the v1 format")
        _, key_id, usage, algorithm, kcv, sealed_text = parts
        try:
            return cls(
                key_id,
                KeyUsage(usage),
                KeyAlgorithm(algorithm),
                base64.b64decode(sealed_text, validate=True),
                kcv,
            )
        except ValueError:
            raise KeyIntegrityError("wrapped key text is malformed") from None


def wrap_key(
    master: MasterKey, clear_key: bytes, key_id: str, usage: KeyUsage, algorithm: KeyAlgorithm
) -> WrappedKey:
    if len(clear_key) != algorithm.key_bytes:
        raise KeyIntegrityError(f"{algorithm.value} key must be {algorithm.key_bytes} bytes")
    if ":" in key_id or "|" in key_id or not key_id:
        raise KeyIntegrityError("key id must be non-empty without ':' or '|'")
    if algorithm is KeyAlgorithm.hmac_sha256 and usage not in HMAC_KEY_USAGES:
        raise KeyIntegrityError(f"a {usage.value} key cannot be {algorithm.value}")
    kcv = check_value(clear_key, algorithm)
    unsealed = WrappedKey(key_id, usage, algorithm, b"", kcv)
    return WrappedKey(key_id, usage, algorithm, master.seal(clear_key, unsealed.associated_data()), kcv)


def unwrap_key(master: MasterKey, wrapped: WrappedKey, usage: KeyUsage) -> bytes:
    """The clear key, for use inside switch/security only; refuses a key made for another usage."""
    if wrapped.usage is not usage:
        raise KeyIntegrityError(f"key {wrapped.key_id} is not a {usage.value} key")
    clear_key = master.open(wrapped.sealed, wrapped.associated_data())
    if check_value(clear_key, wrapped.algorithm) != wrapped.check_value:
        raise KeyIntegrityError(f"key {wrapped.key_id} check value mismatch")
    return clear_key
