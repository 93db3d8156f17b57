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
        ("ipv6:[::1]:51234", "ipv6:[::]/64"),
        ("ipv6:%5B::1%5D:51234", "ipv6:[::]/64"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::]/64"),
        # One site holds a whole /64 (2^64 addresses): each of them a caller was no limit at all.
        ("ipv6:[2001:db8:0:7:a:b:c:d]:443", "ipv6:[2001:db8:0:7::]/64"),
        ("ipv6:[2001:db8:0:7:ffff:ffff:ffff:ffff]:1", "ipv6:[2001:db8:0:7::]/64"),
        ("ipv6:[2001:db8:0:8::1]:443", "ipv6:[2001:db8:0:8::]/64"),
        # An IPv4 client on a dual-stack socket is its IPv4 address, not the /64 all of them share.
        ("ipv6:[::ffff:10.0.0.7]:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::ffff:10.0.0.8]:51234", "ipv4:10.0.0.8"),
        ("ipv6:[not an address]:1", "ipv6:[not an address]"),
        ("unix:/run/txswitch.sock", "unix:/run/txswitch.sock"),
        ("", ""),
    ],
)
def test_the_caller_is_its_address_without_the_port_and_an_ipv6_caller_its_64_prefix(
    peer: str, address: str
) -> None:
    assert caller_address(peer) == address


def test_every_address_of_one_ipv6_64_shares_one_limit() -> None:
    limit = CallerLimit(calls_max=2, window_s=60.0, callers_max=10)
    peers = [f"ipv6:[2001:db8:0:7::{host:x}]:{40_000 + host}" for host in range(1, 4)]
    waits_s = [limit.wait_s(caller_address(peer), 0.0) for peer in peers]
    assert waits_s == [0.0, 0.0, 60.0]


@pytest.mark.parametrize(
    ("counted_s", "peeked_at_s", "wait_s"),
    [
        ((), 0.0, 0.0),  # an unknown caller may call
        ((0.0,), 1.0, 0.0),  # under the limit
        ((0.0, 10.0), 20.0, 40.0),  # at the limit: until the call at 0 leaves the window
        ((0.0, 10.0), 60.0, 0.0),  # the window slid
        # Counted past the limit (outcomes known at once after one peek each): the latest two kept.
        ((0.0, 10.0, 20.0, 30.0), 30.0, 50.0),
    ],
)
def test_a_peek_counts_nothing_and_counts_are_what_it_weighs(
    counted_s: tuple[float, ...], peeked_at_s: float, wait_s: float
) -> None:
    limit = CallerLimit(calls_max=2, window_s=60.0, callers_max=10)
    for now_s in counted_s:
        limit.count("a", now_s)
    assert [limit.peek_wait_s("a", peeked_at_s) for _ in range(3)] == [wait_s] * 3
    assert limit.callers == (1 if counted_s else 0)  # a peek alone remembers no caller
