"""Who is calling and which card is meant: terminal credentials and card numbers to ids, cached."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from switch import credentials
from switch.store.repository import Store

CARD_CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class _TerminalAuth:
    credential_hash: str
    active: bool
    read_at_s: float  # time.monotonic() of the read
    merchant_id: str  # never changes


class TerminalDirectory:
    """Terminal credential -> terminal id, with the terminal's credential hash and state cached.

    This node forgets a terminal it activates or deactivates. Another node on the same database
    may do either (a stolen terminal deactivated there): with max_age_s set (Settings.copy_max_age_s),
    a cached terminal is read again once older than that; None: kept until this node forgets it.
    """

    def __init__(self, store: Store, max_age_s: float | None = None) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._cache: dict[str, _TerminalAuth] = {}
        # How often each terminal was forgotten: a read that a forget overtook is used for its own
        # call only, never kept (it may hold the credential or state from before a (de)activation).
        self._forgotten: dict[str, int] = {}
        self._lock = threading.Lock()

    def authenticate(self, credential: str) -> tuple[str | None, str]:
        """(terminal id, "") when valid, else (None, why)."""
        terminal_id = credentials.terminal_id_of(credential)
        auth = self._cache.get(terminal_id)
        if auth is None or self._outdated(auth):
            forgotten = self._forgotten.get(terminal_id, 0)
            info = self._store.terminal(terminal_id)
            if info is None:
                return None, "unknown terminal credential"
            auth = _TerminalAuth(info.credential_hash, info.active, time.monotonic(), info.merchant_id)
            with self._lock:
                if self._forgotten.get(terminal_id, 0) == forgotten:
                    self._cache[terminal_id] = auth
        if not hmac.compare_digest(auth.credential_hash, credentials.credential_hash(credential)):
            return None, "invalid terminal credential"
        if not auth.active:
            return None, f"terminal {terminal_id} is deactivated"
        return terminal_id, ""

    def merchant_id(self, terminal_id: str) -> str:
        """The merchant of a terminal `authenticate` let in: cached with it (read again if this node
        forgot the terminal meanwhile)."""
        auth = self._cache.get(terminal_id)
        if auth is not None:
            return auth.merchant_id
        info = self._store.terminal(terminal_id)
        assert info is not None, f"terminal {terminal_id} authenticated but not stored"
        return info.merchant_id

    def _outdated(self, auth: _TerminalAuth) -> bool:
        return self._max_age_s is not None and time.monotonic() - auth.read_at_s > self._max_age_s

    def forget(self, terminal_id: str) -> None:
        with self._lock:
            self._cache.pop(terminal_id, None)
            self._forgotten[terminal_id] = self._forgotten.get(terminal_id, 0) + 1


class CardDirectory:
    """Card number -> card id, through the keyed hash; the number itself is never kept.

    A card's hash and id never change once issued, so a cached pair is never stale. Cards this
    node issues are remembered as they are issued (`remember`): their first use costs no
    database read, which on the gRPC event loop's thread also means no wait for the interpreter
    lock after the read (README, session 18). Cards issued by another node are read once.
    """

    def __init__(self, store: Store, card_hash_key: bytes) -> None:
        self._store = store
        self._key = card_hash_key
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def hash_of(self, card_number: str) -> str:
        return credentials.card_hash(self._key, card_number)

    def card_id(self, card_number: str) -> str | None:
        digest = self.hash_of(card_number)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        card_id = self._store.card_id_by_hash(digest)
        if card_id is not None:
            self.remember(digest, card_id)
        return card_id

    def remember(self, card_hash: str, card_id: str) -> None:
        """A card's hash and id, once its row is committed: the pair never changes after that."""
        with self._lock:
            if len(self._cache) >= CARD_CACHE_MAX:
                self._cache.clear()
            self._cache[card_hash] = card_id
