"""ISO 8583:1987 message type indicators the switch sends and accepts, and request -> response."""

from __future__ import annotations

from typing import Final

AUTHORIZATION_REQUEST: Final = "0100"
AUTHORIZATION_REQUEST_REPEAT: Final = "0101"  # the acquirer had no answer to its 0100
AUTHORIZATION_RESPONSE: Final = "0110"
FINANCIAL_REQUEST: Final = "0200"
FINANCIAL_REQUEST_REPEAT: Final = "0201"  # the acquirer had no answer to its 0200
FINANCIAL_RESPONSE: Final = "0210"
COMPLETION_ADVICE: Final = "0220"  # the final amount of an authorisation (0100)
COMPLETION_ADVICE_REPEAT: Final = "0221"
COMPLETION_ADVICE_RESPONSE: Final = "0230"
REVERSAL_REQUEST: Final = "0400"
REVERSAL_RESPONSE: Final = "0410"
REVERSAL_ADVICE: Final = "0420"
REVERSAL_ADVICE_REPEAT: Final = "0421"
REVERSAL_ADVICE_RESPONSE: Final = "0430"
NETWORK_REQUEST: Final = "0800"
NETWORK_RESPONSE: Final = "0810"

RESPONSE_MTI_BY_REQUEST: Final[dict[str, str]] = {
    AUTHORIZATION_REQUEST: AUTHORIZATION_RESPONSE,
    AUTHORIZATION_REQUEST_REPEAT: AUTHORIZATION_RESPONSE,
    FINANCIAL_REQUEST: FINANCIAL_RESPONSE,
    FINANCIAL_REQUEST_REPEAT: FINANCIAL_RESPONSE,
    COMPLETION_ADVICE: COMPLETION_ADVICE_RESPONSE,
    COMPLETION_ADVICE_REPEAT: COMPLETION_ADVICE_RESPONSE,
    REVERSAL_REQUEST: REVERSAL_RESPONSE,
    REVERSAL_ADVICE: REVERSAL_ADVICE_RESPONSE,
    REVERSAL_ADVICE_REPEAT: REVERSAL_ADVICE_RESPONSE,
    NETWORK_REQUEST: NETWORK_RESPONSE,
}
# A repeat is its first message sent again: the same request, answered as the first would be.
FIRST_OF_REPEAT: Final[dict[str, str]] = {
    AUTHORIZATION_REQUEST_REPEAT: AUTHORIZATION_REQUEST,
    FINANCIAL_REQUEST_REPEAT: FINANCIAL_REQUEST,
    COMPLETION_ADVICE_REPEAT: COMPLETION_ADVICE,
    REVERSAL_ADVICE_REPEAT: REVERSAL_ADVICE,
}
REQUEST_MTIS: Final = frozenset(RESPONSE_MTI_BY_REQUEST)
RESPONSE_MTIS: Final = frozenset(RESPONSE_MTI_BY_REQUEST.values())
KNOWN_MTIS: Final = REQUEST_MTIS | RESPONSE_MTIS

# Field 70 network management codes.
NETWORK_SIGN_ON: Final = "001"
NETWORK_SIGN_OFF: Final = "002"
NETWORK_ECHO: Final = "301"


def response_mti(request_mti: str) -> str:
    """The MTI answering `request_mti`; KeyError for an MTI that is not a request we know."""
    return RESPONSE_MTI_BY_REQUEST[request_mti]


def first_of(request_mti: str) -> str:
    """The MTI a repeat (0101, 0201, 0221, 0421) repeats; any other MTI is its own first."""
    return FIRST_OF_REPEAT.get(request_mti, request_mti)


def is_request(mti: str) -> bool:
    return mti in REQUEST_MTIS
