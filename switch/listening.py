"""A listener placed by the operator's settings that could not bind, named by the setting that placed it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from switch.config import setting_named


def host_port(host: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets ([::1]:50051): grpc reads ::1:50051 as no address, and
    neither can a reader tell its port. A host name never holds a colon; one given in brackets
    already ([::1]) is kept as it is."""
    bare_ipv6 = ":" in host and not host.startswith("[")
    return f"[{host}]:{port}" if bare_ipv6 else f"{host}:{port}"


class CannotListenError(RuntimeError):
    """A listener of the switch could not bind where its settings say; the switch does not start."""


@contextmanager
def listening(what: str, host: str, port: int, setting: str) -> Iterator[None]:
    """An OSError binding `what` raised as a CannotListenError naming the address and the setting."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        raise CannotListenError(
            f"cannot listen for {what} on {host_port(host, port)}, set by {setting_named(setting)}: {reason}"
        ) from error
