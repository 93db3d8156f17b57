"""Wrong password reset codes limited per caller address, over real gRPC and a real SMTP server.

ResetPassword looked every code up, one database read each, with no limit on how many one caller
tried. Wrong codes are now counted per caller (password_reset_wrong_codes_per_caller_per_hour_max),
and past the limit a call is refused before its code is looked up; a right code under it goes through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import event

from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from switch.password_resets import CODE_PREFIX
from tests.integration.harness import MERCHANT_EMAIL, World
from tests.integration.test_password_reset import NEW_PASSWORD, next_code
from tests.integration.test_password_reset_callers import two_callers_with_mail
from tests.integration.test_receipts import Mailbox
from tests.ipv6 import ipv6_loopback_works

WRONG_CODES_MAX = 3
MADE_UP_CODE = CODE_PREFIX + "made-up-code-made-up-code-made-up"


@pytest.fixture(params=["sqlite"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    yield from two_callers_with_mail(
        request, tmp_path, password_reset_wrong_codes_per_caller_per_hour_max=WRONG_CODES_MAX
    )


def reset(world: World, host: str, code: str) -> str:
    """The status of ResetPassword from the caller at host: OK or the error's code name."""
    with grpc.insecure_channel(f"{host}:{world.server.grpc_port}") as channel:
        request = portal.ResetPasswordRequest(code=code, new_password=NEW_PASSWORD)
        try:
            portal_grpc.PortalStub(channel).ResetPassword(request, timeout=20)
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def mailed_code(world: World, mailbox: Mailbox) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{world.server.grpc_port}") as channel:
        request = portal.RequestPasswordResetRequest(email=MERCHANT_EMAIL)
        portal_grpc.PortalStub(channel).RequestPasswordReset(request, timeout=20)
    return next_code(mailbox, 1)


RIGHT_CODE_AFTER_WRONG_ONES = [
    # (wrong codes first, what the right code then gets)
    (0, "OK"),
    (WRONG_CODES_MAX - 1, "OK"),  # under the limit a right code is never refused
    (WRONG_CODES_MAX, "RESOURCE_EXHAUSTED"),
]


@pytest.mark.parametrize(("wrong_codes", "expected"), RIGHT_CODE_AFTER_WRONG_ONES)
def test_a_right_code_goes_through_under_the_wrong_codes_limit_and_not_past_it(
    shop: tuple[World, Mailbox], wrong_codes: int, expected: str
) -> None:
    world, mailbox = shop
    code = mailed_code(world, mailbox)
    assert [reset(world, "127.0.0.1", MADE_UP_CODE) for _ in range(wrong_codes)] == [
        "UNAUTHENTICATED"
    ] * wrong_codes
    assert reset(world, "127.0.0.1", code) == expected


def test_past_the_limit_a_code_is_refused_before_it_is_looked_up_and_another_caller_is_not(
    shop: tuple[World, Mailbox],
) -> None:
    world, _ = shop
    for _ in range(WRONG_CODES_MAX):
        assert reset(world, "127.0.0.1", MADE_UP_CODE) == "UNAUTHENTICATED"
    lookups: list[str] = []

    def seen(*args: object) -> None:
        statement = str(args[2])
        if "password_resets" in statement:
            lookups.append(statement)

    engine = world.server.core.store.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert reset(world, "127.0.0.1", MADE_UP_CODE) == "RESOURCE_EXHAUSTED"
        assert lookups == [], "a refused code was looked up"
        if not ipv6_loopback_works():
            pytest.skip("no IPv6 loopback on this machine: another caller not tried")
        assert reset(world, "[::1]", MADE_UP_CODE) == "UNAUTHENTICATED"  # another caller: looked up
        assert len(lookups) == 1, lookups
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_burst_of_made_up_codes_arriving_together_gets_no_more_lookups_than_the_limit(
    shop: tuple[World, Mailbox],
) -> None:
    world, _ = shop
    burst = 12
    ready = threading.Barrier(burst)

    def one(_: int) -> str:
        ready.wait(timeout=20)
        return reset(world, "127.0.0.1", MADE_UP_CODE)

    def slow_lookup(*args: object) -> None:  # a busy database: the lookups overlap
        if "password_resets" in str(args[2]):
            time.sleep(0.2)

    engine = world.server.core.store.engine
    event.listen(engine, "before_cursor_execute", slow_lookup)
    try:
        with ThreadPoolExecutor(burst) as pool:
            codes = sorted(pool.map(one, range(burst)))
    finally:
        event.remove(engine, "before_cursor_execute", slow_lookup)
    # The check and the count were two steps: codes checked together all passed before one counted.
    assert codes.count("UNAUTHENTICATED") == WRONG_CODES_MAX, codes
    assert codes.count("RESOURCE_EXHAUSTED") == burst - WRONG_CODES_MAX, codes
