"""README: "A code mailed before the login's address changed, or before the user was deactivated,
opens nothing." Not even once the user is reactivated: the codes are voided at the deactivation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.harness import World, world_fixture
from tests.integration.test_password_reset import USER_EMAIL, USER_PASSWORD, ask, next_code, reset
from tests.integration.test_portal import refusal
from tests.integration.test_receipts import Mailbox, mail_server


@pytest.fixture(params=["sqlite"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    with mail_server() as (port, mailbox):
        settings = {"smtp_host": "127.0.0.1", "smtp_port": port}
        for world in world_fixture(request, tmp_path, terminals=0, **settings):
            yield world, mailbox


def test_a_code_mailed_before_a_deactivation_opens_nothing_after_reactivation(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    admin = world.server.core.admin
    admin.add_employee(world.merchant_id, "61", "Till", "1357", email=USER_EMAIL, password=USER_PASSWORD)
    ask(world, USER_EMAIL)
    mailed_before = next_code(mailbox, 1)
    admin.update_employee(world.merchant_id, "61", active=False)
    assert refusal(reset, world, mailed_before)[0] == grpc.StatusCode.UNAUTHENTICATED
    admin.update_employee(world.merchant_id, "61", active=True)
    assert refusal(reset, world, mailed_before)[0] == grpc.StatusCode.UNAUTHENTICATED
