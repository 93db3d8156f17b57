"""Secrets the switch checks but never keeps in the clear: passwords, employee PINs, terminal
credentials and card numbers (kept only as keyed hashes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

log = logging.getLogger(__name__)

# The cost of a hash made now. Each hash carries its own (`hash_password`, `hash_employee_pin`), so
# these may be raised later: hashes made before keep verifying at the cost they were made with.
PASSWORD_SCRYPT_N = 2**14
PASSWORD_SCRYPT_R = 8
PASSWORD_SCRYPT_P = 1
EMPLOYEE_PIN_ITERATIONS = 20_000
# What a hash of the first form (scheme, salt, digest: no parameters) was made with.
LEGACY_SCRYPT = (2**14, 8, 1)
LEGACY_PIN_ITERATIONS = 20_000
# Bounds on the parameters a stored hash may name: a corrupted row must not make one check take
# minutes or gigabytes. At most 64 times today's scrypt work (128 * n * r bytes: 1 GiB at most).
SCRYPT_N_MAX = 2**20
SCRYPT_R_MAX = 16
SCRYPT_P_MAX = 16
SCRYPT_WORK_MAX = 2**23  # n * r * p
PIN_ITERATIONS_MAX = 10**7
CREDENTIAL_SECRET_BYTES = 24
# Keys whose HMAC starting states card_hash keeps: one card hash key per switch, a few in tests.
CARD_HASH_KEYS_KEPT_MAX = 8


def hash_password(password: str) -> str:
    """`scrypt$<n>$<r>$<p>$<salt>$<digest>`: the hash names the parameters it was made with, so
    raising PASSWORD_SCRYPT_* later locks nobody out (`password_matches` reads them back)."""
    n, r, p = PASSWORD_SCRYPT_N, PASSWORD_SCRYPT_R, PASSWORD_SCRYPT_P
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_scrypt_memory(n, r, p))
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    """Whether password is the one stored hashed, at the parameters the stored hash names (the
    first form, `scrypt$<salt>$<digest>`, was made with LEGACY_SCRYPT). A stored hash that does
    not parse, or names parameters out of bounds (SCRYPT_*_MAX), matches nothing: False, logged."""
    parsed = _scrypt_parts(stored)
    if parsed is None:
        log.warning("a stored password hash is malformed or out of bounds: refused")
        return False
    (n, r, p), salt, digest = parsed
    candidate = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_scrypt_memory(n, r, p))
    return hmac.compare_digest(candidate, digest)


def password_hash_is_current(stored: str) -> bool:
    """Whether stored was made at today's cost (PASSWORD_SCRYPT_*) in today's form: one that is not
    is made again at a right sign-in (`MerchantPasswords`), which is when the password is known."""
    parsed = _scrypt_parts(stored)
    today = (PASSWORD_SCRYPT_N, PASSWORD_SCRYPT_R, PASSWORD_SCRYPT_P)
    return parsed is not None and stored.count("$") == 5 and parsed[0] == today


def hash_employee_pin(pin: str) -> str:
    """`pbkdf2$<iterations>$<salt>$<digest>` (PBKDF2-HMAC-SHA256): the hash names its iterations,
    so raising EMPLOYEE_PIN_ITERATIONS later locks no employee out."""
    iterations = EMPLOYEE_PIN_ITERATIONS
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return f"pbkdf2${iterations}${_b64(salt)}${_b64(digest)}"


def employee_pin_hash_is_current(stored: str) -> bool:
    """Whether stored was made with today's EMPLOYEE_PIN_ITERATIONS in today's form: one that is not
    is made again where a PIN check succeeds (`actors.terminal_actor.EmployeePins`)."""
    parsed = _pbkdf2_parts(stored)
    return parsed is not None and stored.count("$") == 3 and parsed[0] == EMPLOYEE_PIN_ITERATIONS


def employee_pin_matches(pin: str, stored: str) -> bool:
    """Whether pin is the one stored hashed, at the iterations the stored hash names (the first
    form, `pbkdf2$<salt>$<digest>`, was made with LEGACY_PIN_ITERATIONS). A stored hash that does
    not parse, or names iterations out of 1..PIN_ITERATIONS_MAX, matches nothing: False, logged."""
    parsed = _pbkdf2_parts(stored)
    if parsed is None:
        log.warning("a stored employee PIN hash is malformed or out of bounds: refused")
        return False
    iterations, salt, digest = parsed
    candidate = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
    return hmac.compare_digest(candidate, digest)


def _scrypt_parts(stored: str) -> tuple[tuple[int, int, int], bytes, bytes] | None:
    parts = stored.split("$")
    if parts[0] != "scrypt" or len(parts) not in (3, 6):
        return None
    try:
        n, r, p = (
            LEGACY_SCRYPT if len(parts) == 3 else (_number(parts[1]), _number(parts[2]), _number(parts[3]))
        )
        salt, digest = _unb64(parts[-2]), _unb64(parts[-1])
    except ValueError:  # a bad number, or bad base64 (binascii.Error)
        return None
    power_of_two = n > 1 and n & (n - 1) == 0
    within = n <= SCRYPT_N_MAX and 1 <= r <= SCRYPT_R_MAX and 1 <= p <= SCRYPT_P_MAX
    # OpenSSL's scrypt takes n below 2**(16 r) only (r = 1: n up to 2**15): hashlib raised ValueError
    within = within and n < 2 ** (16 * r)
    if not (power_of_two and within and n * r * p <= SCRYPT_WORK_MAX and salt and digest):
        return None
    return (n, r, p), salt, digest


def _pbkdf2_parts(stored: str) -> tuple[int, bytes, bytes] | None:
    parts = stored.split("$")
    if parts[0] != "pbkdf2" or len(parts) not in (3, 4):
        return None
    try:
        iterations = LEGACY_PIN_ITERATIONS if len(parts) == 3 else _number(parts[1])
        salt, digest = _unb64(parts[-2]), _unb64(parts[-1])
    except ValueError:
        return None
    if not (1 <= iterations <= PIN_ITERATIONS_MAX and salt and digest):
        return None
    return iterations, salt, digest


def _number(text: str) -> int:
    """A parameter as written by this module: ASCII digits only (int() also takes "+8", " 8", "1_6")."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _scrypt_memory(n: int, r: int, p: int) -> int:
    """hashlib.scrypt's maxmem for these parameters: what OpenSSL needs (128 * r * (n + 2 + p)
    bytes) and a little more; its default (32 MiB) refuses n above 2**14 at r = 8."""
    return 128 * r * (n + 2 + p) + 2**16


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
    return base64.b64decode(text, validate=True)
