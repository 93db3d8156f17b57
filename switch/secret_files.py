"""The secrets of the data directory: written whole and for the owner only, never taken empty; the card
hash key among them sealed under the master key."""

from __future__ import annotations

import contextlib
import logging
import os
import string
from pathlib import Path
from typing import Final

from switch.security import KeyAlgorithm, KeyIntegrityError, KeyUsage, MasterKey, SecurityModule, WrappedKey

log = logging.getLogger(__name__)

CARD_HASH_KEY_ID: Final = "card-hash"
CARD_HASH_KEY_BYTES: Final = KeyAlgorithm.hmac_sha256.key_bytes


class SecretFileError(RuntimeError):
    """A secret file of the data directory is there but holds no secret this switch can use."""


def write_secret(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file, synced, then renamed), readable by its
    owner only from the first byte on; an existing file is replaced in one step."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # One there under this pid was left by a process that crashed mid-write with the pid this one
    # has now (pid 1 in a container, say): no live process of this host writes it. Left, it made
    # every later start fail on the exclusive create.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, text.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def secret_file(path: Path, make: str) -> str:
    """A secret kept in the data directory, created on first use, readable by its owner only.

    Created whole or not at all: a start that crashed while writing it must not leave it empty, for
    an empty admin token would match a call that carries none, and an empty card hash key would hash
    every card number with no key. An empty file is refused by name rather than replaced, since data
    may already depend on the secret. One that others may read (restored from a backup, say) is
    closed to them.
    """
    if path.exists():
        secret = path.read_text().strip()
        if not secret:
            raise SecretFileError(
                f"{path} is empty; restore it from a backup (or, for admin.token, remove it)"
            )
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by others; now by its owner only", path)
        return secret
    write_secret(path, make)
    return make


def card_hash_key(path: Path, master_key: MasterKey) -> bytes:
    """The card hash key, kept in `path` sealed under the master key (made on first start), so the
    data directory with the database does not yield it (with it, a stored card hash, BIN and last 4
    leave some 10^5 numbers to try).

    A key left in clear by a switch from before (hex) is sealed in place, the same key: the cards
    hashed under it are still found. One that does not open under this master key is refused by
    name; the message never holds a key.
    """
    security = SecurityModule(master_key)
    made = security.generate_key(CARD_HASH_KEY_ID, KeyUsage.pan_hash, KeyAlgorithm.hmac_sha256)
    text = secret_file(path, made.to_text())
    if all(character in string.hexdigits for character in text):
        return _seal_clear_key(path, text, security)
    try:
        wrapped = WrappedKey.from_text(text)
        if wrapped.key_id != CARD_HASH_KEY_ID:
            raise KeyIntegrityError(f"the key in it is {wrapped.key_id}")
        return security.open_pan_hash_key(wrapped)
    except KeyIntegrityError as error:
        raise SecretFileError(
            f"{path} does not open under this master key (TXSWITCH_MASTER_KEY_HEX, or master.key in "
            f"the data directory): {error}; start with the master key it was sealed under"
        ) from None


def _seal_clear_key(path: Path, text: str, security: SecurityModule) -> bytes:
    if len(text) != 2 * CARD_HASH_KEY_BYTES:
        raise SecretFileError(
            f"{path} holds a key in clear of {len(text) // 2} bytes, not {CARD_HASH_KEY_BYTES}: give it "
            "as TXSWITCH_CARD_HASH_KEY_HEX instead and remove the file"
        )
    clear_key = bytes.fromhex(text)
    sealed = security.import_key(clear_key, CARD_HASH_KEY_ID, KeyUsage.pan_hash, KeyAlgorithm.hmac_sha256)
    write_secret(path, sealed.to_text())
    log.warning("%s held the card hash key in clear; it is now sealed under the master key", path)
    return clear_key
