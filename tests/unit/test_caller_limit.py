"""The per-caller sliding-window limit of the cardholders' lookups, and the caller's address."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

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
    ("counted_s", "given_back_s", "asked_at_s", "wait_s"),
    [
        ((0.0, 10.0), 10.0, 20.0, 0.0),  # a call given back frees its place
        ((0.0, 10.0), 5.0, 20.0, 40.0),  # no call counted then: nothing given back
        ((0.0, 10.0), 10.0, 70.0, 0.0),  # given back after the window slid: nothing to give
    ],
)
def test_a_call_given_back_no_longer_counts(
    counted_s: tuple[float, ...], given_back_s: float, asked_at_s: float, wait_s: float
) -> None:
    limit = CallerLimit(calls_max=2, window_s=60.0, callers_max=10)
    assert [limit.wait_s("a", now_s) for now_s in counted_s] == [0.0] * len(counted_s)
    limit.give_back("a", given_back_s)
    assert limit.wait_s("a", asked_at_s) == wait_s


def test_a_caller_whose_every_call_was_given_back_is_forgotten() -> None:
    limit = CallerLimit(calls_max=2, window_s=60.0, callers_max=10)
    assert limit.wait_s("a", 0.0) == 0.0
    limit.give_back("a", 0.0)
    limit.give_back("b", 0.0)  # never seen: nothing
    assert limit.callers == 0


def test_calls_arriving_together_from_many_threads_pass_no_more_than_the_limit() -> None:
    calls_max, threads = 5, 16
    limit = CallerLimit(calls_max=calls_max, window_s=60.0, callers_max=10)
    ready = threading.Barrier(threads)

    def one(_: int) -> float:
        ready.wait(timeout=10)
        return limit.wait_s("a", 1.0)

    with ThreadPoolExecutor(threads) as pool:
        waits_s = list(pool.map(one, range(threads)))
    assert waits_s.count(0.0) == calls_max
