"""sim-report.json against what the README and sim-guide.md say it holds (session 22 audit)."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from terminal_sim.auditor import audit, format_report
from terminal_sim.bridge import BridgeStatistics
from terminal_sim.config import FaultShares, FlowWeights, SimConfig
from terminal_sim.fleet import FleetResult
from terminal_sim.ledger import CardBalance, LedgerSnapshot, LedgerTransaction
from terminal_sim.metrics import Recorder
from terminal_sim.records import Exchange, Operation, Outcome
from terminal_sim.report import report_json
from tests.sim.fake_switch import terminal

TERMINAL, CARD = "trm_1", "card_a"


def test_the_json_report_holds_the_audits_violations() -> None:
    """README: the report ends with "the audit: every violation on its own `AUDIT <kind>:` line
    ... and the counters. `sim-out/sim-report.json` holds the same plus a per-second timeline".
    The JSON holds the counters only: which transaction and card went wrong is lost with the
    terminal's scrollback."""
    exchanges = [
        Exchange(
            TERMINAL,
            "t1",
            Operation.redeem,
            Outcome.answered,
            card_id=CARD,
            amount_requested_minor=500,
            amount_approved_minor=500,
            response_code="00",
        ),
    ]
    snapshot = LedgerSnapshot(
        {CARD: CardBalance(CARD, f"card:{CARD}", 2_000, 2_000)},
        (),
        {(TERMINAL, "t1"): LedgerTransaction(TERMINAL, "t1", "redeem", "approved", CARD, 500)},
    )
    report = audit(exchanges, snapshot)
    assert not report.clean
    recorder = Recorder(0.0, window_s=1.0)
    recorder.record("redeem", 0.002, "00", Outcome.answered, 0.5)
    recorder.finish(1.0)
    fleet = FleetResult(
        recorder.statistics(),
        recorder.statistics(),
        tuple(exchanges),
        BridgeStatistics(1, 1, 0, 1, 1, 0),
        0,
        1,
    )
    document = json.dumps(report_json(fleet, report))
    violation_lines = [line for line in format_report(report) if line.startswith("AUDIT ")]
    assert violation_lines
    for finding in report.findings:
        assert finding.detail in document, f"{finding.line()!r} is not in sim-report.json"


LOADS_ONLY = FlowWeights(redeem=0, balance=0, load=1, refund=0, cancel=0)


@pytest.mark.trio
async def test_abandoned_and_timed_out_requests_show_in_the_response_codes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """sim-guide.md, Reading the report: "response codes per operation (... a grpc status name
    where the call failed; `timed_out`/`abandoned` for faults)". Ten loads, each abandoned
    (the terminal switched off 0-4 ms after sending, the switch answering in 10 ms); then ten
    that time out the same way. Neither fault shows in the codes (nor in errors, nor in
    outcomes): the faulty sends are not measured at all (terminal.py, measure=False)."""
    for faults, expected in (
        (FaultShares(abandon=1.0), "abandoned"),
        (FaultShares(timeout=1.0), "timed_out"),
    ):
        config = SimConfig(faults=faults, flows=LOADS_ONLY, fault_timeout_s_max=0.004)
        recorder = Recorder(trio.current_time())
        sim = terminal(config, 0.010, recorder)
        for _ in range(10):
            await sim.load_flow(trio.current_time())
        recorder.finish(trio.current_time())
        faulty = [
            e for e in sim.context.exchanges if e.operation is Operation.load and e.outcome.value == expected
        ]
        assert len(faulty) >= 5
        codes = recorder.statistics().response_codes.get("load", {})
        assert codes.get(expected, 0) == len(faulty), codes


@pytest.mark.trio
async def test_a_day_close_is_counted_as_closed_not_as_an_approval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A day close and a TransactionStatus were recorded as "00": in approved_per_s with the
    # transactions (the bench's 200 day closes). Now codes of their own.
    recorder = Recorder(trio.current_time())
    sim = terminal(SimConfig(flows=LOADS_ONLY), 0.001, recorder)
    await sim.day_close()
    recorder.finish(trio.current_time())
    snapshot = recorder.statistics()
    assert snapshot.response_codes["day_close"] == {"closed": 1}
    assert snapshot.approved == 0
