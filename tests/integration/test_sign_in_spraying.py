"""One caller trying a password or two on many e-mail addresses (password spraying), over real gRPC.

Wrong tries were locked per address only: a caller naming a new address each time was held back by
nothing but sign_ins_concurrent_max, at the speed of two scrypt checks at once. Wrong tries are now
counted per caller address too, across the portal's sign-in and terminal activation together;
over sign_in_caller_failures_max the caller's checks are refused (RESOURCE_EXHAUSTED) before the
hash, right passwords never count, and the per-address lock works as it did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.passwords import email_digest
from switch.store.schema import sign_in_failures
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture
from tests.ipv6 import ipv6_loopback_works

CALLER_FAILURES_MAX = 4
ADDRESS_TRIES_MAX = 3
WRONG = "not-the-password"

# One password try at an entry: (the caller's channel, e-mail, password) -> (status name, details).
Try = Callable[[grpc.Channel, str, str], tuple[str, str]]


def _answer(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


def portal_sign_in(channel: grpc.Channel, email: str, password: str) -> tuple[str, str]:
    stub = portal_grpc.PortalStub(channel)
    return _answer(lambda: stub.SignIn(portal.SignInRequest(email=email, password=password), timeout=20))


def activation(channel: grpc.Channel, email: str, password: str) -> tuple[str, str]:
    stub = pb_grpc.TerminalStub(channel)
    request = pb.ActivateRequest(
        merchant_email=email, password=password, device_name="A77-9", location="Shop"
    )
    return _answer(lambda: stub.Activate(request, timeout=20))


ENTRIES: dict[str, Try] = {"portal": portal_sign_in, "activation": activation}


@pytest.fixture(params=["sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    # "localhost" listens on 127.0.0.1 and ::1 at once: two callers on one machine.
    yield from world_fixture(
        request,
        tmp_path,
        terminals=0,
        grpc_host="localhost",
        sign_in_tries_max=ADDRESS_TRIES_MAX,
        sign_in_caller_failures_max=CALLER_FAILURES_MAX,
    )


@pytest.fixture
def ipv4(world: World) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{world.server.grpc_port}") as channel:
        yield channel


@pytest.fixture
def ipv6(world: World) -> Iterator[grpc.Channel]:
    if not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback on this machine")
    with grpc.insecure_channel(f"[::1]:{world.server.grpc_port}") as channel:
        yield channel


def _stored_failure(world: World, email: str) -> object:
    with world.server.engine.connect() as conn:
        return conn.execute(
            select(sign_in_failures.c.failures).where(sign_in_failures.c.email_hash == email_digest(email))
        ).first()


@pytest.mark.parametrize(
    ("sprayed_by", "then_by"),
    [("portal", "portal"), ("activation", "activation"), ("portal", "activation"), ("activation", "portal")],
)
def test_one_caller_trying_many_addresses_is_refused_after_the_limit_and_another_is_not(
    world: World, ipv4: grpc.Channel, ipv6: grpc.Channel, sprayed_by: str, then_by: str
) -> None:
    spray, then = ENTRIES[sprayed_by], ENTRIES[then_by]
    addresses = [f"victim-{index}@example.test" for index in range(CALLER_FAILURES_MAX)]
    assert [spray(ipv4, email, WRONG)[0] for email in addresses] == ["UNAUTHENTICATED"] * CALLER_FAILURES_MAX
    fresh = "victim-next@example.test"
    code, details = then(ipv4, fresh, WRONG)
    assert (code, "try again in" in details) == ("RESOURCE_EXHAUSTED", True), details
    assert fresh not in details and "victim" not in details
    assert _stored_failure(world, fresh) is None, "a refused try was counted for its address"
    # Refused before the password is read: the right one is refused too, from this caller only.
    assert then(ipv4, MERCHANT_EMAIL, MERCHANT_PASSWORD)[0] == "RESOURCE_EXHAUSTED"
    assert then(ipv6, MERCHANT_EMAIL, MERCHANT_PASSWORD)[0] == "OK"
    assert then(ipv6, fresh, WRONG)[0] == "UNAUTHENTICATED"


def test_right_sign_ins_of_a_caller_under_the_limit_work_and_are_not_counted(
    world: World, ipv4: grpc.Channel
) -> None:
    wrong = [
        portal_sign_in(ipv4, f"typo-{index}@example.test", WRONG)[0]
        for index in range(CALLER_FAILURES_MAX - 1)
    ]
    assert wrong == ["UNAUTHENTICATED"] * (CALLER_FAILURES_MAX - 1)
    right = [entry(ipv4, MERCHANT_EMAIL, MERCHANT_PASSWORD)[0] for entry in ENTRIES.values()] * 3
    assert right == ["OK"] * 6
    # The right ones took nothing from the caller's allowance: one more wrong try is still answered.
    assert activation(ipv4, "typo-last@example.test", WRONG)[0] == "UNAUTHENTICATED"
    assert portal_sign_in(ipv4, MERCHANT_EMAIL, MERCHANT_PASSWORD)[0] == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_address_is_still_locked_after_its_wrong_tries_whoever_tries_it(
    world: World, ipv4: grpc.Channel, ipv6: grpc.Channel, entry: str
) -> None:
    attempt = ENTRIES[entry]
    answers = [attempt(ipv4, MERCHANT_EMAIL, WRONG)[0] for _ in range(ADDRESS_TRIES_MAX)]
    assert answers == ["UNAUTHENTICATED"] * ADDRESS_TRIES_MAX
    for caller in (ipv4, ipv6):
        code, details = attempt(caller, MERCHANT_EMAIL, MERCHANT_PASSWORD)
        assert (code, "too many wrong sign-ins for this address" in details) == ("UNAUTHENTICATED", True)


BURST = 12


@pytest.fixture(params=["sqlite"])
def roomy_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Password checks at once well above the caller's limit: only the caller's limit holds a burst."""
    yield from world_fixture(
        request,
        tmp_path,
        terminals=0,
        sign_ins_concurrent_max=BURST,
        sign_in_caller_failures_max=CALLER_FAILURES_MAX,
    )


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_burst_of_wrong_tries_arriving_together_gets_no_more_checks_than_the_limit(
    roomy_world: World, entry: str
) -> None:
    attempt = ENTRIES[entry]
    ready = threading.Barrier(BURST)

    def one(index: int) -> str:
        with grpc.insecure_channel(f"127.0.0.1:{roomy_world.server.grpc_port}") as channel:
            ready.wait(timeout=20)
            return attempt(channel, f"burst-{index}@example.test", WRONG)[0]

    with ThreadPoolExecutor(BURST) as pool:
        codes = sorted(pool.map(one, range(BURST)))
    # The check and the count were two steps: every try of the burst passed the check before any
    # was counted, and each cost a password check.
    assert codes.count("UNAUTHENTICATED") == CALLER_FAILURES_MAX, codes
    assert codes.count("RESOURCE_EXHAUSTED") == BURST - CALLER_FAILURES_MAX, codes
