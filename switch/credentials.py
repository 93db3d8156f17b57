"""Secrets the switch checks but never keeps in the clear: passwords, employee PINs, terminal
credentials and card numbers (kept only as keyed hashes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PASSWORD_SCRYPT_N = 2**14
EMPLOYEE_PIN_ITERATIONS = 20_000
CREDENTIAL_SECRET_BYTES = 24
# Keys whose HMAC starting states card_hash keeps: one card hash key per switch, a few in tests.
CARD_HASH_KEYS_KEPT_MAX = 8


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=PASSWORD_SCRYPT_N, r=8, p=1)
    return f"scrypt${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    scheme, salt, digest = stored.split("$")
    assert scheme == "scrypt", scheme
    candidate = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=PASSWORD_SCRYPT_N, r=8, p=1)
    return hmac.compare_digest(candidate, _unb64(digest))


def hash_employee_pin(pin: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, EMPLOYEE_PIN_ITERATIONS)
    return f"pbkdf2${_b64(salt)}${_b64(digest)}"


def employee_pin_matches(pin: str, stored: str) -> bool:
    scheme, salt, digest = stored.split("$")
    assert scheme == "pbkdf2", scheme
    candidate = hashlib.pbkdf2_hmac("sha256", pin.encode(), _unb64(salt), EMPLOYEE_PIN_ITERATIONS)
    return hmac.compare_digest(candidate, _unb64(digest))


def new_credential(terminal_id: str) -> tuple[str, str]:
    """(credential to hand to the terminal once, hash to store)."""
    credential = f"{terminal_id}.{secrets.token_urlsafe(CREDENTIAL_SECRET_BYTES)}"
    return credential, credential_hash(credential)


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def terminal_id_of(credential: str) -> str:
    return credential.split(".", 1)[0]


def card_hash(key: bytes, card_number: str) -> str:
    """Keyed hash under which a card number is found (HMAC-SHA256); without the key it reveals nothing.

    Every card lookup a terminal makes hashes its number on the event loop. The key's inner and
    outer SHA-256 states are made once and copied, as the hmac module does without OpenSSL
    (RFC 2104): 0.95 us a number, where hmac.new, which starts from the key each time, took 2.4."""
    states = _CARD_HASH_STATES.get(key)
    if states is None:
        states = _hmac_sha256_states(key)
    inner, outer = states[0].copy(), states[1].copy()
    inner.update(card_number.encode())
    outer.update(inner.digest())
    return outer.hexdigest()


_SHA256_BLOCK_BYTES = 64
_CARD_HASH_STATES: dict[bytes, tuple[hashlib._Hash, hashlib._Hash]] = {}


def _hmac_sha256_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's states after the key XOR ipad and the key XOR opad (RFC 2104), kept for card_hash."""
    block = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK_BYTES else key
    block = block.ljust(_SHA256_BLOCK_BYTES, b"\0")
    states = (hashlib.sha256(block.translate(hmac.trans_36)), hashlib.sha256(block.translate(hmac.trans_5C)))
    if len(_CARD_HASH_STATES) >= CARD_HASH_KEYS_KEPT_MAX:
        _CARD_HASH_STATES.clear()
    _CARD_HASH_STATES[key] = states
    return states


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
