"""A merchant's users at the portal: their own logins, what each role may do, and their passwords.

Real gRPC server on loopback, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import portal_pb2_grpc as portal_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.admin import AdminError
from switch.config import Settings
from switch.demo import DEMO_CASHIER_EMAIL, DEMO_CASHIER_PASSWORD, DEMO_EMAIL, DEMO_PASSWORD, demo_lines
from switch.server import SwitchServer
from switch.store.schema import employees, merchants, terminals
from tests.integration.harness import MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture
from tests.integration.test_portal import days, refusal, sign_in, stub

CASHIER_EMAIL, CASHIER_PASSWORD = "cashier@example.test", "till-password"
MANAGER_EMAIL, MANAGER_PASSWORD = "manager@example.test", "office-password"


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path, sign_in_tries_max=3, sign_in_lock_s=1)


def add_user(world: World, number: str, role: str, email: str = "", password: str = "") -> bo.Employee:
    request = bo.AddEmployeeRequest(
        merchant_id=world.merchant_id,
        employee_number=number,
        name=f"{role.title()} {number}",
        pin="1357",
        role=role,
        email=email,
        password=password,
    )
    added: bo.Employee = world.backoffice.AddEmployee(request, metadata=world.admin_metadata, timeout=20)
    return added


def activate(world: World, email: str, password: str, device_name: str) -> pb.ActivateResponse:
    request = pb.ActivateRequest(
        merchant_email=email, password=password, device_name=device_name, location="Shop"
    )
    answer: pb.ActivateResponse = pb_grpc.TerminalStub(world.channel).Activate(request, timeout=20)
    return answer


def terminal_count(world: World) -> int:
    with world.server.core.store.engine.connect() as conn:
        return len(conn.execute(select(terminals.c.terminal_id)).all())


def test_a_cashier_sees_the_reports_and_nothing_else(world: World) -> None:
    added = add_user(world, "21", "cashier", CASHIER_EMAIL.upper(), CASHIER_PASSWORD)
    assert (added.email, added.portal_login) == (CASHIER_EMAIL, True)
    assert CASHIER_PASSWORD not in str(added)
    assert world.terminals[0].redeem(world.issue(5_000), 1_000, "sale-1").response_code == "00"
    session = stub(world).SignIn(
        portal.SignInRequest(email=CASHIER_EMAIL, password=CASHIER_PASSWORD), timeout=20
    )
    assert (session.merchant_id, session.role, session.user_name) == (
        world.merchant_id,
        "cashier",
        "Cashier 21",
    )
    mine = (("authorization", f"Bearer {session.token}"),)
    report = stub(world).ListTransactions(bo.TransactionReportRequest(**days()), metadata=mine, timeout=20)
    assert [t.transaction_id for t in report.transactions] == ["sale-1"]
    devices = stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=mine, timeout=20)
    assert len(devices.terminals) == 2
    terminal_id = world.terminals[0].terminal_id
    assert (
        stub(world).ListDayCloses(bo.DayCloseListRequest(terminal_id=terminal_id), metadata=mine).reports
        == []
    )
    # Payouts and users are not a cashier's.
    for call, request in (
        (stub(world).GetMerchantSummary, bo.MerchantSummaryRequest(**days())),
        (stub(world).ListEmployees, bo.ListEmployeesRequest()),
        (stub(world).UpdateEmployee, bo.UpdateEmployeeRequest(employee_number="21", role="manager")),
        (stub(world).AddEmployee, bo.AddEmployeeRequest(employee_number="22", name="Eve", pin="2468")),
    ):
        code, details = refusal(call, request, metadata=mine, timeout=20)
        assert (code, details.split(" may not")[0]) == (grpc.StatusCode.PERMISSION_DENIED, "a cashier")
    listed = world.backoffice.ListEmployees(
        bo.ListEmployeesRequest(merchant_id=world.merchant_id), metadata=world.admin_metadata
    )
    assert {(e.employee_number, e.role) for e in listed.employees} >= {("21", "cashier")}
    assert "22" not in {e.employee_number for e in listed.employees}
    # Nor is activating a terminal: refused for the role, and no terminal made.
    before = terminal_count(world)
    code, details = refusal(activate, world, CASHIER_EMAIL, CASHIER_PASSWORD, "A77-till")
    assert (code, details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "a cashier may not activate terminals; ask a manager",
    )
    assert terminal_count(world) == before


def test_a_manager_does_what_the_merchant_does_for_its_own_merchant_only(world: World) -> None:
    add_user(world, "31", "manager", MANAGER_EMAIL, MANAGER_PASSWORD)
    mine = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    summary = stub(world).GetMerchantSummary(bo.MerchantSummaryRequest(**days()), metadata=mine, timeout=20)
    assert summary.merchant_id == world.merchant_id
    request = bo.AddEmployeeRequest(
        employee_number="32", name="Kim", pin="2468", email=CASHIER_EMAIL, password=CASHIER_PASSWORD
    )
    added = stub(world).AddEmployee(request, metadata=mine, timeout=20)
    assert (added.merchant_id, added.role, added.portal_login) == (world.merchant_id, "cashier", True)
    assert sign_in(world, CASHIER_EMAIL, CASHIER_PASSWORD)
    other = world.server.core.admin.create_merchant("Bakery", "bakery@example.test", "bakery-password")
    code, _ = refusal(stub(world).ListEmployees, bo.ListEmployeesRequest(merchant_id=other), metadata=mine)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    activated = activate(world, MANAGER_EMAIL, MANAGER_PASSWORD, "A77-office")
    assert activated.merchant_name == "Shop"
    with world.server.core.store.engine.connect() as conn:
        owner = conn.execute(
            select(terminals.c.merchant_id).where(terminals.c.terminal_id == activated.terminal_id)
        ).scalar_one()
    assert owner == world.merchant_id


def secret_hashes(world: World) -> dict[str, tuple[str, str | None]]:
    with world.server.core.store.engine.connect() as conn:
        rows = conn.execute(
            select(employees.c.employee_number, employees.c.pin_hash, employees.c.password_hash)
        )
        return {number: (pin_hash, password_hash) for number, pin_hash, password_hash in rows}


def test_a_manager_adds_and_changes_cashiers_only_the_merchants_account_managers_too(world: World) -> None:
    add_user(world, "51", "manager", MANAGER_EMAIL, MANAGER_PASSWORD)
    add_user(world, "52", "manager", "second@example.test", "second-password")
    add_user(world, "53", "cashier")
    manager = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    second = sign_in(world, "second@example.test", "second-password")
    hashes_before = secret_hashes(world)
    take_over = bo.UpdateEmployeeRequest(employee_number="52", password="taken-over")
    for request in (
        take_over,  # another manager's login: signing in as them
        bo.UpdateEmployeeRequest(employee_number="52", active=False),
        bo.UpdateEmployeeRequest(employee_number="52", pin="0000"),
        bo.UpdateEmployeeRequest(employee_number="51", name="Me"),  # a manager is not its own manager
        bo.UpdateEmployeeRequest(employee_number="53", role="manager"),  # nor makes one
    ):
        code, details = refusal(stub(world).UpdateEmployee, request, metadata=manager)
        assert code == grpc.StatusCode.PERMISSION_DENIED, request
        assert details.startswith("a manager may not add or change a "), details
    new_manager = bo.AddEmployeeRequest(employee_number="54", name="Sam", pin="2468", role="manager")
    code, details = refusal(stub(world).AddEmployee, new_manager, metadata=manager)
    assert (code, details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "a manager may not add or change a manager; the merchant's own account can",
    )
    # Nothing changed: the second manager still signs in, with its sessions, PIN, role and name.
    assert stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=second).terminals
    listed = {
        e.employee_number: (e.name, e.role, e.active)
        for e in world.backoffice.ListEmployees(
            bo.ListEmployeesRequest(merchant_id=world.merchant_id), metadata=world.admin_metadata
        ).employees
    }
    assert listed["51"] == ("Manager 51", "manager", True) and listed["52"] == ("Manager 52", "manager", True)
    assert listed["53"] == ("Cashier 53", "cashier", True) and "54" not in listed
    assert secret_hashes(world) == hashes_before
    # A cashier is the manager's to change; the merchant's own account changes anyone.
    changed = stub(world).UpdateEmployee(
        bo.UpdateEmployeeRequest(employee_number="53", pin="8642", active=False), metadata=manager
    )
    assert (changed.role, changed.active) == ("cashier", False)
    owner = sign_in(world)
    stub(world).UpdateEmployee(take_over, metadata=owner)
    assert sign_in(world, "second@example.test", "taken-over")
    promoted = stub(world).UpdateEmployee(
        bo.UpdateEmployeeRequest(employee_number="53", role="manager"), metadata=owner
    )
    assert promoted.role == "manager"
    assert stub(world).AddEmployee(new_manager, metadata=owner).role == "manager"


def test_deactivating_or_re_rolling_a_user_ends_their_sessions_at_once(world: World) -> None:
    add_user(world, "41", "manager", MANAGER_EMAIL, MANAGER_PASSWORD)
    first = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    second = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    owner = sign_in(world)
    stub(world).UpdateEmployee(bo.UpdateEmployeeRequest(employee_number="41", role="cashier"), metadata=owner)
    for session in (first, second):
        code, _ = refusal(
            stub(world).GetMerchantSummary, bo.MerchantSummaryRequest(**days()), metadata=session
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
    lowered = stub(world).SignIn(portal.SignInRequest(email=MANAGER_EMAIL, password=MANAGER_PASSWORD))
    assert lowered.role == "cashier"
    stub(world).UpdateEmployee(bo.UpdateEmployeeRequest(employee_number="41", active=False), metadata=owner)
    gone = (("authorization", f"Bearer {lowered.token}"),)
    assert refusal(stub(world).ListTerminals, bo.ListTerminalsRequest(), metadata=gone)[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    code, details = refusal(
        stub(world).SignIn, portal.SignInRequest(email=MANAGER_EMAIL, password=MANAGER_PASSWORD)
    )
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
    # The merchant's own session is untouched.
    assert stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=owner).terminals


@pytest.mark.parametrize("who", ["owner", "user"])
def test_a_login_changes_its_own_password(world: World, who: str) -> None:
    email, password = (MERCHANT_EMAIL, MERCHANT_PASSWORD)
    if who == "user":
        email, password = MANAGER_EMAIL, MANAGER_PASSWORD
        add_user(world, "51", "manager", email, password)
    here, elsewhere = sign_in(world, email, password), sign_in(world, email, password)

    def change(current: str, new: str) -> None:
        request = portal.ChangePasswordRequest(current_password=current, new_password=new)
        stub(world).ChangePassword(request, metadata=here, timeout=20)

    code, details = refusal(change, password, "short")
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "new_password: password must have 6 or more characters",
    )
    code, details = refusal(change, "not-the-password", "a-new-password")
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong")
    assert refusal(change, "", "a-new-password")[1] == "current_password is missing"
    assert sign_in(world, email, password)  # nothing changed so far
    change(password, "a-new-password")
    assert stub(world).ListTerminals(bo.ListTerminalsRequest(), metadata=here).terminals  # this session stays
    code, _ = refusal(stub(world).ListTerminals, bo.ListTerminalsRequest(), metadata=elsewhere)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert refusal(sign_in, world, email, password)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert sign_in(world, email, "a-new-password")
    with world.server.core.store.engine.connect() as conn:
        stored = [*conn.execute(select(merchants.c.password_hash)).scalars()]
        stored += [h for h in conn.execute(select(employees.c.password_hash)).scalars() if h is not None]
    assert all(h.startswith("scrypt$") and "a-new-password" not in h for h in stored)


def test_a_bad_login_for_a_user_is_refused_naming_what_and_changes_nothing(world: World) -> None:
    add_user(world, "61", "cashier")  # a PIN for the terminal, no portal login
    cases = [
        (
            bo.AddEmployeeRequest(employee_number="62", name="A", pin="1111", email=CASHIER_EMAIL),
            "both email and",
        ),
        (
            bo.AddEmployeeRequest(employee_number="62", name="A", pin="1111", password="pw-123456"),
            "both email and",
        ),
        (
            bo.AddEmployeeRequest(
                employee_number="62", name="A", pin="1111", email="a b@x.test", password="pw-12345"
            ),
            "email: the part before @",
        ),
        (
            bo.AddEmployeeRequest(
                employee_number="62", name="A", pin="1111", email=CASHIER_EMAIL, password="pw"
            ),
            "password must have 6 or more characters",
        ),
        (bo.UpdateEmployeeRequest(employee_number="61", password="pw-123456"), "needs the user's email"),
        (bo.UpdateEmployeeRequest(employee_number="61", email="no-at-sign"), "email must look like"),
    ]
    owner = sign_in(world)
    for request, problem in cases:
        call = (
            stub(world).AddEmployee
            if isinstance(request, bo.AddEmployeeRequest)
            else stub(world).UpdateEmployee
        )
        code, details = refusal(call, request, metadata=owner, timeout=20)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and problem in details, (request, details)
        assert "pw-12345" not in details
    taken = bo.AddEmployeeRequest(
        employee_number="62", name="A", pin="1111", email=MERCHANT_EMAIL, password="pw-12345"
    )
    assert refusal(stub(world).AddEmployee, taken, metadata=owner, timeout=20) == (
        grpc.StatusCode.ALREADY_EXISTS,
        f"email '{MERCHANT_EMAIL}' is taken by another login",
    )
    listed = stub(world).ListEmployees(bo.ListEmployeesRequest(), metadata=owner)
    assert {e.employee_number: (e.email, e.portal_login) for e in listed.employees}["61"] == ("", False)
    assert "62" not in {e.employee_number for e in listed.employees}
    # The address of a user is no merchant's either.
    add_user(world, "63", "cashier", CASHIER_EMAIL, CASHIER_PASSWORD)
    with pytest.raises(AdminError, match=f"^email '{CASHIER_EMAIL}' is taken by another login$"):
        world.server.core.admin.create_merchant("Copy", CASHIER_EMAIL, "copy-password")
    code, details = refusal(
        stub(world).UpdateEmployee,
        bo.UpdateEmployeeRequest(employee_number="61", email=CASHIER_EMAIL),
        metadata=owner,
    )
    assert (code, details) == (
        grpc.StatusCode.ALREADY_EXISTS,
        f"email '{CASHIER_EMAIL}' is taken by another login",
    )


def test_a_merchant_and_a_user_taking_one_address_at_the_same_moment_get_it_once(world: World) -> None:
    admin = world.server.core.admin
    addresses = [f"race{n}@example.test" for n in range(6)]

    def take(address: str, as_merchant: bool) -> bool:
        try:
            if as_merchant:
                admin.create_merchant("Racer", address, "racer-password")
            else:
                admin.add_employee(
                    world.merchant_id, address, "Racer", "2468", email=address, password="racer-pw"
                )
        except AdminError as error:
            assert str(error) in (
                f"email '{address}' is taken by another login",
                f"a merchant with e-mail '{address}' exists",
            )
            return False
        return True

    attempts = [(address, as_merchant) for address in addresses for as_merchant in (True, False)]
    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        taken = list(pool.map(lambda attempt: take(*attempt), attempts))
    assert [taken[i] + taken[i + 1] for i in range(0, len(taken), 2)] == [1] * len(addresses)
    with world.server.core.store.engine.connect() as conn:
        merchant_logins = conn.execute(
            select(merchants.c.email).where(merchants.c.email.in_(addresses))
        ).scalars()
        user_logins = conn.execute(
            select(employees.c.email).where(employees.c.email.in_(addresses))
        ).scalars()
        assert sorted([*merchant_logins, *user_logins]) == addresses  # each address signs in one login


def test_each_call_reads_the_users_state_again_not_just_the_session(world: World) -> None:
    add_user(world, "71", "manager", MANAGER_EMAIL, MANAGER_PASSWORD)
    session = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    assert stub(world).ListEmployees(bo.ListEmployeesRequest(), metadata=session).employees
    # Changed behind the portal's back (another node's admin tool, an operator's SQL): the
    # session row is still there, yet the next call sees the user as it is now.
    with world.server.core.store.engine.begin() as conn:
        conn.execute(employees.update().where(employees.c.employee_number == "71").values(role="cashier"))
    code, details = refusal(stub(world).ListEmployees, bo.ListEmployeesRequest(), metadata=session)
    assert (code, details) == (grpc.StatusCode.PERMISSION_DENIED, "a cashier may not see or change users")
    with world.server.core.store.engine.begin() as conn:
        conn.execute(employees.update().where(employees.c.employee_number == "71").values(active=False))
    assert refusal(stub(world).ListTerminals, bo.ListTerminalsRequest(), metadata=session)[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_the_demo_data_of_make_run_has_a_merchant_and_a_cashier_who_sign_in(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, grpc_port=0, metrics_port=-1, console_port=-1, demo_data=True)
    server = SwitchServer(settings)
    server.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            portal_stub = portal_grpc.PortalStub(channel)
            owner = portal_stub.SignIn(
                portal.SignInRequest(email=DEMO_EMAIL, password=DEMO_PASSWORD), timeout=20
            )
            cashier = portal_stub.SignIn(
                portal.SignInRequest(email=DEMO_CASHIER_EMAIL, password=DEMO_CASHIER_PASSWORD), timeout=20
            )
            assert (owner.role, cashier.role) == ("owner", "cashier")
            assert owner.merchant_id == cashier.merchant_id and cashier.merchant_name == "Demo Bakery"
            mine = (("authorization", f"Bearer {cashier.token}"),)
            assert (
                portal_stub.ListTransactions(
                    bo.TransactionReportRequest(**days()), metadata=mine
                ).transactions
                == []
            )
        assert (tmp_path / "demo_cards.json").stat().st_mode & 0o077 == 0  # card numbers: owner only
        # What `make run` prints names the merchant's id, which reports and the backoffice ask for,
        # and the employees whose PINs refund and cancel.
        printed = "\n".join(demo_lines(server.core, tmp_path))
        assert f"(merchant_id {owner.merchant_id})" in printed
        assert "1001 manager PIN 1234" in printed and "1002 cashier PIN 4321" in printed
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("who", "email", "password"),
    [
        ("the merchant, wrong password", MERCHANT_EMAIL, "not-the-password"),
        ("a cashier, wrong password", CASHIER_EMAIL, "not-the-password"),
        ("no such login", "nobody@example.test", CASHIER_PASSWORD),
    ],
)
def test_a_wrong_sign_in_says_the_same_to_every_login(
    world: World, who: str, email: str, password: str
) -> None:
    # Before, a cashier was told "merchant e-mail or password is wrong": not the merchant's, and
    # the same words for all reveal nothing about which logins exist.
    add_user(world, "61", "cashier", CASHIER_EMAIL, CASHIER_PASSWORD)
    code, details = refusal(stub(world).SignIn, portal.SignInRequest(email=email, password=password))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "e-mail or password is wrong"), who
