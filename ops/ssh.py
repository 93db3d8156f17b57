"""asyncssh, imported without the deprecation warnings for DSA that its crypto layer raises at import
with cryptography 47 and later: ten lines on stderr before `make run` says where it listens. The
console's host key is Ed25519; the warnings are about classes asyncssh defines, not keys we use."""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

__all__ = ["asyncssh"]
