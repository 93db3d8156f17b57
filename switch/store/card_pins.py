"""Closed-loop card PINs: the verification value and the durable count of wrong tries per card."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Column, DateTime, Engine, ForeignKey, Integer, String, Table, bindparam, select, update

from switch.store.engine import writing
from switch.store.schema import ID_LENGTH, metadata

CARD_PIN_TRIES_MAX: Final = 3
PVV_LENGTH: Final = 64  # hex of HMAC-SHA256

# Never the PIN nor a PIN block: only the keyed verification value (docs/pin-security.md).
card_pins = Table(
    "card_pins",
    metadata,
    Column("card_id", String(ID_LENGTH), ForeignKey("cards.card_id"), primary_key=True),
    Column("pvv", String(PVV_LENGTH), nullable=False),
    Column("pvv_key_id", String(ID_LENGTH), nullable=False),
    Column("failed_tries", Integer, nullable=False, default=0),
    Column("set_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class CardPin:
    pvv: str = field(repr=False)
    pvv_key_id: str
    failed_tries: int

    def blocked(self, tries_max: int) -> bool:
        return self.failed_tries >= tries_max


_CARD_PIN = select(card_pins).where(card_pins.c.card_id == bindparam("card_id"))


class CardPinStore:
    """Reads and writes of card PINs; only the card's actor writes them (it serialises the tries)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lockouts = 0  # PINs this process blocked (the try that reached the limit)
        self._lockouts_lock = threading.Lock()

    @property
    def lockouts(self) -> int:
        return self._lockouts

    def load(self, card_id: str) -> CardPin | None:
        with self._engine.connect() as conn:
            row = conn.execute(_CARD_PIN, {"card_id": card_id}).first()
        return None if row is None else CardPin(row.pvv, row.pvv_key_id, row.failed_tries)

    def set_pvv(self, card_id: str, pvv: str, pvv_key_id: str, now: dt.datetime) -> CardPin:
        """Store a new verification value and clear the wrong tries, durably."""
        values = {"pvv": pvv, "pvv_key_id": pvv_key_id, "failed_tries": 0, "set_at": now}
        with writing(self._engine) as conn:
            changed = conn.execute(update(card_pins).where(card_pins.c.card_id == card_id).values(**values))
            if changed.rowcount == 0:
                conn.execute(card_pins.insert().values(card_id=card_id, **values))
        return CardPin(pvv, pvv_key_id, 0)

    def count_wrong_try(self, card_id: str, tries_max: int) -> int:
        """Add one wrong try unless the PIN is blocked already; the stored count, durably.

        The condition is the backstop across nodes: the count never passes tries_max.
        """
        row = card_pins.c
        with writing(self._engine) as conn:
            counted = conn.execute(
                update(card_pins)
                .where(row.card_id == card_id, row.failed_tries < tries_max)
                .values(failed_tries=row.failed_tries + 1)
            ).rowcount
            tries = int(conn.execute(select(row.failed_tries).where(row.card_id == card_id)).scalar_one())
        if counted and tries >= tries_max:
            with self._lockouts_lock:
                self._lockouts += 1
        return tries

    def reset_tries_unless_blocked(self, card_id: str, tries_max: int) -> bool:
        """After the right PIN: clear the wrong tries, unless the stored count has blocked the PIN
        meanwhile (on another node); False then, and the PIN stays blocked."""
        row = card_pins.c
        with writing(self._engine) as conn:
            cleared = conn.execute(
                update(card_pins)
                .where(row.card_id == card_id, row.failed_tries < tries_max)
                .values(failed_tries=0)
            ).rowcount
        return bool(cleared)
