"""The auditor: rebuilds what the terminals were told and checks it against the switch's ledger."""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from terminal_sim.ledger import JournalEntry, LedgerSnapshot, TransactionKey
from terminal_sim.records import MONEY_OPERATIONS, Exchange, Operation, Outcome

# Statuses under which a transaction no longer moves money (the switch's words for it).
UNDONE_STATUSES = frozenset({"reversed", "voided", "cancelled", "canceled"})
# Reversal answers that mean "nothing of the original stands": done now, done before, never seen.
# A declined reversal (a spent load, a cancel, which cannot be reversed) leaves the original as it is.
REVERSAL_SETTLED_STATUSES = frozenset({"reversed", "voided"})
# Declines the switch answers without storing them (96 "not stored; nothing was moved", 91 "switch
# inoperative"): no answer of the id, so they are not the terminal's final word on it.
NOT_STORED_CODES = frozenset({"96", "91"})
REVERSAL_NOT_FOUND_CODE = "25"
VIOLATIONS_PRINTED_MAX = 200


class Violation(enum.StrEnum):
    lost_approval = "lost_approval"
    double_spend = "double_spend"
    declined_moved_money = "declined_moved_money"
    negative_balance = "negative_balance"
    ledger_imbalance = "ledger_imbalance"
    balance_mismatch = "balance_mismatch"
    replay_answer_differs = "replay_answer_differs"


class Told(enum.Enum):
    approved = "approved"  # the terminal was told the money moved
    nothing_moved = "nothing_moved"  # declined, not found, or reversed at the terminal's request
    unknown = "unknown"  # the terminal never learned the outcome


@dataclass(frozen=True)
class Finding:
    violation: Violation
    detail: str
    terminal_id: str | None = None
    transaction_id: str | None = None
    card_id: str | None = None

    def line(self) -> str:
        where = ""
        if self.terminal_id is not None:
            where = f" terminal={self.terminal_id} txn={self.transaction_id}"
        if self.card_id is not None:
            where += f" card={self.card_id}"
        return f"AUDIT {self.violation.value}:{where} {self.detail}"


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[Finding, ...]
    transactions_checked: int
    cards_checked: int
    entries_checked: int
    unknown_outcomes: int  # told nothing; resolved from the ledger
    skipped_checks: tuple[str, ...] = ()

    def count(self, violation: Violation) -> int:
        return sum(1 for finding in self.findings if finding.violation is violation)

    @property
    def clean(self) -> bool:
        return not self.findings

    def counters(self) -> dict[str, int]:
        """The headline counters of `make bench`, then the rest."""
        counters = {
            "double_spends": self.count(Violation.double_spend),
            "lost_approvals": self.count(Violation.lost_approval),
            "ledger_imbalances": self.count(Violation.ledger_imbalance),
            "negative_balances": self.count(Violation.negative_balance),
        }
        counters["declined_moved_money"] = self.count(Violation.declined_moved_money)
        counters["balance_mismatches"] = self.count(Violation.balance_mismatch)
        counters["replay_answers_differing"] = self.count(Violation.replay_answer_differs)
        return counters


@dataclass
class _Belief:
    """What the terminals were told about one money transaction (mutable while folding)."""

    operation: Operation
    card_id: str | None
    sign: int
    told: Told = Told.unknown
    approved_minor: int = 0
    requested_minor: int = 0
    answered_approved: bool | None = None
    undone_by_terminal: bool = False  # a reversal the terminal sent
    cancel_asked: bool = False  # a cancel the terminal sent, not answered declined
    exchanges: int = 0


@dataclass
class _Folded:
    beliefs: dict[TransactionKey, _Belief] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def _sign(operation: Operation, original: Operation | None) -> int:
    if operation is Operation.redeem:
        return -1
    if operation in (Operation.load, Operation.refund):
        return 1
    assert operation is Operation.cancel, operation
    # A cancel undoes its original: money flows the other way.
    return -_sign(original, None) if original is not None else 0


def _fold_money(folded: _Folded, exchange: Exchange) -> None:
    key = (exchange.terminal_id, exchange.transaction_id)
    belief = folded.beliefs.get(key)
    if belief is None:
        sign = _sign(exchange.operation, exchange.original_operation)
        belief = _Belief(
            exchange.operation, exchange.card_id, sign, requested_minor=exchange.amount_requested_minor
        )
        folded.beliefs[key] = belief
    belief.exchanges += 1
    if exchange.outcome is not Outcome.answered:
        return
    if not exchange.approved and exchange.response_code in NOT_STORED_CODES:
        return  # the switch kept no answer: a later copy of the id is judged afresh, or the ledger tells
    if belief.answered_approved is not None and (
        belief.answered_approved != exchange.approved
        or (exchange.approved and belief.approved_minor != exchange.amount_approved_minor)
    ):
        folded.findings.append(
            Finding(
                Violation.replay_answer_differs,
                f"first answer approved={belief.answered_approved} {belief.approved_minor}, "
                f"repeat code={exchange.response_code} {exchange.amount_approved_minor}",
                *key,
                belief.card_id,
            )
        )
        return
    belief.answered_approved = exchange.approved
    belief.told = Told.approved if exchange.approved else Told.nothing_moved
    belief.approved_minor = exchange.amount_approved_minor if exchange.approved else 0


def _fold_follow_up(folded: _Folded, exchange: Exchange) -> None:
    """A TransactionStatus or Reversal about an earlier transaction of the same terminal."""
    belief = folded.beliefs.get((exchange.terminal_id, exchange.transaction_id))
    if belief is None or exchange.outcome is not Outcome.answered:
        return
    if exchange.operation is Operation.reversal:
        settled = (
            exchange.approved
            or exchange.status in REVERSAL_SETTLED_STATUSES
            or exchange.response_code == REVERSAL_NOT_FOUND_CODE
        )
        if settled:  # a refused reversal (12 once the day is closed, 51) leaves the original standing
            belief.undone_by_terminal = True
            belief.told = Told.nothing_moved
            belief.approved_minor = 0
        return
    # TransactionStatus: only learn from it while the outcome is still open.
    if belief.told is not Told.unknown:
        return
    if not exchange.found:
        return  # not there yet: it may still arrive (the switch stores nothing on a status query)
    if exchange.status == "approved":
        belief.told = Told.approved
        belief.approved_minor = exchange.amount_approved_minor
    elif exchange.status in UNDONE_STATUSES or exchange.status == "declined":
        belief.told = Told.nothing_moved


def _mark_cancelled_originals(folded: _Folded, exchanges: Iterable[Exchange]) -> None:
    """A cancel the terminal sent lets the switch undo the original, unless it was answered declined.

    The cancel's undo entry goes under the cancel's own key, so the original's own movement is
    still checked; only its stored status may be cancelled."""
    for exchange in exchanges:
        if exchange.operation is Operation.cancel:
            cancel = folded.beliefs.get((exchange.terminal_id, exchange.transaction_id))
            if cancel is not None and cancel.told is Told.nothing_moved:
                continue  # refused: the original stands, as the terminal was told
            original = folded.beliefs.get((exchange.terminal_id, exchange.original_transaction_id or ""))
            if original is not None:
                original.cancel_asked = True


def fold_exchanges(exchanges: Sequence[Exchange]) -> _Folded:
    """Replay the terminals' exchanges in the order they were recorded."""
    folded = _Folded()
    for exchange in exchanges:
        if exchange.operation in MONEY_OPERATIONS:
            _fold_money(folded, exchange)
        elif exchange.operation in (Operation.status, Operation.reversal):
            _fold_follow_up(folded, exchange)
    _mark_cancelled_originals(folded, exchanges)
    return folded


@dataclass(frozen=True)
class _Movement:
    """Card money moved by one transaction key's entries."""

    net_minor: int
    forward_entries: int  # entries that are not reversals and touch the card
    forward_minor_max: int  # largest single forward movement, absolute


def _movements(snapshot: LedgerSnapshot) -> dict[TransactionKey, _Movement]:
    card_accounts = {card.account_id for card in snapshot.cards.values()}
    net: dict[TransactionKey, int] = collections.defaultdict(int)
    forward: dict[TransactionKey, list[int]] = collections.defaultdict(list)
    for entry in snapshot.entries:
        key = entry.key
        if key is None:
            continue
        card_minor = sum(p.amount_minor for p in entry.postings if p.account_id in card_accounts)
        touches_card = any(p.account_id in card_accounts for p in entry.postings)
        net[key] += card_minor
        if touches_card and entry.reverses_entry_id is None:
            forward[key].append(abs(card_minor))
    keys = set(net) | set(forward)
    return {key: _Movement(net[key], len(forward[key]), max(forward[key], default=0)) for key in keys}


def _check_transaction(
    key: TransactionKey,
    belief: _Belief,
    movement: _Movement,
    snapshot: LedgerSnapshot,
) -> list[Finding]:
    findings: list[Finding] = []

    def found(violation: Violation, detail: str) -> None:
        findings.append(Finding(violation, detail, key[0], key[1], belief.card_id))

    if movement.forward_entries > 1:
        found(Violation.double_spend, f"{movement.forward_entries} entries moved the card")
    if belief.told is Told.approved:
        lost = _lost_approval_detail(key, belief, snapshot)
        moved_minor = abs(movement.net_minor)
        if lost is None and not belief.undone_by_terminal and belief.approved_minor > 0:
            if moved_minor < belief.approved_minor:
                lost = f"approved {belief.approved_minor}, the ledger moved {moved_minor}"
            elif moved_minor > belief.approved_minor and movement.forward_entries <= 1:
                found(
                    Violation.double_spend,
                    f"approved {belief.approved_minor}, the ledger moved {moved_minor}",
                )
        if lost is not None:
            found(Violation.lost_approval, lost)
    elif belief.told is Told.nothing_moved and movement.net_minor != 0:
        found(
            Violation.declined_moved_money,
            f"terminal was told nothing moved; the card moved {movement.net_minor}",
        )
    elif belief.told is Told.unknown and movement.net_minor != 0:
        findings.extend(_in_doubt_findings(key, belief, movement, snapshot))
    return findings


def _in_doubt_findings(
    key: TransactionKey, belief: _Belief, movement: _Movement, snapshot: LedgerSnapshot
) -> list[Finding]:
    """What no answer could have allowed for a transaction whose outcome the terminal never
    learnt: money moved the other way, more than was asked, or on a stored decline."""
    net_minor = movement.net_minor
    stored = snapshot.transactions.get(key) if snapshot.transactions is not None else None
    problem = None
    violation = Violation.declined_moved_money
    if stored is not None and stored.status == "declined":
        problem = f"stored declined; the card moved {net_minor}"
    elif belief.sign and (net_minor > 0) != (belief.sign > 0):
        problem = f"asked to move money the other way; the card moved {net_minor}"
    elif belief.operation is not Operation.cancel and abs(net_minor) > belief.requested_minor:
        problem = f"asked for {belief.requested_minor}; the card moved {net_minor}"
        violation = Violation.double_spend
    if problem is None:
        return []
    return [Finding(violation, f"outcome unknown to the terminal: {problem}", key[0], key[1], belief.card_id)]


def _lost_approval_detail(key: TransactionKey, belief: _Belief, snapshot: LedgerSnapshot) -> str | None:
    """Why the ledger's record contradicts an approval the terminal saw, or None."""
    if snapshot.transactions is None:
        return None
    stored = snapshot.transactions.get(key)
    if stored is None:
        return "approved at the terminal, absent from the ledger"
    if stored.status == "declined":
        return "approved at the terminal, declined in the ledger"
    if stored.status in UNDONE_STATUSES and not (belief.undone_by_terminal or belief.cancel_asked):
        return f"approved at the terminal, {stored.status} without its asking"
    return None


def _card_expectations(
    beliefs: Mapping[TransactionKey, _Belief], movements: Mapping[TransactionKey, _Movement]
) -> tuple[dict[str, int], int]:
    """Per card, the balance change the terminals were told (unknowns resolved from the ledger)."""
    expected: dict[str, int] = collections.defaultdict(int)
    unknown = 0
    for key, belief in beliefs.items():
        if belief.card_id is None:
            continue
        if belief.told is Told.approved:
            expected[belief.card_id] += belief.sign * belief.approved_minor
        elif belief.told is Told.unknown:
            unknown += 1
            movement = movements.get(key)
            expected[belief.card_id] += movement.net_minor if movement is not None else 0
    return expected, unknown


def _check_entries(entries: Sequence[JournalEntry]) -> list[Finding]:
    findings = []
    for entry in entries:
        total_minor = sum(posting.amount_minor for posting in entry.postings)
        if total_minor != 0:
            findings.append(
                Finding(
                    Violation.ledger_imbalance,
                    f"entry {entry.entry_id} postings sum to {total_minor}",
                    entry.terminal_id,
                    entry.transaction_id,
                )
            )
    return findings


def _check_cards(snapshot: LedgerSnapshot, expected: Mapping[str, int]) -> list[Finding]:
    by_account = {card.account_id: card for card in snapshot.cards.values()}
    running = {card.account_id: card.start_minor for card in snapshot.cards.values()}
    went_negative: set[str] = set()
    for entry in sorted(snapshot.entries, key=lambda e: e.sequence):
        for posting in entry.postings:
            if posting.account_id in running:
                running[posting.account_id] += posting.amount_minor
                if running[posting.account_id] < 0:
                    went_negative.add(posting.account_id)
    findings = []
    for account_id, card in by_account.items():
        if account_id in went_negative or card.end_minor < 0:
            findings.append(Finding(Violation.negative_balance, "card went below zero", card_id=card.card_id))
        if running[account_id] != card.end_minor:
            findings.append(
                Finding(
                    Violation.ledger_imbalance,
                    f"balance {card.end_minor} is not start plus postings ({running[account_id]})",
                    card_id=card.card_id,
                )
            )
        told_minor = card.start_minor + expected.get(card.card_id, 0)
        if told_minor != card.end_minor:
            findings.append(
                Finding(
                    Violation.balance_mismatch,
                    f"balance {card.end_minor}, terminals were told {told_minor}",
                    card_id=card.card_id,
                )
            )
    return findings


def audit(exchanges: Sequence[Exchange], snapshot: LedgerSnapshot) -> AuditReport:
    """Check the run's exchanges against the ledger; every finding is one violation."""
    folded = fold_exchanges(exchanges)
    movements = _movements(snapshot)
    findings = list(folded.findings)
    empty = _Movement(0, 0, 0)
    for key, belief in folded.beliefs.items():
        findings.extend(_check_transaction(key, belief, movements.get(key, empty), snapshot))
    findings.extend(_check_entries(snapshot.entries))
    expected, unknown = _card_expectations(folded.beliefs, movements)
    findings.extend(_check_cards(snapshot, expected))
    skipped = () if snapshot.transactions is not None else ("ledger transaction statuses",)
    return AuditReport(
        findings=tuple(findings),
        transactions_checked=len(folded.beliefs),
        cards_checked=len(snapshot.cards),
        entries_checked=len(snapshot.entries),
        unknown_outcomes=unknown,
        skipped_checks=skipped,
    )


def format_report(report: AuditReport) -> list[str]:
    """Every violation (up to VIOLATIONS_PRINTED_MAX lines), then a summary line."""
    lines = [finding.line() for finding in report.findings[:VIOLATIONS_PRINTED_MAX]]
    if len(report.findings) > VIOLATIONS_PRINTED_MAX:
        lines.append(f"AUDIT ... {len(report.findings) - VIOLATIONS_PRINTED_MAX} more not shown")
    counters = " ".join(f"{name}={value}" for name, value in report.counters().items())
    verdict = "clean" if report.clean else f"{len(report.findings)} violations"
    lines.append(
        f"audit: {verdict}; {report.transactions_checked} transactions, {report.cards_checked} "
        f"cards, {report.entries_checked} entries, {report.unknown_outcomes} outcomes resolved "
        f"from the ledger; {counters}"
    )
    if report.skipped_checks:
        lines.append(f"audit: skipped (source cannot tell): {', '.join(report.skipped_checks)}")
    return lines
