"""Whether this machine has an IPv6 loopback, for the tests that listen on ::1."""

from __future__ import annotations

import socket


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
