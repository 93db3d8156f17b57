"""A merchant paying back by bank transfer what it owes a programme, through the backoffice on
SQLite and PostgreSQL: a balanced entry, the payable brought to zero and never above, once per
request id, and shown in the merchant's summary."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from protocols.wire import backoffice_pb2 as bo
from protocols.wire import terminal_pb2 as pb
from switch import cli
from switch.domain import ledger
from switch.store.schema import accounts, journal_entries, postings
from tests.integration.harness import ADMIN_TOKEN, MERCHANT_EMAIL, World, new_txn

OWED_MINOR = 1_000  # what the merchant owes after each test's set-up


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


def owe(world: World) -> None:
    """The merchant is paid a 10.00 sale, then refunds it: it owes the gift programme 10.00."""
    terminal, sale = world.terminals[0], new_txn()
    assert terminal.redeem(world.issue(10_000), OWED_MINOR, sale).response_code == "00"
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id="week-1")
    assert world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20).payouts
    assert terminal.refund(sale, OWED_MINOR).response_code == "00"
    assert payable(world) == -OWED_MINOR


def repay(world: World, amount_minor: int = OWED_MINOR, **fields: object) -> bo.Repayment:
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
    clearing_before = balance(world, clearing)
    answer = repay(world, merchant=world.merchant_id)  # by id as well as by e-mail
    assert (answer.merchant_id, answer.programme_id, answer.amount.amount_minor) == (
        world.merchant_id,
        world.gift_programme,
        OWED_MINOR,
    )
    assert answer.reference == "NL-BANK-2026-0042" and answer.journal_entry_id
    assert payable(world) == 0
    assert balance(world, clearing) == clearing_before - OWED_MINOR
    payable_id = ledger.merchant_payable_account(world.merchant_id, world.gift_programme)
    assert repayment_entries(world) == [{payable_id: OWED_MINOR, clearing: -OWED_MINOR}]
    check = world.ledger()
    assert (check.unbalanced_entries, check.balance_mismatches) == (0, 0)
    # The next payout run no longer lists the merchant as owing
    request = bo.SettleRequest(programme_id=world.gift_programme, settlement_id="week-2")
    settled = world.backoffice.Settle(request, metadata=world.admin_metadata, timeout=20)
    assert not settled.payouts and not settled.skipped


def test_the_merchant_summary_shows_the_repayment_beside_the_payouts(world: World) -> None:
    owe(world)
    answer = repay(world, 400, merchant=world.merchant_id)  # by id as well as by e-mail
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
    assert shown.journal_entry_id == answer.journal_entry_id
    owed = {p.programme_id: p.owed.amount_minor for p in summary.programmes}
    assert owed[world.gift_programme] == -600


def test_a_replay_answers_what_the_first_did_and_moves_nothing(world: World) -> None:
    owe(world)
    first = repay(world, 600)
    again = repay(world, 600)
    assert again == first
    assert payable(world) == -400
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
    assert payable(world) == -400 and len(repayment_entries(world)) == 1


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
            {"amount": pb.Amount(amount_minor=1_001, currency="EUR")},
            INVALID,
            "amount 10.01 EUR is above what merchant",
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
        repay(world, OWED_MINOR, **fields)
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
    repay(world, 333, request_id="r-1")
    repay(world, 667, request_id="r-2")
    assert payable(world) == 0
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


def test_the_admin_command_records_a_repayment_given_in_major_units(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owe(world)
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN)
    arguments = ["--merchant", MERCHANT_EMAIL, "--programme", world.gift_programme, "--amount", "10.00"]
    arguments += ["--currency", "EUR", "--reference", "NL-1", "--request-id", "cli-1"]
    target = world.server.address
    assert (
        cli.main(["admin", "--data-dir", str(tmp_path), "--target", target, "record-repayment", *arguments])
        == 0
    )
    assert '"amount_minor": "1000"' in capsys.readouterr().out
    assert payable(world) == 0
