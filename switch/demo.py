"""Demo data for an empty database, so the switch can be tried at once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, select

from switch import credentials
from switch.core import SwitchCore
from switch.domain.programmes import ProgrammeKind
from switch.secret_files import write_secret
from switch.store.schema import employees, locations, merchants

log = logging.getLogger(__name__)

DEMO_EMAIL = "demo@txswitch.example"
DEMO_PASSWORD = "demo-merchant"
DEMO_LOCATION = "Main Street"
DEMO_EMPLOYEE_NUMBER = "1001"
DEMO_EMPLOYEE_PIN = "1234"
# A user with a portal login of its own, who sees the reports and redeems in the web back office.
DEMO_CASHIER_EMAIL = "cashier@txswitch.example"
DEMO_CASHIER_PASSWORD = "demo-cashier"
DEMO_CASHIER_NUMBER = "1002"
DEMO_CASHIER_PIN = "4321"
DEMO_CARDS_PER_PROGRAMME = 5
DEMO_CARD_LOAD_MINOR = 5_000


def ensure_demo_data(core: SwitchCore, data_dir: Path) -> bool:
    """Create the demo programmes, merchant and cards on an empty database; True if created."""
    with core.store.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(merchants)).scalar_one():
            return False
    admin = core.admin
    gift = admin.create_programme(
        "Stadsbon cadeaukaart",
        ProgrammeKind.gift,
        "EUR",
        "600001",
        balance_max_minor=50_000,
        payout_interval_weeks=4,
    )
    benefit = admin.create_programme(
        "Voordeelkaart Taxi",
        ProgrammeKind.benefit,
        "EUR",
        "600002",
        balance_max_minor=50_000,
        copay=(180, 500),
        funder_name="Stad Gent",
    )
    merchant = admin.create_merchant("Demo Bakery", DEMO_EMAIL, DEMO_PASSWORD)
    admin.add_location(merchant, DEMO_LOCATION, "Main Street 1, 9000 Gent")
    admin.add_employee(merchant, DEMO_EMPLOYEE_NUMBER, "Demo Manager", DEMO_EMPLOYEE_PIN, "manager")
    admin.add_employee(
        merchant,
        DEMO_CASHIER_NUMBER,
        "Demo Cashier",
        DEMO_CASHIER_PIN,
        "cashier",
        email=DEMO_CASHIER_EMAIL,
        password=DEMO_CASHIER_PASSWORD,
    )
    admin.join_programme(merchant, gift, 250)
    admin.join_programme(merchant, benefit, 0)
    cards: list[dict[str, str]] = []
    for programme_id in (gift, benefit):
        programme = core.store.programme(programme_id)
        for _ in range(DEMO_CARDS_PER_PROGRAMME):
            card = admin.issue_card(programme_id, DEMO_CARD_LOAD_MINOR)
            cards.append(
                {"programme": programme.name, "card_number": card.card_number, "qr_payload": card.qr_payload}
            )
    path = data_dir / "demo_cards.json"
    write_secret(path, json.dumps(cards, indent=2))  # card numbers: owner only from the first byte
    log.info("demo data created; demo card numbers are in %s", path)
    return True


def demo_lines(core: SwitchCore, data_dir: Path) -> list[str]:
    """What `txswitch serve` prints about the demo data, when there is any: the logins, the
    merchant's id (reports and the backoffice ask for it), its locations, the employees' PINs and
    the cards; as they are now, not as the first start made them (a location renamed, a password or
    PIN changed since). A changed password or PIN is not printed, nor the one that was checked."""
    cards = data_dir / "demo_cards.json"
    with core.store.engine.connect() as conn:
        query = select(merchants.c.merchant_id, merchants.c.password_hash).where(
            merchants.c.email == DEMO_EMAIL
        )
        merchant = conn.execute(query).first()
        if merchant is None or not cards.exists():
            return []
        merchant_id = str(merchant.merchant_id)
        names = conn.execute(
            select(locations.c.name).where(locations.c.merchant_id == merchant_id).order_by(locations.c.name)
        ).scalars()
        at = ", ".join(names) or "no location"
        staff = {
            row.employee_number: row
            for row in conn.execute(
                select(employees).where(
                    employees.c.merchant_id == merchant_id,
                    employees.c.employee_number.in_((DEMO_EMPLOYEE_NUMBER, DEMO_CASHIER_NUMBER)),
                )
            )
        }
    # The one scrypt check of the start (about 70 ms); the cashier's login is judged by its count
    # of changes, its PINs by PBKDF2 (a few ms each).
    if credentials.password_matches(DEMO_PASSWORD, merchant.password_hash):
        merchant_login = f"{DEMO_EMAIL} / {DEMO_PASSWORD}"
    else:
        merchant_login = f"{DEMO_EMAIL} / password changed since the first start"
    manager = _employee_pin(
        staff.get(DEMO_EMPLOYEE_NUMBER), DEMO_EMPLOYEE_NUMBER, "manager", DEMO_EMPLOYEE_PIN
    )
    cashier = _employee_pin(staff.get(DEMO_CASHIER_NUMBER), DEMO_CASHIER_NUMBER, "cashier", DEMO_CASHIER_PIN)
    return [
        f"demo merchant: {merchant_login} (merchant_id {merchant_id}) at {at}; cards in {cards}",
        f"demo employees (PINs for refunds and cancels): {manager}, {cashier}",
        f"demo portal user (cashier: reports, web back-office redemption): "
        f"{_cashier_login(staff.get(DEMO_CASHIER_NUMBER))}",
    ]


def _employee_pin(row: Row[Any] | None, number: str, role: str, pin: str) -> str:
    if row is None:
        return f"{number} {role} (removed)"
    if not row.active:
        return f"{number} {role} (deactivated)"
    if not credentials.employee_pin_matches(pin, row.pin_hash):
        return f"{number} {role} (PIN changed since the first start)"
    return f"{number} {role} PIN {pin}"


def _cashier_login(row: Row[Any] | None) -> str:
    if row is None or not row.active or not row.email or not row.password_hash:
        return f"none ({DEMO_CASHIER_EMAIL} was removed, deactivated or has no portal login)"
    if row.login_changes == 0:  # a new password counts one (switch.passwords.store_password)
        return f"{row.email} / {DEMO_CASHIER_PASSWORD}"
    return f"{row.email} / {DEMO_CASHIER_PASSWORD} as set at the first start, if unchanged"
