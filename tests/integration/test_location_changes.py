"""A location's new name or address: asked in the portal, in force once the operator approves it."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import SwitchMetrics
from ops.runtime import wire_metrics
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import portal_pb2 as portal
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.location_changes import LocationChanges
from tests.integration.harness import ADMIN_TOKEN, MERCHANT_EMAIL, MERCHANT_PASSWORD, World, world_fixture
from tests.integration.test_portal import refusal, sign_in, stub

CASHIER_EMAIL, CASHIER_PASSWORD = "till@example.test", "till-password-1"


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from world_fixture(request, tmp_path)


def shop(world: World) -> bo.Location:
    """The location of the world's terminals (whatever its name now), as the portal lists it."""
    mine = sign_in(world)
    listed = stub(world).ListLocations(bo.ListLocationsRequest(), metadata=mine, timeout=20).locations
    (location,) = [place for place in listed if place.terminals > 0]
    return location


def ask(
    world: World, location_id: str, name: str, address: str = "", session: tuple[tuple[str, str], ...] = ()
) -> bo.LocationChange:
    """As the merchant's owner; in the session given, or a new one."""
    request = bo.AskLocationChangeRequest(location_id=location_id, name=name, address=address)
    metadata = session or sign_in(world)
    asked: bo.LocationChange = stub(world).AskLocationChange(request, metadata=metadata, timeout=20)
    return asked


def decide(world: World, change_id: str, approve: bool, reason: str = "") -> bo.LocationChange:
    request = bo.DecideLocationChangeRequest(change_id=change_id, approve=approve, reason=reason)
    decided: bo.LocationChange = world.backoffice.DecideLocationChange(
        request, metadata=world.admin_metadata, timeout=20
    )
    return decided


def changes(world: World, status: str = "") -> list[tuple[str, str, str]]:
    listed = world.backoffice.ListLocationChanges(
        bo.ListLocationChangesRequest(status=status), metadata=world.admin_metadata, timeout=20
    )
    return [(c.change_id, c.name, c.status) for c in listed.changes]


def activate(world: World, location: str) -> grpc.StatusCode:
    request = pb.ActivateRequest(
        merchant_email=MERCHANT_EMAIL, password=MERCHANT_PASSWORD, device_name="A77-new", location=location
    )
    try:
        pb_stub = world.terminals[0].stub
        pb_stub.Activate(request, timeout=20)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_an_asked_rename_waits_for_the_operator_then_terminals_and_reports_follow(world: World) -> None:
    terminal = world.terminals[0]
    card = world.issue(1_000)
    assert terminal.redeem(card, 100, "before").response_code == "00"
    before = shop(world)
    asked = ask(world, before.location_id, "  Shop Centre ", "Markt 1, Utrecht")
    assert (asked.status, asked.name, asked.address) == ("pending", "Shop Centre", "Markt 1, Utrecht")
    assert (asked.from_name, asked.asked_by, asked.decided_at) == ("Shop", MERCHANT_EMAIL, "")
    waiting = shop(world)
    assert (waiting.name, waiting.address, waiting.pending_change.change_id) == ("Shop", "", asked.change_id)
    assert activate(world, "Shop Centre") == grpc.StatusCode.INVALID_ARGUMENT  # no such location yet
    assert changes(world, "pending") == [(asked.change_id, "Shop Centre", "pending")]

    approved = decide(world, asked.change_id, approve=True)
    assert approved.status == "approved" and approved.decided_at
    after = shop(world)
    assert (after.location_id, after.name, after.address) == (
        before.location_id,
        "Shop Centre",
        "Markt 1, Utrecht",
    )
    assert after.terminals == before.terminals == 2 and not after.HasField("pending_change")
    assert terminal.redeem(card, 100, "after").response_code == "00"  # its terminals work on
    today = dt.datetime.now(dt.UTC).date()  # the report counts the shop's days: a day either side
    report = world.backoffice.ListTransactions(
        bo.TransactionReportRequest(
            from_date=str(today - dt.timedelta(days=1)), to_date=str(today + dt.timedelta(days=1))
        ),
        metadata=world.admin_metadata,
        timeout=20,
    )
    assert {(t.transaction_id, t.location_name) for t in report.transactions} == {
        ("before", "Shop Centre"),
        ("after", "Shop Centre"),
    }
    assert activate(world, "Shop Centre") == grpc.StatusCode.OK
    assert refusal(
        world.backoffice.DecideLocationChange,
        bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=False, reason="too late"),
        metadata=world.admin_metadata,
    ) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"change '{asked.change_id}' is approved already",
    )


def test_a_rejection_needs_a_reason_which_the_merchant_sees_and_changes_nothing(world: World) -> None:
    asked = ask(world, shop(world).location_id, "Shop", "Nowhere 0")
    no_reason = bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=False, reason="  ")
    assert refusal(world.backoffice.DecideLocationChange, no_reason, metadata=world.admin_metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "reason is missing: the merchant sees why its change was rejected",
    )
    rejected = decide(world, asked.change_id, approve=False, reason="the address does not exist")
    assert (rejected.status, rejected.reason) == ("rejected", "the address does not exist")
    assert (shop(world).address, shop(world).HasField("pending_change")) == ("", False)
    seen = stub(world).ListLocationChanges(
        bo.ListLocationChangesRequest(), metadata=sign_in(world), timeout=20
    )
    assert [(c.status, c.reason) for c in seen.changes] == [("rejected", "the address does not exist")]


def test_a_new_ask_replaces_the_one_still_pending(world: World) -> None:
    location_id = shop(world).location_id
    first = ask(world, location_id, "Shop One")
    second = ask(world, location_id, "Shop Two")
    assert {c[0]: c[2] for c in changes(world)} == {first.change_id: "replaced", second.change_id: "pending"}
    assert shop(world).pending_change.name == "Shop Two"
    replaced = bo.DecideLocationChangeRequest(change_id=first.change_id, approve=True)
    assert refusal(world.backoffice.DecideLocationChange, replaced, metadata=world.admin_metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"change '{first.change_id}' is replaced already",
    )
    assert shop(world).name == "Shop"


@pytest.mark.parametrize(
    ("name", "address", "status", "named"),
    [
        ("", "Markt 1", grpc.StatusCode.INVALID_ARGUMENT, "location name is empty"),
        ("x" * 121, "", grpc.StatusCode.INVALID_ARGUMENT, "location name is 121 characters; at most 120"),
        (
            "Shop",
            "y" * 251,
            grpc.StatusCode.INVALID_ARGUMENT,
            "location address is 251 characters; at most 250",
        ),
        ("Shop", "", grpc.StatusCode.INVALID_ARGUMENT, "location 'Shop' has this name and address already"),
        ("Station", "", grpc.StatusCode.ALREADY_EXISTS, "location 'Station' exists already"),
    ],
)
def test_a_bad_ask_is_refused_naming_what_and_stores_nothing(
    world: World, name: str, address: str, status: grpc.StatusCode, named: str
) -> None:
    world.server.core.admin.add_location(world.merchant_id, "Station")
    request = bo.AskLocationChangeRequest(location_id=shop(world).location_id, name=name, address=address)
    assert refusal(stub(world).AskLocationChange, request, metadata=sign_in(world)) == (status, named)
    assert changes(world) == []


def test_only_an_owner_or_manager_asks_and_only_for_its_own_locations(world: World) -> None:
    admin = world.server.core.admin
    admin.add_employee(
        world.merchant_id,
        "2001",
        "Till",
        "1357",
        role="cashier",
        email=CASHIER_EMAIL,
        password=CASHIER_PASSWORD,
    )
    other = admin.create_merchant("Other", "other-shop@example.test", "pw-other-1")
    elsewhere = admin.add_location(other, "Elsewhere")
    request = bo.AskLocationChangeRequest(location_id=shop(world).location_id, name="Mine now")
    cashier = sign_in(world, CASHIER_EMAIL, CASHIER_PASSWORD)
    assert (
        refusal(stub(world).AskLocationChange, request, metadata=cashier)[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
    theirs = bo.AskLocationChangeRequest(location_id=elsewhere, name="Mine now")
    assert refusal(stub(world).AskLocationChange, theirs, metadata=sign_in(world)) == (
        grpc.StatusCode.NOT_FOUND,
        f"location_id '{elsewhere}': no such location of merchant '{world.merchant_id}'",
    )
    other_merchant = bo.AskLocationChangeRequest(merchant_id=other, location_id=elsewhere, name="Mine now")
    assert refusal(stub(world).AskLocationChange, other_merchant, metadata=sign_in(world))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert changes(world) == []
    no_location = bo.AskLocationChangeRequest(name="Mine now")
    assert refusal(stub(world).AskLocationChange, no_location, metadata=sign_in(world)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "location_id is missing",
    )
    nobody = bo.ListLocationChangesRequest(merchant_id="mer_nobody")
    assert refusal(world.backoffice.ListLocationChanges, nobody, metadata=world.admin_metadata) == (
        grpc.StatusCode.NOT_FOUND,
        "merchant_id 'mer_nobody': no such merchant",
    )
    unknown_status = bo.ListLocationChangesRequest(status="done")
    assert refusal(world.backoffice.ListLocationChanges, unknown_status, metadata=world.admin_metadata)[
        1
    ] == ("status 'done' is not one of pending, approved, rejected, replaced")
    assert [
        c.status
        for c in stub(world)
        .ListLocationChanges(bo.ListLocationChangesRequest(), metadata=cashier, timeout=20)
        .changes
    ] == []  # every login sees the list


def test_a_name_taken_since_the_ask_is_refused_at_approval_and_the_change_stays_pending(world: World) -> None:
    asked = ask(world, shop(world).location_id, "Kiosk")
    world.server.core.admin.add_location(world.merchant_id, "Kiosk")
    approving = bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=True)
    assert refusal(world.backoffice.DecideLocationChange, approving, metadata=world.admin_metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "location 'Kiosk' exists already; reject this change, or ask for another name",
    )
    assert changes(world) == [(asked.change_id, "Kiosk", "pending")]
    assert shop(world).name == "Shop"


def at_once(count: int, call: Callable[[int], object]) -> list[object]:
    """Each call on its own thread, all released together; what each returned or raised."""
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = call(index)
        except grpc.RpcError as error:
            results[index] = error.code()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_decisions_at_the_same_moment_settle_a_change_once(world: World) -> None:
    asked = ask(world, shop(world).location_id, "Shop Centre")
    results = at_once(8, lambda i: decide(world, asked.change_id, approve=i % 2 == 0, reason=f"operator {i}"))
    decided = [r for r in results if isinstance(r, bo.LocationChange)]
    assert len(decided) == 1
    assert results.count(grpc.StatusCode.FAILED_PRECONDITION) == 7
    assert changes(world) == [(asked.change_id, "Shop Centre", decided[0].status)]
    assert shop(world).name == ("Shop Centre" if decided[0].status == "approved" else "Shop")


def test_asks_at_the_same_moment_leave_one_change_pending(world: World) -> None:
    location_id = shop(world).location_id
    session = sign_in(world)
    results = at_once(6, lambda i: ask(world, location_id, f"Shop {i}", session=session))
    assert all(isinstance(r, bo.LocationChange) for r in results)
    statuses = [status for _, _, status in changes(world)]
    assert sorted(statuses) == ["pending"] + ["replaced"] * 5


def test_the_operator_decides_from_the_command_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = ask(world, shop(world).location_id, "Shop Centre")
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    common = ["admin", "--data-dir", str(tmp_path), "--target", world.server.address]
    assert cli.main([*common, "list-location-changes", "status=pending"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"][0]["change_id"] == asked.change_id
    decided = [*common, "decide-location-change", f"change_id={asked.change_id}", "approve=false"]
    assert cli.main([*decided, "reason=no such street"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "rejected"
    assert cli.main([*decided, "reason=twice"]) == 1
    assert "is rejected already" in capsys.readouterr().err


def waiting_metrics(metrics: SwitchMetrics) -> tuple[float, float]:
    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }
    return found["txswitch_location_changes_pending"], found[
        "txswitch_location_change_oldest_pending_seconds"
    ]


def test_changes_waiting_for_the_operator_show_in_the_metrics_until_decided(world: World) -> None:
    metrics = SwitchMetrics()
    database_reads = wire_metrics(metrics, world.server.core, gateway=None)
    try:
        changes_waiting_show_until_decided(world, metrics)
    finally:
        database_reads.stop()


def changes_waiting_show_until_decided(world: World, metrics: SwitchMetrics) -> None:
    assert waiting_metrics(metrics) == (0.0, 0.0)
    station = world.server.core.admin.add_location(world.merchant_id, "Station")
    first = ask(world, shop(world).location_id, "Shop Centre")
    ask(world, station, "Station Square")
    pending, oldest_s = waiting_metrics(metrics)
    assert pending == 2.0 and 0.0 <= oldest_s < 60.0
    # Three hours on, the oldest ask has waited three hours.
    asked_at = dt.datetime.fromisoformat(first.asked_at)
    later = LocationChanges(world.server.core.store.engine, lambda: asked_at + dt.timedelta(hours=3))
    assert later.waiting().pending == 2 and later.waiting().oldest_waited_s == pytest.approx(3 * 3600, abs=1)
    decide(world, first.change_id, approve=True)
    assert waiting_metrics(metrics)[0] == 1.0
    (left,) = changes(world, "pending")
    decide(world, left[0], approve=False, reason="no such address")
    assert waiting_metrics(metrics) == (0.0, 0.0)


MANAGER_EMAIL, MANAGER_PASSWORD = "office@example.test", "office-password-1"
# What the owner did to the manager who asked, and whether the operator may still approve the ask:
# an ask stands for the login that made it, as long as that login may still ask (an audit found the
# ask of a user deactivated since was approved, and took effect).
# A login changed since the ask (a new password, address or role, or a deactivation, even undone) no
# longer vouches for it: the owner who takes a stolen login back with a new password rather than a
# deactivation must not then approve what the thief asked (session 23 audit).
LOGIN_CHANGED = "whose login changed since (a new password, address or role, or a deactivation)"
ASKER_CHANGES = [
    ("deactivated", [{"active": False}], "deactivated since"),
    ("made a cashier", [{"role": "cashier"}], "now a cashier, who may not ask for location changes"),
    ("deactivated, then reactivated", [{"active": False}, {"active": True}], LOGIN_CHANGED),
    ("given a new password", [{"password": "taken-back-password-2"}], LOGIN_CHANGED),
    ("given a new address", [{"email": "office-2@example.test"}], LOGIN_CHANGED),
    ("made a cashier, then a manager again", [{"role": "cashier"}, {"role": "manager"}], LOGIN_CHANGED),
    ("renamed", [{"name": "Renamed"}], ""),
    ("given a new PIN", [{"pin": "8642"}], ""),
]


@pytest.mark.parametrize(("what", "updates", "refused"), ASKER_CHANGES, ids=[row[0] for row in ASKER_CHANGES])
def test_an_ask_of_a_user_who_may_no_longer_ask_is_not_approved(
    world: World, what: str, updates: list[dict[str, object]], refused: str
) -> None:
    admin = world.server.core.admin
    admin.add_employee(
        world.merchant_id,
        "3001",
        "Office",
        "2468",
        role="manager",
        email=MANAGER_EMAIL,
        password=MANAGER_PASSWORD,
    )
    manager = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    asked = ask(world, shop(world).location_id, "Shop by the Station", session=manager)
    for update in updates:
        admin.update_employee(world.merchant_id, "3001", **update)  # type: ignore[arg-type]
    approving = bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=True)
    if not refused:
        assert decide(world, asked.change_id, approve=True).status == "approved", what
        assert shop(world).name == "Shop by the Station"
        return
    assert refusal(world.backoffice.DecideLocationChange, approving, metadata=world.admin_metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"change {asked.change_id!r} was asked by user 3001 ({MANAGER_EMAIL}), {refused}: "
        "reject it, or have an owner or manager ask again",
    )
    assert changes(world) == [(asked.change_id, "Shop by the Station", "pending")]
    assert shop(world).name == "Shop"
    assert (
        decide(world, asked.change_id, approve=False, reason="asked by a former manager").status == "rejected"
    )


def test_an_ask_made_before_the_user_changed_its_own_password_is_not_approved(world: World) -> None:
    """The user who finds its login stolen changes its password in the portal (so does a reset by
    mailed code: both store the password alike); what the thief asked before stays unapproved."""
    world.server.core.admin.add_employee(
        world.merchant_id,
        "3001",
        "Office",
        "2468",
        role="manager",
        email=MANAGER_EMAIL,
        password=MANAGER_PASSWORD,
    )
    thief = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    asked = ask(world, shop(world).location_id, "Shop of the Thief", session=thief)
    owner_of_login = sign_in(world, MANAGER_EMAIL, MANAGER_PASSWORD)
    stub(world).ChangePassword(
        portal.ChangePasswordRequest(current_password=MANAGER_PASSWORD, new_password="mine-again-3"),
        metadata=owner_of_login,
        timeout=20,
    )
    approving = bo.DecideLocationChangeRequest(change_id=asked.change_id, approve=True)
    assert refusal(world.backoffice.DecideLocationChange, approving, metadata=world.admin_metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"change {asked.change_id!r} was asked by user 3001 ({MANAGER_EMAIL}), {LOGIN_CHANGED}: "
        "reject it, or have an owner or manager ask again",
    )
    assert shop(world).name == "Shop"
    again = ask(world, shop(world).location_id, "Shop by the Station", session=owner_of_login)
    assert decide(world, again.change_id, approve=True).status == "approved"
