"""What the last card actor of a card knew when it stopped, so the next one starts without a read.

A card actor starts on the first request for its card, and until now began with a read of the
card (its row, its account, its PIN): on the event loop's thread for most requests, where the
read lets go of the interpreter lock and waits to get it back behind the other threads (session
20 found half the event loop's stalls above 10 ms there). On one node every change to a card goes
through its actor, so what an actor holds when it stops, with every write of its own landed and
applied, is what the database holds; and a card this node issues is known from the issue itself.

Only for one node: another node may change a card meanwhile (Settings.copy_max_age_s). A copy is
taken once, by the next actor to start; each start is a new generation, and only the actor of the
card's current generation may leave a copy, so an actor that stopped late (its stop timed out and a
successor started) cannot leave an older one behind. A change made around the actors (the balance
moved to a replacement card) forgets the copy. A programme changed here (its load step) is noted:
an issue that read it before the change, its card written before the change's fence passed it and
its copy left after, leaves nothing (its first actor reads the card and the programme).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass

from switch.domain.card_rules import CardState
from switch.domain.programmes import Programme
from switch.store.card_pins import CardPin

COPIES_MAX = 100_000  # cards remembered; the least recently touched are forgotten first
PROGRAMMES_CHANGED_MAX = 1_000  # programmes changed since start, as changed; the oldest forgotten first


@dataclass(frozen=True, slots=True)
class CardCopy:
    state: CardState
    pin: CardPin | None  # the card's PIN, None if it has none


@dataclass(slots=True)
class _Slot:
    generation: int  # of the actor that started last; 0: none has, since the card was issued
    copy: CardCopy | None


class CardCopies:
    def __init__(self, size_max: int = COPIES_MAX) -> None:
        assert size_max > 0
        self._size_max = size_max
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._generations = itertools.count(1)
        self._programmes_changed: OrderedDict[str, Programme] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, card_id: str) -> tuple[int, CardCopy | None]:
        """A card actor starts: its generation, and the copy its predecessor left, if any (taken)."""
        with self._lock:
            generation = next(self._generations)
            slot = self._slots.pop(card_id, None)
            self._keep(card_id, _Slot(generation, None))
        return generation, None if slot is None else slot.copy

    def holds(self, card_id: str) -> bool:
        """Whether an actor starting now for the card would start from a copy, without a read."""
        with self._lock:
            slot = self._slots.get(card_id)
            return slot is not None and slot.copy is not None

    def leave(self, card_id: str, generation: int, copy: CardCopy) -> None:
        """A card actor of that generation stops, every write of its own applied: its state."""
        with self._lock:
            slot = self._slots.get(card_id)
            if slot is not None and slot.generation == generation:
                slot.copy = copy
                self._slots.move_to_end(card_id)

    def issued(self, card_id: str, copy: CardCopy) -> None:
        """A card this node has just issued, as the issue wrote it; nothing if its programme changed
        since the issue read it (programme_changed)."""
        programme = copy.state.programme
        with self._lock:
            changed = self._programmes_changed.get(programme.programme_id)
            if card_id not in self._slots and changed in (None, programme):
                self._keep(card_id, _Slot(0, copy))

    def programme_changed(self, programme: Programme) -> None:
        """The programme as it is from now on, noted before its cards are fenced: a card whose issue
        read it before leaves no copy after the fence passed (the fence forgets one left before)."""
        with self._lock:
            self._programmes_changed[programme.programme_id] = programme
            self._programmes_changed.move_to_end(programme.programme_id)
            while len(self._programmes_changed) > PROGRAMMES_CHANGED_MAX:
                self._programmes_changed.popitem(last=False)

    def forget(self, card_id: str) -> None:
        """The card changed around its actors: the next one reads it. A new generation, so an actor
        whose stop is still under way (it timed out) cannot leave what it knew before the change."""
        with self._lock:
            self._slots.pop(card_id, None)
            self._keep(card_id, _Slot(next(self._generations), None))

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for slot in self._slots.values() if slot.copy is not None)

    def _keep(self, card_id: str, slot: _Slot) -> None:
        self._slots[card_id] = slot
        while len(self._slots) > self._size_max:
            self._slots.popitem(last=False)
