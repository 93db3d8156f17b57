"""The faults the security module raises; none of them ever carries a PIN, PIN block, key or PAN."""

from __future__ import annotations


class SecurityError(Exception):
    """Base of security-module faults."""


class PinBlockError(SecurityError):
    """A PIN block that does not decode under the given key and PAN (wrong key, PAN or format)."""


class KeyIntegrityError(SecurityError):
    """A wrapped key that fails authentication, or a key used for a purpose it was not made for."""
