"""The per-caller sliding-window limit of the cardholders' lookups, and the caller's address."""

from __future__ import annotations

import pytest

from switch.caller_limit import CallerLimit, caller_address


def test_a_caller_gets_calls_max_in_any_window_and_is_told_how_long_to_wait() -> None:
    limit = CallerLimit(calls_max=3, window_s=60.0, callers_max=10)
    assert [limit.wait_s("a", now_s) for now_s in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert limit.wait_s("a", 30.0) == 30.0  # the call at 0 leaves the window at 60
    assert limit.wait_s("b", 30.0) == 0.0  # another caller has its own window
    assert limit.wait_s("a", 59.9) == pytest.approx(0.1)
    assert limit.wait_s("a", 60.0) == 0.0  # the window slid: the call at 0 is out
    assert limit.wait_s("a", 60.0) == 10.0  # refused calls were not counted: 10, 20, 60 are in


def test_the_longest_quiet_caller_is_forgotten_first_when_full() -> None:
    limit = CallerLimit(calls_max=1, window_s=60.0, callers_max=2)
    assert limit.wait_s("a", 0.0) == 0.0
    assert limit.wait_s("b", 1.0) == 0.0
    assert limit.wait_s("a", 2.0) == 58.0  # a was seen again: b is now the longest quiet
    assert limit.wait_s("c", 3.0) == 0.0  # full: b forgotten
    assert limit.callers == 2
    assert limit.wait_s("a", 4.0) == 56.0  # a still remembered
    assert limit.wait_s("b", 5.0) == 0.0  # b starts afresh


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"),
        ("unix:/run/txswitch.sock", "unix:/run/txswitch.sock"),
        ("", ""),
    ],
)
def test_the_callers_address_leaves_out_the_port(peer: str, address: str) -> None:
    assert caller_address(peer) == address
