"""Double-entry ledger rules: accounts, postings, and the journal entry of each money movement."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from switch.domain.pickling import pickled_by_fields


class AccountKind(enum.Enum):
    card = "card"
    merchant_payable = "merchant_payable"
    programme_float = "programme_float"
    funder = "funder"
    commission_revenue = "commission_revenue"
    payout_clearing = "payout_clearing"


class LedgerRefusal(enum.Enum):
    """The rule a write broke when the ledger refused it, where its answer must say what happened
    (a write decided on a copy another node changed meanwhile): named as the rule, shown by the caller."""

    below_zero = "below_zero"  # a guarded account (a card) would go below zero
    above_maximum = "above_maximum"  # a card would go above its programme's maximum
    # A card replaced by another card since it was judged (for a replacement, a block or an unblock)
    replaced_meanwhile = "replaced_meanwhile"
    # The original a refund, cancel or reversal changes was refunded, cancelled or reversed since
    original_changed_meanwhile = "original_changed_meanwhile"
    pin_try_stored_meanwhile = "pin_try_stored_meanwhile"  # an employee's PIN try counted from a stale count
    # A cycle's payout to a merchant that another settlement paid in the cycle since it was planned
    paid_under_another_settlement = "paid_under_another_settlement"


# Accounts whose balance may never go below zero: their debits are conditional in the store.
GUARDED_KINDS = frozenset({AccountKind.card})


CARD_ACCOUNT_PREFIX = "card:"


def card_account(card_id: str) -> str:
    return f"{CARD_ACCOUNT_PREFIX}{card_id}"


def merchant_payable_account(merchant_id: str, programme_id: str) -> str:
    """What the programme owes the merchant: one account per programme, paid out by its settlement."""
    return f"merchant:{merchant_id}:{programme_id}:payable"


def programme_float_account(programme_id: str) -> str:
    return f"programme:{programme_id}:float"


def funder_account(programme_id: str) -> str:
    return f"programme:{programme_id}:funder"


def commission_account(programme_id: str) -> str:
    return f"programme:{programme_id}:commission"


def payout_clearing_account(programme_id: str) -> str:
    return f"programme:{programme_id}:payouts"


def account_kind(account_id: str) -> AccountKind:
    if account_id.startswith("card:"):
        return AccountKind.card
    suffix = account_id.rsplit(":", 1)[-1]
    return {
        "payable": AccountKind.merchant_payable,
        "float": AccountKind.programme_float,
        "funder": AccountKind.funder,
        "commission": AccountKind.commission_revenue,
        "payouts": AccountKind.payout_clearing,
    }[suffix]


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Posting:
    account_id: str
    amount_minor: int  # positive adds to the account's balance, negative takes from it
    # This debit only while the account holds it: a payout of what a payable held when read, so
    # two settlements at once cannot both pay it (a payable may still go negative otherwise).
    only_if_held: bool = False
    # This credit only while the account stays at or below it: a card's maximum, which loads on
    # two nodes at once each checked against their own copy. None: no ceiling.
    ceiling_minor: int | None = None

    @property
    def guarded(self) -> bool:
        """A debit that may not take the account below zero: of a card, or one only_if_held."""
        return self.amount_minor < 0 and (self.only_if_held or account_kind(self.account_id) in GUARDED_KINDS)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One money movement; its idempotency key lets it happen at most once."""

    idempotency_key: str
    kind: str
    currency: str
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        assert self.postings, "an entry needs postings"
        assert sum(p.amount_minor for p in self.postings) == 0, "postings must sum to zero"
        assert all(p.amount_minor != 0 for p in self.postings), "no empty postings"
        assert len({p.account_id for p in self.postings}) == len(self.postings), "one posting per account"

    def delta_for(self, account_id: str) -> int:
        return sum(p.amount_minor for p in self.postings if p.account_id == account_id)

    def reversed(self, idempotency_key: str, kind: str) -> JournalEntry:
        """The entry that undoes this one."""
        return JournalEntry(
            idempotency_key,
            kind,
            self.currency,
            tuple(Posting(p.account_id, -p.amount_minor) for p in self.postings),
        )


def transfer(key: str, kind: str, currency: str, debit: str, credit: str, amount_minor: int) -> JournalEntry:
    assert amount_minor > 0, amount_minor
    return JournalEntry(key, kind, currency, (Posting(debit, -amount_minor), Posting(credit, amount_minor)))


def redemption_entry(
    key: str, currency: str, card_id: str, amount_minor: int, *, merchant_id: str, programme_id: str
) -> JournalEntry:
    return transfer(
        key,
        "redemption",
        currency,
        card_account(card_id),
        merchant_payable_account(merchant_id, programme_id),
        amount_minor,
    )


def refund_entry(
    key: str,
    currency: str,
    card_id: str,
    amount_minor: int,
    *,
    merchant_id: str,
    programme_id: str,
    card_ceiling_minor: int | None = None,
) -> JournalEntry:
    assert amount_minor > 0, amount_minor
    postings = (
        Posting(merchant_payable_account(merchant_id, programme_id), -amount_minor),
        Posting(card_account(card_id), amount_minor, ceiling_minor=card_ceiling_minor),
    )
    return JournalEntry(key, "refund", currency, postings)


def load_entry(
    key: str,
    currency: str,
    card_id: str,
    programme_id: str,
    holder_part_minor: int,
    funder_part_minor: int,
    card_ceiling_minor: int | None = None,
) -> JournalEntry:
    """The holder's part comes from the programme float, the funder's part from the funder."""
    assert holder_part_minor >= 0 and funder_part_minor >= 0
    amount_minor = holder_part_minor + funder_part_minor
    postings = [Posting(card_account(card_id), amount_minor, ceiling_minor=card_ceiling_minor)]
    if holder_part_minor:
        postings.append(Posting(programme_float_account(programme_id), -holder_part_minor))
    if funder_part_minor:
        postings.append(Posting(funder_account(programme_id), -funder_part_minor))
    return JournalEntry(key, "load", currency, tuple(postings))


def transfer_key(request_id: str) -> str:
    """A lost card's balance moves to its replacement once per request id."""
    return f"transfer:{request_id}"


def card_transfer_entry(
    key: str, currency: str, lost_card_id: str, new_card_id: str, amount_minor: int, ceiling_minor: int
) -> JournalEntry:
    """A lost card's balance onto its replacement, which may not end above the programme's maximum."""
    assert amount_minor > 0, amount_minor
    postings = (
        Posting(card_account(lost_card_id), -amount_minor),
        Posting(card_account(new_card_id), amount_minor, ceiling_minor=ceiling_minor),
    )
    return JournalEntry(key, "card_transfer", currency, postings)


SETTLEMENT_KIND = "settlement"


def settlement_key(programme_id: str, settlement_id: str, merchant_id: str) -> str:
    """At most one payout per programme, settlement id and merchant."""
    return f"settle:{programme_id}:{settlement_id}:{merchant_id}"


def settlement_id_of(key: str, programme_id: str, merchant_id: str) -> str:
    """The settlement id inside a settlement key (an id may itself hold ':')."""
    prefix, suffix = f"settle:{programme_id}:", f":{merchant_id}"
    assert key.startswith(prefix) and key.endswith(suffix), key
    return key[len(prefix) : len(key) - len(suffix)]


def settlement_entry(
    key: str,
    currency: str,
    programme_id: str,
    merchant_id: str,
    gross_minor: int,
    commission_minor: int,
) -> JournalEntry:
    """The merchant's payable is paid out, less the programme's commission."""
    assert 0 <= commission_minor <= gross_minor and gross_minor > 0
    postings = [Posting(merchant_payable_account(merchant_id, programme_id), -gross_minor, only_if_held=True)]
    if commission_minor:
        postings.append(Posting(commission_account(programme_id), commission_minor))
    if gross_minor - commission_minor:
        postings.append(Posting(payout_clearing_account(programme_id), gross_minor - commission_minor))
    return JournalEntry(key, SETTLEMENT_KIND, currency, tuple(postings))


REPAYMENT_KIND = "repayment"


def repayment_key(request_id: str) -> str:
    """A merchant's bank transfer back to the programme is recorded once per request id."""
    return f"repay:{request_id}"


def repayment_entry(
    key: str,
    currency: str,
    programme_id: str,
    merchant_id: str,
    owed_minor: int,
    cleared_minor: int,
    transfer_minor: int,
) -> JournalEntry:
    """What a merchant owes (its payable below zero) paid back by bank transfer: the programme's
    payout side takes the transfer in and its commission account gives back the commission on the
    part cleared (the rest of it), the payable rises by that part. The part was judged on a debt of
    owed_minor: it lands only while the merchant owes at least that (the payable at most the debt
    left, never above zero), so a repayment landing meanwhile has it judged again, not cleared on
    a debt gone (two parts at once each judged on the whole debt were each rounded on it)."""
    assert 0 < transfer_minor <= cleared_minor <= owed_minor, (transfer_minor, cleared_minor, owed_minor)
    postings = [
        Posting(
            merchant_payable_account(merchant_id, programme_id),
            cleared_minor,
            ceiling_minor=cleared_minor - owed_minor,
        ),
        Posting(payout_clearing_account(programme_id), -transfer_minor),
    ]
    if cleared_minor - transfer_minor:
        postings.append(Posting(commission_account(programme_id), transfer_minor - cleared_minor))
    return JournalEntry(key, REPAYMENT_KIND, currency, tuple(postings))
