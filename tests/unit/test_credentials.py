"""Password and employee PIN hashes: they carry their parameters, the first form still verifies,
and a stored hash naming parameters out of bounds is refused at once (no check of minutes)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from switch import credentials, passwords
from tests.conftest import TEST_PIN_ITERATIONS, TEST_SCRYPT_N

SALT = b"0123456789abcdef"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _scrypt_hash(password: str, n: int, r: int, p: int) -> str:
    digest = hashlib.scrypt(password.encode(), salt=SALT, n=n, r=r, p=p, maxmem=2**27)
    return f"scrypt${n}${r}${p}${_b64(SALT)}${_b64(digest)}"


def _pbkdf2_hash(pin: str, iterations: int) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), SALT, iterations)
    return f"pbkdf2${iterations}${_b64(SALT)}${_b64(digest)}"


@pytest.mark.production_hash_cost
def test_a_fresh_hash_carries_production_cost_where_tests_do_not_lower_it() -> None:
    assert credentials.hash_password("open sesame").startswith("scrypt$16384$8$1$")
    assert credentials.hash_employee_pin("4321").startswith("pbkdf2$20000$")


def test_in_process_tests_hash_cheaply_and_their_hashes_verify_at_production_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/conftest.py's cheap_hashes; a hash it made verifies where the cost is production's (in
    a `txswitch serve` sharing the database, as tests/integration/test_payment_crash.py's does)."""
    password, pin = credentials.hash_password("open sesame"), credentials.hash_employee_pin("4321")
    assert password.startswith(f"scrypt${TEST_SCRYPT_N}$8$1$")
    assert pin.startswith(f"pbkdf2${TEST_PIN_ITERATIONS}$")
    monkeypatch.setattr(credentials, "PASSWORD_SCRYPT_N", 2**14)
    monkeypatch.setattr(credentials, "EMPLOYEE_PIN_ITERATIONS", 20_000)
    assert credentials.password_matches("open sesame", password)
    assert credentials.employee_pin_matches("4321", pin)


def test_a_password_hash_names_its_parameters_and_verifies() -> None:
    stored = credentials.hash_password("open sesame")
    scheme, n, r, p, _salt, _digest = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == (
        "scrypt",
        credentials.PASSWORD_SCRYPT_N,
        credentials.PASSWORD_SCRYPT_R,
        credentials.PASSWORD_SCRYPT_P,
    )
    assert credentials.password_matches("open sesame", stored)
    assert not credentials.password_matches("open sesame!", stored)


def test_an_employee_pin_hash_names_its_iterations_and_verifies() -> None:
    stored = credentials.hash_employee_pin("4321")
    scheme, iterations, _salt, _digest = stored.split("$")
    assert (scheme, int(iterations)) == ("pbkdf2", credentials.EMPLOYEE_PIN_ITERATIONS)
    assert credentials.employee_pin_matches("4321", stored)
    assert not credentials.employee_pin_matches("4322", stored)


def test_the_first_forms_without_parameters_verify_at_the_cost_they_were_made_with() -> None:
    """Hashes already in databases: `scrypt$<salt>$<digest>` (n 2**14, r 8, p 1) and
    `pbkdf2$<salt>$<digest>` (20,000 iterations), whatever the costs of new hashes are now."""
    scrypt_digest = hashlib.scrypt(b"open sesame", salt=SALT, n=2**14, r=8, p=1)
    old_password = f"scrypt${_b64(SALT)}${_b64(scrypt_digest)}"
    pin_digest = hashlib.pbkdf2_hmac("sha256", b"4321", SALT, 20_000)
    old_pin = f"pbkdf2${_b64(SALT)}${_b64(pin_digest)}"
    assert credentials.password_matches("open sesame", old_password)
    assert not credentials.password_matches("open sesame!", old_password)
    assert credentials.employee_pin_matches("4321", old_pin)
    assert not credentials.employee_pin_matches("1234", old_pin)


def test_hashes_made_at_another_cost_still_verify_once_the_cost_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cheap_password = _scrypt_hash("open sesame", 2**10, 8, 1)
    dearer_password = _scrypt_hash("open sesame", 2**15, 8, 1)  # above hashlib's default maxmem
    cheap_pin = _pbkdf2_hash("4321", 1_000)
    monkeypatch.setattr(credentials, "PASSWORD_SCRYPT_N", 2**12)
    monkeypatch.setattr(credentials, "EMPLOYEE_PIN_ITERATIONS", 30_000)
    assert credentials.password_matches("open sesame", cheap_password)
    assert credentials.password_matches("open sesame", dearer_password)
    assert not credentials.password_matches("open", cheap_password)
    assert credentials.employee_pin_matches("4321", cheap_pin)
    assert credentials.hash_password("x").startswith("scrypt$4096$8$1$")
    assert credentials.hash_employee_pin("1").startswith("pbkdf2$30000$")


SALT64, DIGEST64 = _b64(SALT), _b64(b"d" * 64)


def _no_hashing(*_args: object, **_kwargs: object) -> bytes:
    raise AssertionError("a stored hash out of bounds was hashed against")


@pytest.mark.parametrize(
    "stored",
    [
        f"scrypt$3$8$1${SALT64}${DIGEST64}",  # n not a power of two
        f"scrypt$1$8$1${SALT64}${DIGEST64}",
        f"scrypt$0$8$1${SALT64}${DIGEST64}",
        f"scrypt${2**21}$8$1${SALT64}${DIGEST64}",  # n above 2**20
        f"scrypt${2**40}$8$1${SALT64}${DIGEST64}",
        f"scrypt${2**20}$16$1${SALT64}${DIGEST64}",  # 2 GiB of memory
        f"scrypt$16384$0$1${SALT64}${DIGEST64}",
        f"scrypt${2**16}$1$1${SALT64}${DIGEST64}",  # n not below 2**(16 r): OpenSSL refuses it
        f"scrypt${2**20}$1$1${SALT64}${DIGEST64}",
        f"scrypt$16384$8$0${SALT64}${DIGEST64}",
        f"scrypt$16384$8$1000${SALT64}${DIGEST64}",
        f"scrypt$16384$+8$1${SALT64}${DIGEST64}",
        f"scrypt$16_384$8$1${SALT64}${DIGEST64}",
        f"scrypt$-16384$8$1${SALT64}${DIGEST64}",
        f"scrypt$16384$8$1$not base64!${DIGEST64}",
        f"scrypt$16384$8$1$${DIGEST64}",  # no salt
        f"scrypt$16384$8${SALT64}${DIGEST64}",  # a part missing
        f"scrypt${SALT64}",
        f"pbkdf2${SALT64}${DIGEST64}",  # another scheme
        "",
    ],
)
def test_a_stored_password_hash_out_of_bounds_or_malformed_matches_nothing_unhashed(
    stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashlib, "scrypt", _no_hashing)  # refused before any work, however costly
    assert credentials.password_matches("open sesame", stored) is False


@pytest.mark.parametrize(
    "stored",
    [
        f"pbkdf2$0${SALT64}${DIGEST64}",
        f"pbkdf2${10**7 + 1}${SALT64}${DIGEST64}",
        f"pbkdf2${10**12}${SALT64}${DIGEST64}",
        f"pbkdf2$-5${SALT64}${DIGEST64}",
        f"pbkdf2$2e4${SALT64}${DIGEST64}",
        f"pbkdf2$20000$%%%${DIGEST64}",
        f"pbkdf2$20000$1${SALT64}${DIGEST64}",  # a part too many
        f"scrypt$20000${SALT64}${DIGEST64}",
        "pbkdf2",
    ],
)
def test_a_stored_pin_hash_out_of_bounds_or_malformed_matches_nothing_unhashed(
    stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", _no_hashing)
    assert credentials.employee_pin_matches("4321", stored) is False


@pytest.mark.parametrize(("n", "r"), [(2**16, 1), (2**20, 1), (2**17, 1)])
def test_a_stored_password_hash_openssl_refuses_matches_nothing_instead_of_raising(n: int, r: int) -> None:
    """Within every SCRYPT_*_MAX bound, yet OpenSSL's scrypt takes no n of 2**(16 r) or more: hashing
    at them raised ValueError out of password_matches (a sign-in failing with an error, not refused)."""
    assert credentials.password_matches("open sesame", f"scrypt${n}${r}$1${SALT64}${DIGEST64}") is False


def test_only_a_hash_at_todays_parameters_in_todays_form_is_current() -> None:
    n = credentials.PASSWORD_SCRYPT_N
    today = credentials.hash_password("open sesame")
    assert credentials.password_hash_is_current(today)
    assert not credentials.password_hash_is_current(_scrypt_hash("open sesame", n // 2, 8, 1))
    assert not credentials.password_hash_is_current(_scrypt_hash("open sesame", n, 4, 1))
    first_form = "scrypt$" + today.split("$", 4)[4]  # today's salt and digest, no parameters
    assert not credentials.password_hash_is_current(first_form)
    assert not credentials.password_hash_is_current("scrypt$not$a$hash$at$all")


def test_an_unknown_address_is_checked_at_todays_cost_after_the_cost_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hash an unknown address is checked against was made once per process (functools.cache),
    at the cost of the moment: after a raise it cost less than a known account's check."""
    passwords._unknown_hash()
    monkeypatch.setattr(credentials, "PASSWORD_SCRYPT_N", TEST_SCRYPT_N * 2)
    assert passwords._unknown_hash().startswith(f"scrypt${TEST_SCRYPT_N * 2}$8$1$")
    assert credentials.password_hash_is_current(passwords._unknown_hash())


def test_only_a_pin_hash_with_todays_iterations_in_todays_form_is_current() -> None:
    today = credentials.hash_employee_pin("4321")
    assert credentials.employee_pin_hash_is_current(today)
    assert not credentials.employee_pin_hash_is_current(_pbkdf2_hash("4321", TEST_PIN_ITERATIONS // 2))
    assert not credentials.employee_pin_hash_is_current("pbkdf2$" + today.split("$", 2)[2])  # no iterations
    assert not credentials.employee_pin_hash_is_current("pbkdf2$x$y$z")
