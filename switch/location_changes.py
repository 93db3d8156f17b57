"""A location's name or address changed by the merchant, in force once the operator has checked it.

The A77 guide's portal lets the merchant change its locations' details, which the provider then
checks before they count (know your customer): an asked change waits as `pending` until the
backoffice approves it (the location takes the new name and address) or rejects it with a
reason the merchant sees. A new ask for the same location replaces the one still waiting. A
location keeps its id, so its terminals, reports and logo follow it through a rename.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from switch.admin import AdminConflictError, AdminError, AdminStateError, location_fields, new_id
from switch.domain.employees import PortalRight, may
from switch.domain.quoting import quoted
from switch.store.engine import writing
from switch.store.key_locks import lock_name
from switch.store.repository import as_utc
from switch.store.schema import employees, location_changes, locations

REASON_MAX = 250  # the column's length
LISTED_MAX = 500  # changes in one list, newest first


class ChangeStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    replaced = "replaced"  # a later ask for the same location took its place


@dataclass(frozen=True, slots=True)
class LocationChange:
    change_id: str
    location_id: str
    merchant_id: str
    name: str  # asked
    address: str
    from_name: str  # the location's when it was asked
    from_address: str
    status: ChangeStatus
    asked_by: str  # the portal login's address, or "backoffice"
    asked_at: dt.datetime  # UTC
    decided_at: dt.datetime | None
    reason: str  # why it was rejected


@dataclass(frozen=True, slots=True)
class ChangesWaiting:
    """The changes waiting for the operator's check, for metrics and the console."""

    pending: int
    oldest_waited_s: float  # 0 when none waits


class LocationChanges:
    def __init__(self, engine: Engine, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._now = now

    def ask(
        self,
        merchant_id: str,
        location_id: str,
        name: str,
        address: str,
        asked_by: str,
        asked_by_employee_id: str | None = None,
        asked_by_login_changes: int | None = None,
    ) -> LocationChange:
        """A change of the merchant's location, pending; AdminError naming what is wrong, LookupError
        for a location the merchant does not have. `asked_by_employee_id`: the user whose portal
        login asks, if it is a user's, and `asked_by_login_changes` that user's login changes as its
        session saw them (see `decide`)."""
        name, address = location_fields(name, address)
        change_id = new_id("lch")
        with writing(self._engine) as conn:
            lock_name(conn, f"location-change:{location_id}")
            now_name, now_address = _location_of(conn, merchant_id, location_id)
            if (name, address) == (now_name, now_address):
                raise AdminError(f"location {quoted(now_name)} has this name and address already")
            taken = conn.execute(
                select(locations.c.location_id).where(
                    locations.c.merchant_id == merchant_id,
                    locations.c.name == name,
                    locations.c.location_id != location_id,
                )
            ).first()
            if taken is not None:
                raise AdminConflictError(f"location {quoted(name)} exists already")
            conn.execute(
                update(location_changes)
                .where(
                    location_changes.c.location_id == location_id,
                    location_changes.c.status == ChangeStatus.pending,
                )
                .values(status=ChangeStatus.replaced, decided_at=self._now())
            )
            conn.execute(
                insert(location_changes),
                {
                    "change_id": change_id,
                    "location_id": location_id,
                    "merchant_id": merchant_id,
                    "name": name,
                    "address": address,
                    "from_name": now_name,
                    "from_address": now_address,
                    "status": ChangeStatus.pending,
                    "asked_by": asked_by,
                    "asked_by_employee_id": asked_by_employee_id,
                    "asked_by_login_changes": asked_by_login_changes,
                    "asked_at": self._now(),
                    "decided_at": None,
                    "reason": "",
                },
            )
            return _change_of(conn, change_id)

    def list(self, merchant_id: str = "", status: str = "") -> list[LocationChange]:
        """Newest first, at most LISTED_MAX; of one merchant or every one, in one status or any."""
        query = select(location_changes).order_by(location_changes.c.asked_at.desc()).limit(LISTED_MAX)
        if merchant_id:
            query = query.where(location_changes.c.merchant_id == merchant_id)
        if status:
            query = query.where(location_changes.c.status == _status(status))
        with self._engine.connect() as conn:
            return [_change(row) for row in conn.execute(query)]

    def waiting(self) -> ChangesWaiting:
        pending = location_changes.c.status == ChangeStatus.pending
        query = select(func.count(), func.min(location_changes.c.asked_at)).where(pending)
        with self._engine.connect() as conn:
            count, oldest = conn.execute(query).one()
        waited_s = (self._now() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return ChangesWaiting(int(count), max(waited_s, 0.0))

    def decide(self, change_id: str, approve: bool, reason: str = "") -> LocationChange:
        """Approve (the location takes the asked name and address) or reject with a reason.
        AdminStateError when the change was decided already, its name is now taken, or (approval
        only) the user who asked was deactivated or may no longer ask since, or its login changed
        since; LookupError for an unknown change."""
        reason = reason.strip()
        if not approve and not reason:
            raise AdminError("reason is missing: the merchant sees why its change was rejected")
        if len(reason) > REASON_MAX:
            raise AdminError(f"reason is {len(reason)} characters; at most {REASON_MAX}")
        status = ChangeStatus.approved if approve else ChangeStatus.rejected
        with writing(self._engine) as conn:
            decided = conn.execute(
                update(location_changes)
                .where(
                    location_changes.c.change_id == change_id,
                    location_changes.c.status == ChangeStatus.pending,
                )
                .values(status=status, decided_at=self._now(), reason=reason)
            )
            change = _change_of(conn, change_id)
            if decided.rowcount != 1:
                raise AdminStateError(f"change {quoted(change_id)} is {change.status.value} already")
            if approve:
                _refuse_gone_asker(conn, change)
                _rename(conn, change)
        return change


def _refuse_gone_asker(conn: Connection, change: LocationChange) -> None:
    """AdminStateError (which rolls the decision back) when a user asked and is no longer one who
    may: an ask stands for the login that made it, and the merchant took that login's rights away
    (a manager who left, a stolen login taken back with a deactivation or a new password). Read under
    the decision's write lock (SQLite) or the user's row lock (PostgreSQL), so a deactivation or a
    new password at the same moment is seen or waits."""
    asked = location_changes.c
    asker, login_changes = conn.execute(
        select(asked.asked_by_employee_id, asked.asked_by_login_changes).where(
            asked.change_id == change.change_id
        )
    ).one()
    if asker is None:
        return  # the merchant's own account, or the backoffice
    user = conn.execute(
        select(employees.c.employee_number, employees.c.active, employees.c.role, employees.c.login_changes)
        .where(employees.c.employee_id == asker)
        .with_for_update()
    ).first()
    if user is None:
        why = "no longer a user"
    elif not user.active:
        why = "deactivated since"
    elif not may(user.role, PortalRight.settings):
        why = f"now a {user.role}, who may not ask for location changes"
    elif login_changes is not None and user.login_changes != login_changes:
        # Even undone (reactivated, the role given back): whoever held the login when it asked may
        # not be whom the merchant trusts with it now.
        why = "whose login changed since (a new password, address or role, or a deactivation)"
    else:
        return
    number = user.employee_number if user is not None else asker
    raise AdminStateError(
        f"change {quoted(change.change_id)} was asked by user {number} ({change.asked_by}), {why}: "
        "reject it, or have an owner or manager ask again"
    )


def _rename(conn: Connection, change: LocationChange) -> None:
    """The approved name and address; AdminStateError (which rolls the decision back) if taken."""
    try:
        conn.execute(
            update(locations)
            .where(locations.c.location_id == change.location_id)
            .values(name=change.name, address=change.address)
        )
    except IntegrityError:  # the (merchant, name) key: another location took the name since
        raise AdminStateError(
            f"location {quoted(change.name)} exists already; reject this change, or ask for another name"
        ) from None


def _location_of(conn: Connection, merchant_id: str, location_id: str) -> tuple[str, str]:
    found = conn.execute(
        select(locations.c.name, locations.c.address).where(
            locations.c.location_id == location_id, locations.c.merchant_id == merchant_id
        )
    ).first()
    if found is None:
        raise LookupError(
            f"location_id {quoted(location_id)}: no such location of merchant {quoted(merchant_id)}"
        )
    return found.name, found.address


def _change_of(conn: Connection, change_id: str) -> LocationChange:
    row = conn.execute(select(location_changes).where(location_changes.c.change_id == change_id)).first()
    if row is None:
        raise LookupError(f"change_id {quoted(change_id)}: no such location change")
    return _change(row)


def _status(value: str) -> ChangeStatus:
    try:
        return ChangeStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in ChangeStatus)
        raise AdminError(f"status {quoted(value)} is not one of {known}") from None


def _change(row: Any) -> LocationChange:
    return LocationChange(
        change_id=row.change_id,
        location_id=row.location_id,
        merchant_id=row.merchant_id,
        name=row.name,
        address=row.address,
        from_name=row.from_name,
        from_address=row.from_address,
        status=ChangeStatus(row.status),
        asked_by=row.asked_by,
        asked_at=as_utc(row.asked_at),
        decided_at=as_utc(row.decided_at) if row.decided_at is not None else None,
        reason=row.reason,
    )
