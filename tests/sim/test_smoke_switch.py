"""A few seconds of the simulator against a real SwitchServer: the audit must be clean."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from switch.server import SwitchServer
from switch.store.schema import employees, merchants
from terminal_sim.auditor import format_report
from terminal_sim.config import FaultShares, ShopLogin, SimConfig
from terminal_sim.records import MONEY_OPERATIONS, Operation, Outcome
from terminal_sim.session import SwitchTarget, provision, run_and_audit


@pytest.fixture
def switch_target(running_switch: SwitchServer) -> SwitchTarget:
    return SwitchTarget(
        running_switch.address, running_switch.admin_token, running_switch.settings.effective_database_url
    )


@pytest.mark.trio
async def test_short_run_with_faults_audits_clean(switch_target: SwitchTarget) -> None:
    config = SimConfig(
        terminals=6,
        duration_s=2.0,
        think_time_ms_mean=20.0,
        day_length_s=1.0,  # two shop days, as before in 3 s
        faults=FaultShares(duplicate=0.1, timeout=0.1, abandon=0.05),
        wrong_pin_share=0.1,
        seed=7,
        channels=2,
    )
    setup = await provision(switch_target, config, card_count=30, start_minor=2_000)
    outcome = await run_and_audit(switch_target, config, setup, progress=None)
    assert outcome.audit is not None
    lines = format_report(outcome.audit)
    assert outcome.audit.clean, "\n".join(lines)
    exchanges = outcome.fleet.exchanges
    money = [e for e in exchanges if e.operation in MONEY_OPERATIONS]
    assert any(e.approved for e in money)
    assert any(e.outcome is not Outcome.answered for e in money)  # the faults did happen
    # The simulator loads in whole 5.00 steps, as the benefit programme's cards must be loaded.
    loads = [e for e in money if e.operation is Operation.load and e.outcome is Outcome.answered]
    assert loads and not [e for e in loads if e.response_code == "13"]
    assert any(e.approved for e in loads)
    assert outcome.audit.transactions_checked == len({(e.terminal_id, e.transaction_id) for e in money})


def test_terminals_take_the_employees_in_turn() -> None:
    login = ShopLogin("shop@example", "pw", "Street", "1001", "1111", more_employees=(("1002", "2222"),))
    assert [login.employee_of(index) for index in range(4)] == [
        ("1001", "1111"),
        ("1002", "2222"),
        ("1001", "1111"),
        ("1002", "2222"),
    ]
    assert ShopLogin("shop@example", "pw", "Street", "1001", "1111").employee_of(7) == ("1001", "1111")


@pytest.mark.trio
@pytest.mark.parametrize("employee_count", [1, 2])
async def test_each_employee_is_locked_only_by_the_terminals_it_signs_for(
    running_switch: SwitchServer, switch_target: SwitchTarget, employee_count: int
) -> None:
    """Every refund and cancel with a wrong PIN: each employee in use is locked, and only once."""
    config = SimConfig(
        terminals=2,
        duration_s=2.0,  # an employee is locked after 3 wrong PINs; refunds and cancels are 15% of flows
        think_time_ms_mean=10.0,
        wrong_pin_share=1.0,
        employees=employee_count,
        seed=3,
        channels=1,
    )
    setup = await provision(switch_target, config, card_count=10, start_minor=2_000)
    outcome = await run_and_audit(switch_target, config, setup, progress=None)
    assert outcome.audit is not None and outcome.audit.clean
    with running_switch.core.store.engine.connect() as conn:
        provisioned = conn.execute(
            select(func.count())
            .select_from(employees.join(merchants, merchants.c.merchant_id == employees.c.merchant_id))
            .where(merchants.c.email == setup.login.merchant_email)
        ).scalar_one()
    assert provisioned == employee_count
    assert running_switch.core.employee_pins.lockouts == employee_count


@pytest.mark.trio
async def test_the_simulator_provisions_again_and_again_on_one_switch(switch_target: SwitchTarget) -> None:
    """`make sim` run again on the same `make run` switch, with the same default seed: each run
    creates its own programmes. Their card prefixes came from the seeded generator, so every run
    tried the same 8 prefixes, and the fifth found them all taken ("no free card prefix found")."""
    config = SimConfig(terminals=1, duration_s=1.0, seed=7, channels=1)
    runs = [await provision(switch_target, config, card_count=1, start_minor=2_000) for _ in range(6)]
    prefixes = {setup.cards[0].card_number[:6] for setup in runs}
    assert len(prefixes) == len(runs), prefixes
