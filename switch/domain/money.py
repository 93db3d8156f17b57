"""Money: integer minor units plus an ISO 4217 currency; no floats anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# ISO 4217 alphabetic code -> minor-unit exponent, for the currencies the switch accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "EUR": 2,
    "USD": 2,
    "GBP": 2,
    "CHF": 2,
    "DKK": 2,
    "SEK": 2,
    "NOK": 2,
    "PLN": 2,
    "CZK": 2,
    "JPY": 0,
}
# ISO 4217 numeric codes, for ISO 8583 field 49.
CURRENCY_NUMERIC: dict[str, str] = {
    "EUR": "978",
    "USD": "840",
    "GBP": "826",
    "CHF": "756",
    "DKK": "208",
    "SEK": "752",
    "NOK": "578",
    "PLN": "985",
    "CZK": "203",
    "JPY": "392",
}

# No single amount on this switch may exceed this (and it fits in ISO 8583 field 4).
AMOUNT_MINOR_MAX = 99_999_999


def is_known_currency(currency: str) -> bool:
    return currency in CURRENCY_EXPONENTS


# Every currency that exists (ISO 4217: Debian's iso-codes 4.15 list, with ZWG of 2024 and XCG of
# 2025), less XXX ("no currency") and XTS (kept for tests). A payment made elsewhere (a PSP's) may be
# in one the switch takes no card in: that is still money paid, to be refunded in it.
_ISO_4217_LISTED = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD "
    "JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU "
    "MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD "
    "RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY "
    "TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD "
    "XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL"
)
ISO_4217_CODES: Final = frozenset(_ISO_4217_LISTED.split())
assert CURRENCY_EXPONENTS.keys() <= ISO_4217_CODES, "the switch takes only currencies that exist"


# ISO 4217's minor units where they are not 2, for currencies the switch takes no card in but a payment
# made elsewhere may be in (its refund_due reason names the amount). The funds and metals ISO gives
# no minor unit (XAU, XDR, ...) are shown in whole units, as their amounts are given.
_ISO_4217_EXPONENTS_NOT_2: Final = {
    code: exponent
    for exponent, codes in (
        (0, "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"),
        (3, "BHD IQD JOD KWD LYD OMR TND"),
        (4, "CLF UYW"),
        (0, "XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XUA"),  # no minor unit
    )
    for code in codes.split()
}
assert _ISO_4217_EXPONENTS_NOT_2.keys() <= ISO_4217_CODES, "minor units of currencies that exist"
assert all(CURRENCY_EXPONENTS[code] == _ISO_4217_EXPONENTS_NOT_2.get(code, 2) for code in CURRENCY_EXPONENTS)


def minor_unit_exponent(currency: str) -> int:
    """The decimals of a currency that exists (ISO 4217), taken by the switch or not; 2 for a code
    that names none (refused wherever it comes in, so only ever shown in a refusal)."""
    return _ISO_4217_EXPONENTS_NOT_2.get(currency, 2)


def is_currency(code: str) -> bool:
    """Whether the code names a currency that exists (ISO_4217_CODES), taken by the switch or not."""
    return code in ISO_4217_CODES


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        assert isinstance(self.amount_minor, int), "amount_minor must be an int"
        assert not isinstance(self.amount_minor, bool), "amount_minor must not be a bool"

    def __add__(self, other: Money) -> Money:
        assert self.currency == other.currency, (self.currency, other.currency)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        assert self.currency == other.currency, (self.currency, other.currency)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def format(self) -> str:
        """Human form, e.g. '12.50 EUR'."""
        return f"{self.decimal()} {self.currency}"

    def decimal(self) -> str:
        """The amount in major units with the currency's decimals, e.g. '12.50'."""
        exponent = minor_unit_exponent(self.currency)
        sign = "-" if self.amount_minor < 0 else ""
        whole, minor = divmod(abs(self.amount_minor), 10**exponent)
        if exponent == 0:
            return f"{sign}{whole}"
        return f"{sign}{whole}.{minor:0{exponent}d}"


def zero(currency: str) -> Money:
    return Money(0, currency)


def proportional_share(amount_minor: int, numerator: int, denominator: int) -> int:
    """amount * numerator / denominator, rounded half up, in integers only."""
    assert denominator > 0 and numerator >= 0 and amount_minor >= 0
    return (amount_minor * numerator * 2 + denominator) // (denominator * 2)
