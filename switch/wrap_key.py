"""`python -m switch.acquiring wrap-key`: read a clear key (hex) on stdin, print the wrapped line for
the acquirers file. Apart from switch.acquiring, which imports the gateway, the payments and the store
(SQLAlchemy, trio: most of a second): wrapping a key needs the security module alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from switch.security import KeyAlgorithm, KeyIntegrityError, KeyUsage, MasterKey, SecurityModule

USAGES_IN_FILE = {"zone-pin": KeyUsage.zone_pin, "terminal-transport": KeyUsage.terminal_transport}


def wrap_key_main(argv: list[str] | None = None) -> None:
    """`python -m switch.acquiring wrap-key`: read a clear key (hex) on stdin, print the wrapped line.

    The master key comes from TXSWITCH_MASTER_KEY_HEX (or --master-key-file); nothing is stored.
    """
    parser = argparse.ArgumentParser(prog="python -m switch.acquiring wrap-key")
    parser.add_argument("command", choices=["wrap-key"])
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--usage", choices=sorted(USAGES_IN_FILE), required=True)
    parser.add_argument(
        "--algorithm", choices=[KeyAlgorithm.aes128.value, KeyAlgorithm.tdes.value], default="aes128"
    )
    parser.add_argument("--master-key-file", type=Path)
    args = parser.parse_args(argv)
    algorithm = KeyAlgorithm(args.algorithm)
    try:
        security = SecurityModule(_master_key_for_wrapping(args.master_key_file))
        clear_key = _clear_key_from_stdin()
        try:
            wrapped = security.import_key(clear_key, args.key_id, USAGES_IN_FILE[args.usage], algorithm)
        except KeyIntegrityError as error:
            raise _WrapKeyError(f"the key on stdin: {error} ({algorithm.key_bytes * 2} hex digits)") from None
    except _WrapKeyError as error:  # one line, exit 2: never a traceback, never a key's digits
        parser.exit(2, f"{parser.prog}: {error}\n")
    print(wrapped.to_text())


class _WrapKeyError(Exception):
    """A master key or clear key that wrap-key cannot use; its text names which, never a key's digits."""


def _master_key_for_wrapping(master_key_file: Path | None) -> MasterKey:
    if master_key_file is not None:
        source = "--master-key-file"
        try:
            master_hex = master_key_file.read_text().strip()
        except OSError as error:
            raise _WrapKeyError(f"--master-key-file {master_key_file}: {error.strerror}") from None
    else:  # the settings import SQLAlchemy: only read when no file is given
        from switch.config import from_environment

        source = "TXSWITCH_MASTER_KEY_HEX"
        master_hex = from_environment().master_key_hex
    if not master_hex:
        raise _WrapKeyError("set TXSWITCH_MASTER_KEY_HEX or --master-key-file")
    try:
        return MasterKey.from_hex(master_hex)
    except KeyIntegrityError as error:
        raise _WrapKeyError(f"{source}: {error}") from None


def _clear_key_from_stdin() -> bytes:
    line = sys.stdin.readline().strip()
    try:
        clear_key = bytes.fromhex(line)
    except ValueError:
        clear_key = b""
    if not clear_key:  # bytes.fromhex's own message gives the position of the first wrong digit
        raise _WrapKeyError("the key on stdin must be hex digits, the key alone on the first line")
    return clear_key
