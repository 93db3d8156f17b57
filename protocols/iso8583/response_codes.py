"""ISO 8583 field 39 <-> switch ResponseCode, the one mapping at the acquirer edge."""

from __future__ import annotations

from protocols.iso8583._codec import MessageFormatError
from switch.domain.response_codes import ResponseCode, from_iso_code

# ISO 8583:1987 approvals besides 00: honour with identification, approved (VIP), approved (update
# track 3). The acquirer holds the amount for each, so each is an approval here.
APPROVING_FIELD39 = frozenset({"00", "08", "11", "16"})


def response_code_from_field39(code: str) -> ResponseCode:
    """The domain code for an acquirer's field 39; unknown codes decline as do_not_honour."""
    if len(code) != 2 or not code.isascii() or not code.isalnum():
        raise MessageFormatError("39", "response code must be 2 alphanumerics")
    if code in APPROVING_FIELD39:
        return ResponseCode.approved
    return from_iso_code(code)


def field39_from_response_code(code: ResponseCode) -> str:
    return code.iso_code
