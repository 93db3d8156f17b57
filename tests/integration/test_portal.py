"""The merchant portal over gRPC: sign in, see only your own, sign out; SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.core import utc_now
from switch.store.schema import portal_sessions
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture

OTHER_EMAIL, OTHER_PASSWORD = "bakery@example.test", "bakery-password"
# Long past any test's wrong tries and the refusals that follow them on a loaded machine: it is not
# waited out, the passwords' clock is moved past it.
SIGN_IN_LOCK_S = 60
# Long past a test's calls on a loaded machine; not waited out either: the portal's clock is moved.
PORTAL_SESSION_S = 60


class PortalClock:
    """The clock the portal's sessions read, which a test moves on: protocols.portal_service.utc_now,
    handed to PortalSessions as the switch starts."""

    def __init__(self) -> None:
        self.ahead = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utc_now() + self.ahead


@pytest.fixture
def portal_clock(monkeypatch: pytest.MonkeyPatch) -> PortalClock:
    clock = PortalClock()
    monkeypatch.setattr("protocols.portal_service.utc_now", clock)
    return clock


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path, portal_clock: PortalClock) -> Iterator[World]:
    yield from world_fixture(
        request,
        tmp_path,
        portal_session_s=PORTAL_SESSION_S,
        sign_in_tries_max=3,
        sign_in_lock_s=SIGN_IN_LOCK_S,
    )


def stub(world: World) -> portal_grpc.PortalStub:
    return portal_grpc.PortalStub(world.channel)


def sign_in(
    world: World, email: str = MERCHANT_EMAIL, password: str = MERCHANT_PASSWORD
) -> tuple[tuple[str, str], ...]:
    session = stub(world).SignIn(portal.SignInRequest(email=email, password=password), timeout=20)
    return (("authorization", f"Bearer {session.token}"),)


def days() -> dict[str, Any]:
    today = dt.datetime.now(dt.UTC).date()
    return {"from_date": str(today - dt.timedelta(days=1)), "to_date": str(today + dt.timedelta(days=1))}


def refusal(call: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call(*args, **kwargs)  # type: ignore[operator]
    return refused.value.code(), refused.value.details() or ""


def test_a_merchant_sees_its_own_transactions_dashboard_devices_and_day_closes(world: World) -> None:
    world.server.core.admin.create_merchant("Bakery", OTHER_EMAIL, OTHER_PASSWORD)
    terminal = world.terminals[0]
    card = world.issue(5_000)
    assert terminal.redeem(card, 1_000, "sale-1").response_code == "00"
    session = stub(world).SignIn(
        portal.SignInRequest(email=MERCHANT_EMAIL.upper(), password=MERCHANT_PASSWORD)
    )
    assert (session.merchant_id, session.merchant_name) == (world.merchant_id, "Shop")
    assert session.token.startswith("ps_") and session.expires_at
    mine = (("authorization", f"Bearer {session.token}"),)
    report = stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=mine, timeout=20)
    assert [t.transaction_id for t in report.transactions] == ["sale-1"]
    assert card not in str(report)
    summary = stub(world).GetMerchantSummary(bo.MerchantSummaryRequest(**days()), metadata=mine, timeout=20)
    assert summary.merchant_id == world.merchant_id
    assert {p.programme_id: p.redeemed.amount_minor for p in summary.programmes}[
        world.gift_programme
    ] == 1_000
    devices = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=mine, timeout=20)
    assert {t.device_name for t in devices.terminals} == {"A77-0", "A77-1"}
    terminal.stub.DayClose(pb.DayCloseRequest(close_id="close-1"), metadata=terminal.metadata, timeout=20)
    closes = stub(world).ListDayCloses(
        bo.DayCloseListRequest(terminal_id=terminal.terminal_id), metadata=mine
    )
    assert [c.sequence_number for c in closes.reports] == [1]
    # The other merchant sees none of it, and cannot ask for it.
    theirs = sign_in(world, OTHER_EMAIL, OTHER_PASSWORD)
    assert (
        not stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=theirs).transactions
    )
    assert not stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=theirs).terminals
    asked = bo.TransactionReportRequest(merchant_id=world.merchant_id, **days())
    assert refusal(stub(world).ListTransactions, asked, metadata=theirs) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "merchant_id: the portal shows only your own merchant",
    )
    summary_of_mine = bo.MerchantSummaryRequest(merchant_id=world.merchant_id, **days())
    assert (
        refusal(stub(world).GetMerchantSummary, summary_of_mine, metadata=theirs)[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
    foreign_terminal = bo.TransactionReportRequest(terminal_id=terminal.terminal_id, **days())
    assert (
        refusal(stub(world).ListTransactions, foreign_terminal, metadata=theirs)[0]
        == grpc.StatusCode.NOT_FOUND
    )
    (shop,) = world.server.core.admin.list_locations(world.merchant_id)
    at_my_shop = bo.TransactionReportRequest(location_ids=[shop.location_id], **days())
    in_shop = stub(world).ListTransactions(at_my_shop, metadata=mine, timeout=20).transactions
    assert [(t.transaction_id, t.location_name) for t in in_shop] == [("sale-1", "Shop")]
    assert refusal(stub(world).ListTransactions, at_my_shop, metadata=theirs)[0] == grpc.StatusCode.NOT_FOUND
    their_view = bo.TerminalRequest(terminal_id=terminal.terminal_id)
    assert refusal(stub(world).ListDayCloses, their_view, metadata=theirs) == (
        grpc.StatusCode.NOT_FOUND,
        f"terminal_id '{terminal.terminal_id}': no such terminal of yours",
    )


def test_signing_in_wrong_or_without_a_session_is_refused_alike(world: World) -> None:
    wrong_password = refusal(stub(world).SignIn, portal.SignInRequest(email=MERCHANT_EMAIL, password="guess"))
    unknown_email = refusal(
        stub(world).SignIn, portal.SignInRequest(email="nobody@example.test", password="x")
    )
    assert wrong_password == unknown_email == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
    assert refusal(stub(world).SignIn, portal.SignInRequest(email=MERCHANT_EMAIL)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "password is missing",
    )
    request = bo.TransactionReportRequest(**days())
    for metadata in (
        (),
        (("authorization", "Bearer ps_made-up"),),
        (("authorization", "Bearer test-admin-token"),),
    ):
        assert refusal(stub(world).ListTransactions, request, metadata=metadata) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "no portal session: sign in again",
        )


def test_a_session_ends_when_signed_out_or_expired_and_its_token_is_not_stored(
    world: World, portal_clock: PortalClock
) -> None:
    request = bo.ListTerminalsRequest()
    signed_out = sign_in(world)
    stub(world).SignOut(portal.SignOutRequest(), metadata=signed_out)
    assert (
        refusal(stub(world).ListTerminals, request, metadata=signed_out)[0] == grpc.StatusCode.UNAUTHENTICATED
    )
    expiring = sign_in(world)
    assert stub(world).ListTerminals(request, metadata=expiring).terminals
    token = expiring[0][1].removeprefix("Bearer ")
    with world.server.core.store.engine.connect() as conn:
        stored = [tuple(row) for row in conn.execute(select(portal_sessions))]
    assert stored and all(token not in str(row) for row in stored)
    # A session of 2 s waited out cost the test 2.1 s; the portal's clock is moved past a long one.
    portal_clock.ahead = dt.timedelta(seconds=PORTAL_SESSION_S + 1)
    assert (
        refusal(stub(world).ListTerminals, request, metadata=expiring)[0] == grpc.StatusCode.UNAUTHENTICATED
    )


def test_wrong_sign_ins_lock_the_address_known_or_not_for_a_while(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def attempt(email: str, password: str) -> tuple[grpc.StatusCode, str]:
        return refusal(stub(world).SignIn, portal.SignInRequest(email=email, password=password))

    wrong = (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
    assert attempt(MERCHANT_EMAIL, "guess-1") == wrong
    sign_in(world)  # a right sign-in starts the count again
    for email in (MERCHANT_EMAIL, "nobody@example.test"):
        assert [attempt(email, f"guess-{n}") for n in range(3)] == [wrong] * 3
        code, details = attempt(email, "guess-4")
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith("too many wrong sign-ins for this address: try again after ")
        if email == MERCHANT_EMAIL:  # locked, even the right password is refused
            assert refusal(sign_in, world)[1].startswith("too many wrong sign-ins")
    # Once the lock is over it works. With a lock of 1 s waited out in real time, it ran out before the
    # right password was tried (CI, -n 3: each password check takes a few hundred ms on a busy
    # machine), and a lock of 4 s cost the test 4 s: the lock is long, and the clock the password
    # checks read (core.passwords) is moved past it.
    past_the_lock = dt.timedelta(seconds=SIGN_IN_LOCK_S + 1)
    monkeypatch.setattr(world.server.core.passwords, "_now", lambda: utc_now() + past_the_lock)
    assert sign_in(world)


@pytest.mark.production_hash_cost  # checks long enough (scrypt n=2**14) for the eight to overlap
def test_a_flood_of_sign_ins_is_turned_away_not_queued_on_the_switchs_threads(world: World) -> None:
    """sign_ins_concurrent_max is 2 by default; eight at once cannot all be checked."""
    start = threading.Barrier(8)
    answers: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            stub(world).SignIn(
                portal.SignInRequest(email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD), timeout=20
            )
            answers.append("OK")
        except grpc.RpcError as error:
            answers.append(f"{error.code().name}: {error.details()}")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    turned_away = [a for a in answers if a != "OK"]
    assert "OK" in answers and turned_away, answers
    assert set(turned_away) == {"RESOURCE_EXHAUSTED: too many sign-ins at once; try again shortly"}
    assert sign_in(world)  # once the flood is over, signing in works


def test_wrong_passwords_at_the_portal_lock_terminal_activation_too(world: World) -> None:
    def activate(password: str) -> tuple[grpc.StatusCode, str]:
        request = pb.ActivateRequest(
            merchant_email=MERCHANT_EMAIL, password=password, device_name="A77-new", location="Shop"
        )
        return refusal(pb_grpc.TerminalStub(world.channel).Activate, request, timeout=20)

    assert activate("guess")[1] == "e-mail or password is wrong"  # activation counts, too
    for n in range(2):  # sign_in_tries_max=3 in this module's fixture
        refusal(stub(world).SignIn, portal.SignInRequest(email=MERCHANT_EMAIL, password=f"guess-{n}"))
    code, details = activate(MERCHANT_PASSWORD)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith("too many wrong sign-ins for this address")
