"""Password reset asks limited per caller address, over real gRPC and a real SMTP server.

Asks were limited per e-mail address only (password_resets_per_hour_max): one caller naming a new
address each time had the switch mail every login it could name, as fast as it asked. Asks are now
counted per caller too (password_reset_asks_per_caller_per_hour_max), known addresses or not alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from switch.passwords import email_digest
from switch.store.schema import password_resets
from tests.integration.harness import World, world_fixture
from tests.integration.test_receipts import Mailbox, mail_server, wait_until
from tests.ipv6 import ipv6_loopback_works

ASKS_MAX = 3
TARGET = "target@example.test"


def two_callers_with_mail(
    request: pytest.FixtureRequest, tmp_path: Path, **limits: int
) -> Iterator[tuple[World, Mailbox]]:
    """A switch with a real mail server whose gRPC port two callers of this machine reach: "localhost"
    listens on 127.0.0.1 and ::1 at once."""
    with mail_server() as (port, mailbox):
        settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "grpc_host": "localhost", **limits}
        for world in world_fixture(request, tmp_path, terminals=0, **settings):
            yield world, mailbox


@pytest.fixture(params=["sqlite"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    yield from two_callers_with_mail(request, tmp_path, password_reset_asks_per_caller_per_hour_max=ASKS_MAX)


def ask(world: World, host: str, email: str) -> tuple[str, str]:
    with grpc.insecure_channel(f"{host}:{world.server.grpc_port}") as channel:
        request = portal.RequestPasswordResetRequest(email=email)
        try:
            portal_grpc.PortalStub(channel).RequestPasswordReset(request, timeout=20)
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


def codes_for(world: World, email: str) -> int:
    with world.server.engine.connect() as conn:
        count = select(func.count()).where(password_resets.c.email_hash == email_digest(email))
        return int(conn.execute(count).scalar_one())


@pytest.mark.parametrize("sprayed_have_logins", [True, False])
def test_one_caller_asking_for_many_addresses_is_refused_after_the_limit_and_another_is_not(
    shop: tuple[World, Mailbox], sprayed_have_logins: bool
) -> None:
    if not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback on this machine")
    world, mailbox = shop
    admin = world.server.core.admin
    sprayed = [f"shop-{index}@example.test" for index in range(ASKS_MAX)]
    for index, email in enumerate([*sprayed, TARGET] if sprayed_have_logins else [TARGET]):
        admin.create_merchant(f"Shop {index}", email, "a-long-password")
    assert [ask(world, "127.0.0.1", email)[0] for email in sprayed] == ["OK"] * ASKS_MAX
    code, details = ask(world, "127.0.0.1", TARGET)
    assert (code, "try again in" in details) == ("RESOURCE_EXHAUSTED", True), details
    assert TARGET not in details and "shop-" not in details
    assert codes_for(world, TARGET) == 0, "a refused ask made a code"
    # Another caller is answered, and its code is mailed.
    assert ask(world, "[::1]", TARGET) == ("OK", "")
    mails_expected = ASKS_MAX + 1 if sprayed_have_logins else 1
    wait_until(lambda: len(mailbox.envelopes) >= mails_expected)
    assert [to for _, to in mailbox.envelopes].count([TARGET]) == 1
    assert codes_for(world, TARGET) == 1
