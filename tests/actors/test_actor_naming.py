"""SwitchActor names itself from a counter instead of pykka's uuid4, and is otherwise pykka's actor."""

from __future__ import annotations

import uuid
from typing import Any

import pykka
import pytest

from actors.base import SwitchActor


class Echo(SwitchActor):
    def on_receive(self, message: Any) -> Any:
        return message


def test_an_actor_is_made_without_drawing_a_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_uuid() -> uuid.UUID:
        raise AssertionError("uuid4 drawn for an actor's name")

    monkeypatch.setattr(uuid, "uuid4", no_uuid)
    actor = Echo()
    assert actor.actor_urn.startswith("urn:txswitch:actor:")


def test_it_sets_every_attribute_pykkas_own_init_sets() -> None:
    """A pykka upgrade whose Actor.__init__ sets something more fails here, not in production."""
    theirs = set(vars(pykka.ThreadingActor()))
    ours = set(vars(Echo()))
    assert theirs <= ours, f"pykka's __init__ sets {sorted(theirs - ours)}, SwitchActor's does not"


def test_names_are_unique_and_the_actor_runs() -> None:
    refs = [Echo.start() for _ in range(3)]
    try:
        assert len({ref.actor_urn for ref in refs}) == 3
        assert [ref.ask(index, timeout=5) for index, ref in enumerate(refs)] == [0, 1, 2]
        assert pykka.ActorRegistry.get_by_urn(refs[1].actor_urn) == refs[1]
    finally:
        for ref in refs:
            ref.stop()
