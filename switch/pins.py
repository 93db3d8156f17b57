"""Closed-loop card PINs at the edge: PIN block -> verification value through the SecurityModule."""

from __future__ import annotations

import threading
import time

from switch.domain.card_pins import PinProof, card_pin_problem
from switch.security import KeyAlgorithm, KeyUsage, PinBlockError, SecurityModule, WrappedKey
from switch.store.keys import KeyStore

PVV_KEY_ID = "pvv-1"
TERMINAL_PIN_KEYS_CACHED_MAX = 100_000


def terminal_pin_key_id(terminal_id: str) -> str:
    return f"tpk.{terminal_id}"


class TerminalPinKeys:
    """Each terminal's PIN key (wrapped under the master key), cached by terminal id.

    One instance per process, shared by everything that uses or issues the keys (activation,
    payments, closed-loop PIN checks): a key issued at a re-activation replaces the cached one
    for all of them at once, so no check runs under the key the terminal no longer has. Where nodes
    share the database, a key activation issued on another node is never put here: a cached key is
    read again once older than max_age_s (None: one node, a cached key lasts).
    """

    def __init__(
        self,
        keys: KeyStore,
        cached_max: int = TERMINAL_PIN_KEYS_CACHED_MAX,
        max_age_s: float | None = None,
    ) -> None:
        assert cached_max > 0, "cached_max must be positive"
        assert max_age_s is None or max_age_s >= 0, "max_age_s must be 0 or more"
        self._keys = keys
        self._cached_max = cached_max
        self._max_age_s = max_age_s
        self._cached: dict[str, tuple[WrappedKey, float]] = {}  # the key, and when it was read (monotonic)
        # Held across a miss's read and a put's write, so a read of the old key cannot land in the
        # cache after the new one was put.
        self._lock = threading.Lock()

    def get(self, terminal_id: str) -> WrappedKey | None:
        cached = self._cached.get(terminal_id)
        if cached is not None:
            known, read_at_s = cached
            if self._max_age_s is None or time.monotonic() - read_at_s <= self._max_age_s:
                return known
        with self._lock:
            key = self._keys.get(terminal_pin_key_id(terminal_id))
            if key is not None:
                self._remember(terminal_id, key)
        return key

    def put(self, terminal_id: str, key: WrappedKey) -> None:
        """Store a terminal's new PIN key (replacing its old one) and use it from now on."""
        assert key.key_id == terminal_pin_key_id(terminal_id), "a terminal PIN key under its own id"
        with self._lock:
            self._keys.put(key)
            self._remember(terminal_id, key)

    def stored_elsewhere(self, terminal_id: str) -> None:
        """A terminal's new PIN key was stored with its credential in one transaction, now committed:
        the next use reads it. Forgotten rather than put: two activations at once may commit in one
        order and get here in the other, and the store holds the one that committed last."""
        with self._lock:
            self._cached.pop(terminal_id, None)

    def _remember(self, terminal_id: str, key: WrappedKey) -> None:
        if len(self._cached) >= self._cached_max and terminal_id not in self._cached:
            self._cached.clear()  # rare (more terminals than the limit): misses read the store again
        self._cached[terminal_id] = (key, time.monotonic())


class CardPinError(ValueError):
    """A PIN that cannot be set; the message names the problem and never holds the PIN."""


class ClosedLoopPins:
    """Turns an entered PIN into a PinProof for the card actor; the clear PIN stays in the module."""

    def __init__(
        self, security: SecurityModule, keys: KeyStore, terminal_keys: TerminalPinKeys | None = None
    ) -> None:
        self._security = security
        self._keys = keys
        self._pvv_key: WrappedKey | None = None
        self.terminal_keys = terminal_keys or TerminalPinKeys(keys)
        self._lock = threading.Lock()

    def pvv_key(self) -> WrappedKey:
        if self._pvv_key is None:
            key = self._keys.get_or_create(
                PVV_KEY_ID,
                lambda: self._security.generate_key(
                    PVV_KEY_ID, KeyUsage.pin_verification, KeyAlgorithm.aes128
                ),
            )
            with self._lock:
                self._pvv_key = key
        return self._pvv_key

    def pvv_for_pin(self, card_id: str, pin: str) -> tuple[str, str]:
        """(verification value, its key id) of a PIN set by the backoffice."""
        problem = card_pin_problem(pin)
        if problem is not None:
            raise CardPinError(problem)
        key = self.pvv_key()
        return self._security.pvv_for_issuance(key, card_id, pin), key.key_id

    def install_terminal_pin_key(
        self, terminal_id: str, clear_key: bytes, algorithm: KeyAlgorithm = KeyAlgorithm.aes128
    ) -> WrappedKey:
        """Key injection: keep a terminal's PIN key, wrapped under the master key."""
        key_id = terminal_pin_key_id(terminal_id)
        key = self._security.import_key(clear_key, key_id, KeyUsage.terminal_pin, algorithm)
        self.terminal_keys.put(terminal_id, key)
        return key

    def terminal_pin_key(self, terminal_id: str) -> WrappedKey | None:
        return self.terminal_keys.get(terminal_id)

    def proof(self, pin_block: bytes, pan: str, pin_key: WrappedKey, card_id: str) -> PinProof:
        """The entered PIN's verification value; empty (a wrong try) when the block does not decode."""
        try:
            return PinProof(
                self._security.pvv_from_pin_block(pin_block, pan, pin_key, self.pvv_key(), card_id)
            )
        except PinBlockError:
            return PinProof("")
