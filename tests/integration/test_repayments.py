"""A merchant paying back by bank transfer what it owes a programme, through the backoffice on
SQLite and PostgreSQL: a balanced entry giving back the commission on the part of the debt it
clears, the payable brought to zero and never above, once per request id, and shown in the
merchant's summary."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import grpc
import pytest
from sqlalchemy import delete, func, select, update

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.admin import AdminUnavailableError
from switch.domain import ledger
from switch.domain.money import Money
from switch.domain.programmes import repayment_transfer_minor
from switch.repayments import REPAYMENT_JUDGEMENTS_MAX, RepaymentAsked, _judged_and_written, record_repayment
from switch.store.journal import RepaymentRecord, Write, WriteResult
from switch.store.schema import accounts, journal_entries, merchant_programmes, merchant_repayments, postings
from tests.integration.harness import ADMIN_TOKEN, MERCHANT_EMAIL, World, new_txn

OWED_MINOR = 1_000  # what the merchant owes after each test's set-up
TRANSFER_MINOR = 975  # what it transfers to clear it: 2.5 % commission on it given back


def balance(world: World, account_id: str) -> int:
    with world.server.core.store.engine.connect() as conn:
        found = conn.execute(select(accounts.c.balance_minor).where(accounts.c.account_id == account_id))
        return int(found.scalar_one())


def payable(world: World) -> int:
    return balance(world, ledger.merchant_payable_account(world.merchant_id, world.gift_programme))


def repayment_entries(world: World) -> list[dict[str, int]]:
    """Each repayment entry's postings, by account."""
    with world.server.core.store.engine.connect() as conn:
        found = conn.execute(
            select(postings.c.entry_id, postings.c.account_id, postings.c.amount_minor)
            .join(journal_entries, journal_entries.c.entry_id == postings.c.entry_id)
            .where(journal_entries.c.kind == ledger.REPAYMENT_KIND)
            .order_by(postings.c.entry_id)
        ).all()
    entries: dict[int, dict[str, int]] = {}
    for entry_id, account_id, amount_minor in found:
        entries.setdefault(int(entry_id), {})[account_id] = int(amount_minor)
    return list(entries.values())


def owe(world: World, sale_minor: int = OWED_MINOR) -> None:
    """The merchant is paid a 10.00 sale (less 2.5 % commission: 9.75), then refunds it: it owes
    the gift programme 10.00."""
    terminal, sale = world.terminals[0], new_txn()
    assert terminal.redeem(world.issue(10_000), sale_minor, sale).response_code == "00"
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id="week-1")
    assert world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20).payouts
    assert terminal.refund(sale, sale_minor).response_code == "00"
    assert payable(world) == -sale_minor


def set_commission(world: World, basis_points: int) -> None:
    """The merchant's commission on the gift programme (no call changes it once joined)."""
    with world.server.core.store.engine.begin() as conn:
        conn.execute(
            update(merchant_programmes)
            .where(
                merchant_programmes.c.merchant_id == world.merchant_id,
                merchant_programmes.c.programme_id == world.gift_programme,
            )
            .values(commission_basis_points=basis_points)
        )


def programme_balances(world: World) -> tuple[int, int]:
    """The gift programme's commission and payouts accounts."""
    programme = world.gift_programme
    return (
        balance(world, ledger.commission_account(programme)),
        balance(world, ledger.payout_clearing_account(programme)),
    )


def to_transfer(world: World) -> int:
    """What the merchant summary says the merchant transfers to clear what it owes the programme."""
    today = dt.datetime.now(world.server.core.report_zone).date().isoformat()
    request = bo.MerchantSummaryRequest(merchant_id=world.merchant_id, from_date=today, to_date=today)
    summary = world.backoffice.GetMerchantSummary(request, metadata=world.admin_metadata, timeout=20)
    (shown,) = [p for p in summary.programmes if p.programme_id == world.gift_programme]
    return int(shown.to_transfer.amount_minor)


def owes_line(world: World, settlement_id: str = "week-2") -> str:
    """A payout run's line for the merchant owing the gift programme."""
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id=settlement_id)
    answer = world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20)
    (skipped,) = answer.skipped
    assert skipped.merchant_id == world.merchant_id and not answer.payouts
    return skipped.reason


def repay(world: World, amount_minor: int = TRANSFER_MINOR, **fields: object) -> bo.Repayment:
    values: dict[str, object] = {
        "request_id": "repay-1",
        "merchant": MERCHANT_EMAIL,
        "programme_id": world.gift_programme,
        "amount": pb.Amount(amount_minor=amount_minor, currency="EUR"),
        "reference": "NL-BANK-2026-0042",
    }
    values.update(fields)
    # None: the field not sent
    request = bo.RecordRepaymentRequest(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
    answer: bo.Repayment = world.backoffice.RecordRepayment(
        request, metadata=world.admin_metadata, timeout=20
    )
    return answer


def test_a_repayment_of_what_is_owed_brings_the_payable_to_zero_with_a_balanced_entry(world: World) -> None:
    owe(world)
    clearing = ledger.payout_clearing_account(world.gift_programme)
    commission = ledger.commission_account(world.gift_programme)
    answer = repay(world, merchant=world.merchant_id)  # by id as well as by e-mail
    assert (answer.merchant_id, answer.programme_id, answer.amount.amount_minor) == (
        world.merchant_id,
        world.gift_programme,
        TRANSFER_MINOR,
    )
    assert (answer.cleared.amount_minor, answer.commission.amount_minor) == (OWED_MINOR, 25)
    assert answer.reference == "NL-BANK-2026-0042" and answer.journal_entry_id
    assert payable(world) == 0
    payable_id = ledger.merchant_payable_account(world.merchant_id, world.gift_programme)
    assert repayment_entries(world) == [{payable_id: OWED_MINOR, clearing: -TRANSFER_MINOR, commission: -25}]
    # The refunded sale's payout is undone as a whole: no commission kept on it, nothing paid out
    assert programme_balances(world) == (0, 0)
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches, check.repayment_mismatches) == (0, 0, 0)
    # The next payout run no longer lists the merchant as owing
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id="week-2")
    settled = world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20)
    assert not settled.payouts and not settled.skipped


def test_the_merchant_summary_shows_the_repayment_beside_the_payouts(world: World) -> None:
    owe(world)
    answer = repay(world, 400, merchant=world.merchant_id)  # clears 4.10: 4.00 and 0.10 commission
    today = dt.datetime.now(world.server.core.report_zone).date().isoformat()
    request = bo.MerchantSummaryRequest(merchant_id=world.merchant_id, from_date=today, to_date=today)
    summary = world.backoffice.GetMerchantSummary(request, metadata=world.admin_metadata, timeout=20)
    assert [p.settlement_id for p in summary.payouts] == ["week-1"]
    (shown,) = summary.repayments
    assert (shown.request_id, shown.amount.amount_minor, shown.reference) == (
        "repay-1",
        400,
        "NL-BANK-2026-0042",
    )
    assert (shown.cleared.amount_minor, shown.commission.amount_minor) == (410, 10)
    assert shown.journal_entry_id == answer.journal_entry_id
    owed = {p.programme_id: (p.owed.amount_minor, p.to_transfer.amount_minor) for p in summary.programmes}
    assert owed[world.gift_programme] == (-590, 575)  # 5.90 less 0.15 commission (14.75 rounded up)
    assert owed[world.benefit_programme] == (0, 0)  # owes nothing


def test_a_replay_answers_what_the_first_did_and_moves_nothing(world: World) -> None:
    owe(world)
    first = repay(world, 600)
    again = repay(world, 600)
    assert again == first
    assert payable(world) == -385  # 6.15 cleared: 6.00 and 0.15 commission
    assert len(repayment_entries(world)) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"amount": pb.Amount(amount_minor=500, currency="EUR")},
        {"reference": "NL-BANK-2026-0043"},
        {"programme_id": "benefit"},
    ],
)
def test_the_same_request_id_with_other_details_is_refused_and_moves_nothing(
    world: World, other: dict[str, object]
) -> None:
    owe(world)
    repay(world, 600)
    if other.get("programme_id") == "benefit":
        other = {"programme_id": world.benefit_programme}
    with pytest.raises(grpc.RpcError) as refused:
        repay(world, 600, **other)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'repay-1' recorded a repayment already" in (refused.value.details() or "")
    assert payable(world) == -385 and len(repayment_entries(world)) == 1


INVALID, NOT_FOUND, STATE = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.mark.parametrize(
    ("fields", "code", "problem"),
    [
        ({"amount": None}, INVALID, "amount is missing"),
        ({"amount": pb.Amount(amount_minor=0, currency="EUR")}, INVALID, "amount must be positive"),
        ({"amount": pb.Amount(amount_minor=-500, currency="EUR")}, INVALID, "amount must be positive"),
        ({"amount": pb.Amount(amount_minor=10**15, currency="EUR")}, INVALID, "amount above 99999999"),
        ({"amount": pb.Amount(amount_minor=500, currency="GBP")}, INVALID, "amount.currency 'GBP' is not"),
        ({"amount": pb.Amount(amount_minor=500)}, INVALID, "amount.currency is missing"),
        (
            {"amount": pb.Amount(amount_minor=976, currency="EUR")},
            INVALID,
            "amount 9.76 EUR is above the transfer that clears the debt: merchant",
        ),
        (  # the gross owed: the commission on it is given back
            {"amount": pb.Amount(amount_minor=1_000, currency="EUR")},
            INVALID,
            "10.00 EUR, cleared by a transfer of 9.75 EUR (the 2.5 % commission on it given back)",
        ),
        ({"merchant": "nobody@example.test"}, NOT_FOUND, "merchant: no merchant 'nobody@example.test'"),
        ({"merchant": ""}, INVALID, "merchant is missing"),
        ({"merchant": "4111111111111111"}, NOT_FOUND, "merchant: no merchant '[REDACTED-PAN]'"),
        ({"programme_id": "prg_unknown"}, NOT_FOUND, "programme_id: no programme 'prg_unknown'"),
        ({"programme_id": "benefit"}, STATE, "owes programme"),  # its payable there is 0
        ({"programme_id": "foreign"}, STATE, "does not take programme"),
        ({"request_id": ""}, INVALID, "request_id is missing"),
        ({"reference": ""}, INVALID, "reference is missing"),
        ({"reference": "4111111111111111"}, INVALID, "reference has the shape of a card number"),
        ({"reference": "x" * 65}, INVALID, "reference is longer than 64 characters"),
    ],
)
def test_a_bad_repayment_is_refused_by_name_and_moves_nothing(
    world: World, fields: dict[str, object], code: grpc.StatusCode, problem: str
) -> None:
    owe(world)
    named = {"benefit": world.benefit_programme, "foreign": world.foreign_programme}
    fields = {k: named.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(grpc.RpcError) as refused:
        repay(world, TRANSFER_MINOR, **fields)
    assert refused.value.code() == code
    assert problem in (refused.value.details() or "")
    assert "4111111111111111" not in (refused.value.details() or "")
    assert payable(world) == -OWED_MINOR and not repayment_entries(world)


def test_two_at_once_with_one_request_id_move_once(world: World) -> None:
    owe(world)
    answers: list[bo.Repayment] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        answers.append(repay(world))

    senders = [threading.Thread(target=send) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert payable(world) == 0 and len(repayment_entries(world)) == 1


def test_two_at_once_each_of_all_that_is_owed_move_once_and_the_payable_never_goes_above_zero(
    world: World,
) -> None:
    owe(world)
    answers: list[bo.Repayment | grpc.RpcError] = []
    start = threading.Barrier(2)

    def send(request_id: str) -> None:
        start.wait()
        try:
            answers.append(repay(world, request_id=request_id, reference=f"ref-{request_id}"))
        except grpc.RpcError as error:
            answers.append(error)

    senders = [threading.Thread(target=send, args=(f"repay-{n}",)) for n in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    refused = [a for a in answers if isinstance(a, grpc.RpcError)]
    assert len(answers) == 2 and len(refused) == 1
    assert refused[0].code() in (INVALID, STATE)
    assert "owes" in (refused[0].details() or "")
    assert payable(world) == 0 and len(repayment_entries(world)) == 1


def test_partial_repayments_add_up_to_exactly_what_was_owed(world: World) -> None:
    owe(world)
    assert to_transfer(world) == TRANSFER_MINOR
    assert repay(world, 500, request_id="r-1").cleared.amount_minor == 513  # 12.825 rounds to 13
    assert payable(world) == -487
    assert "(cleared by a bank transfer of 4.75, the 2.5 % commission on it given back)" in owes_line(world)
    assert to_transfer(world) == 475  # the rest: 4.87 less 0.12
    assert repay(world, 475, request_id="r-2").cleared.amount_minor == 487
    assert payable(world) == 0 and programme_balances(world) == (0, 0) and to_transfer(world) == 0
    with pytest.raises(grpc.RpcError) as refused:
        repay(world, 1, request_id="r-3")
    assert refused.value.code() == STATE and "owes programme" in (refused.value.details() or "")
    with world.server.core.store.engine.connect() as conn:
        total = conn.execute(
            select(func.sum(postings.c.amount_minor)).where(
                postings.c.account_id
                == ledger.merchant_payable_account(world.merchant_id, world.gift_programme)
            )
        ).scalar_one()
    assert int(total) == 0  # the payable's postings add up to its balance


@pytest.mark.parametrize(
    ("sale_minor", "first_minor", "first_cleared_minor"),
    [
        (41, 20, 20),  # 0.01 commission on 0.41; 0.21 and 0.20 each rounded gave back 0.02
        (1_020, 1, 2),  # the rest, 9.93, is 10.18's transfer: 0.01 of the 0.26 given back here
    ],
)
def test_parts_repaid_one_after_another_give_back_the_commission_taken_and_never_more(
    world: World, sale_minor: int, first_minor: int, first_cleared_minor: int
) -> None:
    owe(world, sale_minor)
    whole_minor = to_transfer(world)
    first = repay(world, first_minor, request_id="r-1")
    rest_minor = to_transfer(world)
    repay(world, rest_minor, request_id="r-2")
    # The commission account gives back what the payout took on the sale, and no cent more
    assert payable(world) == 0 and programme_balances(world) == (0, 0)
    assert first_minor + rest_minor == whole_minor  # the parts transfer what the whole would
    assert first.cleared.amount_minor == first_cleared_minor
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


@pytest.mark.parametrize(
    ("sale_minor", "meanwhile_minor", "sent_minor"),
    [
        (41, 2, 20),  # judged on 0.41 it cleared 0.20, leaving 0.19 to transfer: 0.41 for 0.40
        (1_020, 1, 993),  # the rest of 9.94: refused above_maximum, answered "send it again"
    ],
)
def test_a_repayment_judged_on_a_debt_another_repayment_changed_meanwhile_is_judged_again(
    world: World, sale_minor: int, meanwhile_minor: int, sent_minor: int
) -> None:
    owe(world, sale_minor)
    whole_minor = to_transfer(world)
    core = world.server.core
    meanwhile: list[bo.Repayment] = []

    def another_lands_first(write: Write) -> WriteResult:
        """The repayment was judged; another one lands before it is written, once."""
        if not meanwhile:
            meanwhile.append(repay(world, meanwhile_minor, request_id="r-meanwhile", reference="ref-1"))
        return core.write_now(write)

    asked = RepaymentAsked("r-2", world.merchant_id, world.gift_programme, Money(sent_minor, "EUR"), "ref-2")
    record_repayment(core.store.engine, another_lands_first, asked)
    rest_minor = to_transfer(world)
    if rest_minor:
        repay(world, rest_minor, request_id="r-3")
    # What the merchant transferred is what the whole debt asked: no cent kept, none given twice
    assert meanwhile and meanwhile_minor + sent_minor + rest_minor == whole_minor
    assert payable(world) == 0 and programme_balances(world) == (0, 0)
    assert len(repayment_entries(world)) == (3 if rest_minor else 2)


@pytest.mark.parametrize("meanwhile", ["repayment", "sale"])
def test_a_repayment_whose_debt_keeps_changing_under_it_is_refused_as_unavailable_and_moves_nothing(
    world: World, meanwhile: str
) -> None:
    """A sale at the merchant lowers its debt as another repayment does, so either landing between
    the judgement and the write has the repayment judged again; the refusal named only repayments,
    and an operator looked for one where the merchant's till was busy. Sent again once the debt
    stays still, it lands once."""
    owe(world)
    core = world.server.core
    card = world.issue(10_000)
    landed: list[str] = []

    def another_lands_first_each_time(write: Write) -> WriteResult:
        if meanwhile == "repayment":
            repay(world, 1, request_id=f"r-meanwhile-{len(landed)}", reference="ref-1")
            landed.append("repaid")
        else:
            landed.append(world.terminals[0].redeem(card, 1, new_txn()).response_code)
        return core.write_now(write)

    asked = RepaymentAsked("r-2", world.merchant_id, world.gift_programme, Money(500, "EUR"), "ref-2")
    refused = "changed 3 times while it was judged [(]other repayments or sales at the merchant landing[)]"
    with pytest.raises(AdminUnavailableError, match=refused):
        record_repayment(core.store.engine, another_lands_first_each_time, asked)
    assert len(landed) == REPAYMENT_JUDGEMENTS_MAX == 3 and set(landed) <= {"repaid", "00"}
    meanwhile_entries = 3 if meanwhile == "repayment" else 0
    assert len(repayment_entries(world)) == meanwhile_entries and payable(world) == -OWED_MINOR + 3
    # Nothing moved for it: sent again while nothing lands meanwhile, it lands, once
    again = record_repayment(core.store.engine, core.write_now, asked)
    assert again.record.request_id == "r-2" and again.cleared_minor >= 500
    assert len(repayment_entries(world)) == meanwhile_entries + 1
    assert payable(world) == -OWED_MINOR + 3 + again.cleared_minor


def test_a_twin_landing_after_its_first_look_is_answered_as_the_first(world: World) -> None:
    """Two sends of one request at once: the other landed after this one looked for it and before
    it judged the debt, which is then cleared; it answered FAILED_PRECONDITION 'owes nothing'
    (seen once in a full run of test_two_at_once_with_one_request_id_move_once). It answers the
    first now. The judgement is run as record_repayment runs it after its first look."""
    owe(world)
    core = world.server.core
    asked = RepaymentAsked(
        "r-twin", world.merchant_id, world.gift_programme, Money(TRANSFER_MINOR, "EUR"), "ref"
    )
    first = record_repayment(core.store.engine, core.write_now, asked)
    assert payable(world) == 0
    twin = RepaymentRecord("r-twin", world.merchant_id, world.gift_programme, "EUR", TRANSFER_MINOR, "ref")
    assert _judged_and_written(core.store.engine, core.write_now, twin) == first
    assert payable(world) == 0 and len(repayment_entries(world)) == 1


def _planted(world: World, planting: str) -> None:
    """A repayment row and its journal entry made to disagree, as only a fault or a hand could."""
    row = merchant_repayments.c
    with world.server.core.store.engine.begin() as conn:
        if planting == "amount":
            conn.execute(update(merchant_repayments).values(amount_minor=row.amount_minor - 5))
        elif planting == "row deleted":
            conn.execute(delete(merchant_repayments))
        elif planting == "another entry":  # the week-1 payout's
            settled = select(journal_entries.c.entry_id).where(
                journal_entries.c.kind == ledger.SETTLEMENT_KIND
            )
            conn.execute(update(merchant_repayments).values(entry_id=settled.scalar_subquery()))
        else:
            conn.execute(update(merchant_repayments).values(programme_id=world.benefit_programme))


@pytest.mark.parametrize(
    ("planting", "mismatches", "problems"),
    [
        (
            "amount",
            1,
            [
                "repayment 'repay-1': its entry {entry} takes in a transfer of 9.75 EUR, "
                "the row records 9.70 EUR"
            ],
        ),
        ("row deleted", 1, ["entry {entry} is a repayment no repayment row records"]),
        (
            "another entry",
            2,
            [
                "repayment 'repay-1': its entry {settled} is a 'settlement' entry, not a repayment",
                "entry {entry} is a repayment no repayment row records",
            ],
        ),
        (
            "programme",
            1,
            ["repayment 'repay-1': its entry {entry} does not move the debt of merchant '{merchant}'"],
        ),
    ],
)
def test_the_ledger_check_finds_a_repayment_row_and_its_entry_that_disagree(
    world: World, planting: str, mismatches: int, problems: list[str]
) -> None:
    owe(world)
    entry_id = repay(world).journal_entry_id
    assert world.ledger().repayment_mismatches == 0
    with world.server.core.store.engine.connect() as conn:
        settled = select(journal_entries.c.entry_id).where(journal_entries.c.kind == ledger.SETTLEMENT_KIND)
        settled_id = conn.execute(settled).scalar_one()
    _planted(world, planting)
    check = world.ledger()
    assert check.repayment_mismatches == mismatches
    # The balances and entries agree still: only the cross-check sees it
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)
    for problem in problems:
        shown = problem.format(entry=entry_id, settled=settled_id, merchant=world.merchant_id)
        assert any(p.startswith(shown) for p in check.problems), (shown, check.problems)


def test_the_admin_command_records_a_repayment_given_in_major_units(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owe(world)
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    arguments = ["--merchant", MERCHANT_EMAIL, "--programme", world.gift_programme, "--amount", "9.75"]
    arguments += ["--currency", "EUR", "--reference", "NL-1", "--request-id", "cli-1"]
    target = world.server.address
    assert (
        cli.main(["admin", "--data-dir", str(tmp_path), "--target", target, "record-repayment", *arguments])
        == 0
    )
    shown = capsys.readouterr().out
    assert '"amount_minor": "975"' in shown and '"amount_minor": "1000"' in shown  # and cleared
    assert payable(world) == 0


@pytest.mark.parametrize(
    ("sale_minor", "transfer_minor", "commission_minor"),
    [
        (1_001, 976, 25),  # 25.025 rounds to 25, as the payout's did
        (1_020, 994, 26),  # 25.5 rounds half up; 9.94 is also 10.19's transfer, yet it clears all 10.20
    ],
)
def test_odd_cents_the_transfer_of_the_payout_received_clears_the_debt(
    world: World, sale_minor: int, transfer_minor: int, commission_minor: int
) -> None:
    owe(world, sale_minor)
    answer = repay(world, transfer_minor)
    assert (answer.cleared.amount_minor, answer.commission.amount_minor) == (sale_minor, commission_minor)
    assert payable(world) == 0 and programme_balances(world) == (0, 0)


@pytest.mark.parametrize("basis_points", [0, 333, 5_000, 9_950])
def test_at_each_rate_the_transfer_of_what_the_payout_paid_clears_the_debt_and_undoes_the_commission(
    world: World, basis_points: int
) -> None:
    set_commission(world, basis_points)
    owe(world, 1_001)
    transfer = Money(repayment_transfer_minor(1_001, basis_points), "EUR")
    assert to_transfer(world) == transfer.amount_minor
    assert f"record-repayment --amount {transfer.decimal()}" in owes_line(world)
    with pytest.raises(grpc.RpcError) as refused:  # a cent above the transfer clearing the debt
        repay(world, repayment_transfer_minor(1_001, basis_points) + 1, request_id="r-above")
    assert refused.value.code() == INVALID and "above the transfer that clears the debt" in (
        refused.value.details() or ""
    )
    answer = repay(world, repayment_transfer_minor(1_001, basis_points))
    assert answer.cleared.amount_minor == 1_001
    assert payable(world) == 0 and programme_balances(world) == (0, 0)
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)


def test_at_a_commission_of_all_of_it_there_is_nothing_to_transfer(world: World) -> None:
    set_commission(world, 10_000)
    owe(world)
    with pytest.raises(grpc.RpcError) as refused:
        repay(world, 1)
    assert refused.value.code() == STATE
    assert "10.00 EUR and has nothing to transfer: the 100 % commission on it given back is all" in (
        refused.value.details() or ""
    )
    assert payable(world) == -OWED_MINOR and not repayment_entries(world)
    assert owes_line(world) == (
        "owes 10.00 (nothing to transfer: the 100 % commission on it given back is all of it): "
        "refunds exceed redemptions since the last payout; later redemptions pay it back"
    )
    assert to_transfer(world) == 0


def test_a_repayment_the_journal_could_not_take_answers_unavailable_and_moves_nothing(world: World) -> None:
    """A fault of the journal or the database breaks no rule: sent again, the same request may land
    (UNAVAILABLE); it was FAILED_PRECONDITION, which tells the operator not to send it again as it is."""
    owe(world)
    world.server.core.writer.stop()  # as while the switch drains: the journal takes no more writes
    with pytest.raises(grpc.RpcError) as refused:
        repay(world)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "journal stopped" in (refused.value.details() or "")
    assert "send it again" in (refused.value.details() or "")
    assert payable(world) == -OWED_MINOR and not repayment_entries(world)
