"""Forgotten portal passwords: a one-time code by e-mail through a real SMTP server (aiosmtpd),
then a new password with it. Real gRPC server on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from switch.admin import ONLINE_TOP_UP_EMAIL
from switch.store.schema import password_resets
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, start_world, world_fixture
from tests.integration.test_portal import days, refusal, sign_in, stub
from tests.integration.test_receipts import Mailbox, body_of, mail_server, wait_until

NEW_PASSWORD = "a-new-password"
USER_EMAIL, USER_PASSWORD = "till@example.test", "till-password"
CODE = re.compile(r"Your reset code: (\S+)")


@pytest.fixture(params=["sqlite", "postgres"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[World, Mailbox]]:
    with mail_server() as (port, mailbox):
        settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "sign_in_tries_max": 3}
        for world in world_fixture(request, tmp_path, terminals=0, **settings):
            yield world, mailbox


def ask(world: World, email: str) -> str:
    answer = stub(world).RequestPasswordReset(portal.RequestPasswordResetRequest(email=email), timeout=20)
    return str(answer.message)


def reset(world: World, code: str, password: str = NEW_PASSWORD) -> portal.ResetPasswordResponse:
    answer: portal.ResetPasswordResponse = stub(world).ResetPassword(
        portal.ResetPasswordRequest(code=code, new_password=password), timeout=20
    )
    return answer


def next_code(mailbox: Mailbox, count: int) -> str:
    """The code of the count-th mail, once it arrived."""
    wait_until(lambda: len(mailbox.messages) >= count)
    found = CODE.search(body_of(mailbox.messages[count - 1]))
    assert found is not None
    return found.group(1)


def stored_reset_values(world: World) -> list[str]:
    """Every value of every stored reset row, as text."""
    with world.server.core.store.engine.connect() as conn:
        return [str(value) for row in conn.execute(select(password_resets)) for value in row]


def test_a_merchant_who_forgot_the_password_sets_a_new_one_with_the_mailed_code(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    before = sign_in(world)
    answered = ask(world, MERCHANT_EMAIL.upper())
    assert answered == "if a login has this address, a reset code is on its way to it"
    code = next_code(mailbox, 1)
    assert mailbox.envelopes[0][1] == [MERCHANT_EMAIL]
    assert code not in " ".join(stored_reset_values(world))  # only its hash is kept
    assert reset(world, code).email == MERCHANT_EMAIL
    assert refusal(sign_in, world)[0] == grpc.StatusCode.UNAUTHENTICATED  # the old password is gone
    assert sign_in(world, MERCHANT_EMAIL, NEW_PASSWORD)
    code_again, details = refusal(reset, world, code, "yet-another")
    assert (code_again, details) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "the reset code is unknown, used or expired: ask for a new one",
    )
    # Every session of the login ended: whoever knew the old password is out.
    gone = refusal(stub(world).ListTerminals, bo.ListTerminalsRequest(), metadata=before)
    assert gone[0] == grpc.StatusCode.UNAUTHENTICATED


def test_an_unknown_address_is_answered_the_same_and_mails_nothing(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    assert ask(world, "nobody-here@example.test") == ask(world, MERCHANT_EMAIL)
    next_code(mailbox, 1)
    assert [to for _, to in mailbox.envelopes] == [[MERCHANT_EMAIL]]
    with world.server.core.store.engine.connect() as conn:
        assert len(conn.execute(select(password_resets)).all()) == 1  # the merchant's


def test_the_switchs_own_address_is_answered_as_unknown_and_mails_nothing(
    shop: tuple[World, Mailbox],
) -> None:
    """The online top-up merchant's login (made at the first top-up) has an address in .invalid:
    a code mailed there reaches nobody, and a mail server's bounce would show it exists."""
    world, mailbox = shop
    world.server.core.online_top_up_terminal(world.benefit_programme)  # its merchant exists now
    unknown = ask(world, "nobody-here@example.test")
    assert ask(world, ONLINE_TOP_UP_EMAIL.upper()) == unknown == ask(world, MERCHANT_EMAIL)
    next_code(mailbox, 1)  # one mailer thread, in order: one to the switch's would be before it
    assert [to for _, to in mailbox.envelopes] == [[MERCHANT_EMAIL]]
    with world.server.core.store.engine.connect() as conn:
        assert len(conn.execute(select(password_resets)).all()) == 1  # the merchant's


def test_a_user_resets_its_own_login_but_not_after_a_new_address_or_deactivation(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    admin = world.server.core.admin
    admin.add_employee(world.merchant_id, "61", "Till", "1357", email=USER_EMAIL, password=USER_PASSWORD)
    ask(world, USER_EMAIL)
    assert reset(world, next_code(mailbox, 1)).email == USER_EMAIL
    owner_session = sign_in(world)  # the merchant's own login is another login: untouched
    session = stub(world).SignIn(portal.SignInRequest(email=USER_EMAIL, password=NEW_PASSWORD), timeout=20)
    assert session.role == "cashier"
    ask(world, USER_EMAIL)
    moved = next_code(mailbox, 2)
    admin.update_employee(world.merchant_id, "61", email="till.new@example.test")
    assert refusal(reset, world, moved)[0] == grpc.StatusCode.UNAUTHENTICATED  # went to the old address
    ask(world, "till.new@example.test")
    deactivated = next_code(mailbox, 3)
    admin.update_employee(world.merchant_id, "61", active=False)
    assert refusal(reset, world, deactivated)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=owner_session).terminals == []


def test_codes_expire_are_limited_per_hour_and_a_reset_lifts_the_sign_in_lock(
    shop: tuple[World, Mailbox],
) -> None:
    world, mailbox = shop
    for _ in range(3):
        assert refusal(sign_in, world, MERCHANT_EMAIL, "wrong-guess")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert "too many wrong sign-ins" in refusal(sign_in, world)[1]  # locked, even with the right one
    for _ in range(4):  # the fourth in the hour mails nothing and answers the same
        ask(world, MERCHANT_EMAIL)
    world.server.core.admin.add_employee(
        world.merchant_id, "62", "Till", "1357", email=USER_EMAIL, password=USER_PASSWORD
    )
    ask(world, USER_EMAIL)  # mailed after anything a fourth ask would have mailed
    codes = [next_code(mailbox, count) for count in (1, 2, 3, 4)]
    assert [to for _, to in mailbox.envelopes] == [[MERCHANT_EMAIL]] * 3 + [[USER_EMAIL]]
    assert reset(world, codes[1]).email == MERCHANT_EMAIL
    assert sign_in(world, MERCHANT_EMAIL, NEW_PASSWORD)  # the lock went with the reset
    assert refusal(reset, world, codes[2])[0] == grpc.StatusCode.UNAUTHENTICATED  # the others too


def test_asks_at_the_same_moment_mail_no_more_than_the_hours_limit(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    asks = 12
    with ThreadPoolExecutor(max_workers=asks) as pool:
        list(pool.map(lambda _: ask(world, MERCHANT_EMAIL), range(asks)))
    assert len(stored_reset_values(world)) == 3 * len(password_resets.c)  # 3 codes stored, not more
    next_code(mailbox, 3)
    time.sleep(0.5)  # a fourth mail would be on its way by now
    assert len(mailbox.messages) == 3


def test_an_expired_code_is_refused(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    ask(world, MERCHANT_EMAIL)
    code = next_code(mailbox, 1)
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(password_resets).values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert refusal(reset, world, code)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert sign_in(world, MERCHANT_EMAIL, MERCHANT_PASSWORD)  # nothing changed


def test_bad_requests_name_what_is_wrong_and_change_nothing(shop: tuple[World, Mailbox]) -> None:
    world, mailbox = shop
    ask(world, MERCHANT_EMAIL)
    code = next_code(mailbox, 1)
    for call, args, named in (
        (ask, ("",), "email is missing"),
        (reset, ("", NEW_PASSWORD), "code is missing"),
        (reset, (code, ""), "new_password is missing"),
        (reset, (code, "short"), "new_password: password must have 6 or more characters"),
    ):
        assert refusal(call, world, *args) == (grpc.StatusCode.INVALID_ARGUMENT, named)
    assert refusal(reset, world, "pr_made-up")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert reset(world, code).email == MERCHANT_EMAIL  # the refusals used nothing up
    report = stub(world).ListTransactions(
        bo.TransactionReportRequest(**days()), metadata=sign_in(world, MERCHANT_EMAIL, NEW_PASSWORD)
    )
    assert not report.transactions


def test_without_a_mail_server_a_reset_is_refused_as_off(tmp_path: Path) -> None:
    world = start_world(tmp_path, "", terminals=0)
    try:
        assert refusal(ask, world, MERCHANT_EMAIL) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "password reset by e-mail is off: this switch has no mail server",
        )
    finally:
        world.channel.close()
        world.server.stop()


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
