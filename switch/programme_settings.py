"""A programme's setting changed while the switch runs (its load step), made to count at once.

A card actor holds its card's programme as it read it, and on one node never reads it again; the
copy a stopped actor leaves (actors/card_copies.py) holds it too. So the change is written, this
node's store forgets the programme, and every card of the programme is fenced in turn: a live actor
stops, its copy is forgotten, and the next actor reads the card and the programme from the database.
Another node's actors read their cards again within its copy_max_age_s, and its store the programme
within PROGRAMME_COPY_MAX_AGE_S (switch/store/repository.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Select, select

from switch.domain.programmes import Programme
from switch.store.schema import cards

if TYPE_CHECKING:
    from switch.core import SwitchCore

CARDS_PER_READ_MAX = 1_000  # card ids read at once while fencing a programme's cards


def set_load_step(core: SwitchCore, programme_id: str, load_step_minor: int) -> Programme:
    """The programme as it loads from now on. AdminError naming what is wrong, LookupError for an
    unknown programme; either way nothing changes.

    Two changes at once on this node are made one after the other, from the write to the note in
    the copies' guard: the guard then holds what was written last. Interleaved, the first change
    noted its programme after the second had noted the newer one, and an issue that read the
    programme between the two writes left its card a copy in the older step after both fences.
    The fences need no order (each only makes the cards' next actors read the programme again)."""
    with core.programme_changes:
        core.admin.set_load_step(programme_id, load_step_minor)
        programme = core.store.programme(programme_id)  # read again: the store forgot it
        if core.card_copies is not None:  # before the fence: an issue under way leaves no older copy
            core.card_copies.programme_changed(programme)
    _card_actors_read_again(core, programme_id)
    return programme


def programme_cards_after(programme_id: str, after_card_id: str) -> Select[str]:
    """The next CARDS_PER_READ_MAX of the programme's card ids after after_card_id, in order: read
    along ix_cards_programme, not by scanning every card."""
    return (
        select(cards.c.card_id)
        .where(cards.c.programme_id == programme_id, cards.c.card_id > after_card_id)
        .order_by(cards.c.card_id)
        .limit(CARDS_PER_READ_MAX)
    )


def _card_actors_read_again(core: SwitchCore, programme_id: str) -> None:
    after = ""
    while True:
        query = programme_cards_after(programme_id, after)
        with core.store.engine.connect() as conn:
            card_ids = list(conn.execute(query).scalars())
        for card_id in card_ids:
            with core.card_actors.exclusive(card_id):  # a live actor stops, leaving its copy
                if core.card_copies is not None and core.card_copies.holds(card_id):
                    core.card_copies.forget(card_id)
        if len(card_ids) < CARDS_PER_READ_MAX:
            return
        after = card_ids[-1]
