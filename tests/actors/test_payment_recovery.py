"""What a start stores for a bank-card transaction it finds pending: timed out, of its own kind."""

from __future__ import annotations

import pytest

from actors.payments import RECOVERED_DETAIL, recovered_answer
from switch.domain.payments import PURCHASE_PROCESSING_CODE, REFUND_PROCESSING_CODE
from switch.store.payments import PaymentDetails


def pending(processing_code: str) -> PaymentDetails:
    return PaymentDetails(
        source="trm_1",
        transaction_id="t-1",
        sequence_number=7,
        pan_hash="ab" * 16,
        bin6="476173",
        last4="0010",
        entry_mode="chip",
        pin_entered=False,
        acquirer="acq-a",
        acquirer_terminal_id="ABCDEF12",
        acquirer_merchant_id="ABCDEF123456789",
        original_mti="0200",
        stan="000042",
        transmission="1122063000",
        processing_code=processing_code,
        currency_numeric="978",
        amount_minor=1_250,
        response_code="",
        auth_code="",
        retrieval_reference="",
        reversal_queued=False,
        fingerprint="f" * 32,
        merchant_id="mer_1",
        period_number=3,
        card_masked="476173******0010",
        currency="EUR",
    )


@pytest.mark.parametrize(
    ("processing_code", "kind"), [(PURCHASE_PROCESSING_CODE, "payment"), (REFUND_PROCESSING_CODE, "refund")]
)
def test_a_pending_transaction_found_at_start_is_stored_as_timed_out_of_its_kind(
    processing_code: str, kind: str
) -> None:
    record = recovered_answer(pending(processing_code))
    assert (record.transaction_type, record.result, record.status) == (kind, "acquirer_timeout", "declined")
    assert (record.requested_minor, record.approved_minor, record.payment_method) == (1_250, 0, "chip")
    assert record.detail == RECOVERED_DETAIL
