"""Connections that never log in, held open, keep no operator out: real TCP sockets and a real SSH client."""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack, ExitStack
from pathlib import Path

import pytest

from ops.console import CONNECTIONS_LOGGING_IN_MAX, CONNECTIONS_LOGGING_IN_PER_ADDRESS_MAX, CONNECTIONS_MAX
from ops.ssh import asyncssh
from tests.integration.harness import World
from tests.ops.conftest import CLIENT_TIMEOUT_S, ConsoleWorld, Keys, console_of, exec_commands

# More than either limit: on one shared limit of CONNECTIONS_MAX these locked every login out.
SILENT_SOCKETS = CONNECTIONS_MAX + CONNECTIONS_LOGGING_IN_MAX
SOCKET_READ_TIMEOUT_S = 0.5


def _silent_sockets(port: int, count: int, stack: ExitStack) -> list[socket.socket]:
    """TCP connections to the console that never send a byte of SSH."""
    sockets = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S))
        sockets.append(sock)
    return sockets


def _closed_by_the_console(sock: socket.socket) -> bool:
    """True when the console ended it: its version line, if any, then end of stream."""
    sock.settimeout(SOCKET_READ_TIMEOUT_S)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _left_open_by_the_console(socks: list[socket.socket]) -> list[socket.socket]:
    """Those of socks the console has not ended (as _closed_by_the_console says, for all of them at once:
    one SOCKET_READ_TIMEOUT_S in all, not one each, which made up most of these tests' time)."""
    left_open = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline_s = time.monotonic() + SOCKET_READ_TIMEOUT_S
        while left_open and (wait_s := deadline_s - time.monotonic()) > 0:
            for key, _ in selector.select(wait_s):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    ended = not ready.recv(4096)  # its version line, if any, then end of stream
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    ended = True
                if ended:
                    left_open.discard(ready)
                    selector.unregister(ready)
    return [sock for sock in socks if sock in left_open]


def _until_taken_by_the_console(socks: list[socket.socket]) -> None:
    """Until the console has taken every one of socks: each has its first bytes or its end to read.
    asyncssh sends its version line right after the console's admit() has run, in the same call, and
    a connection admit() refuses is closed: either way admit() has seen it. (A fixed 0.5 s before.)"""
    waiting = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline_s = time.monotonic() + CLIENT_TIMEOUT_S
        while waiting:
            wait_s = deadline_s - time.monotonic()
            assert wait_s > 0, f"{len(waiting)} connections not taken by the console"
            for key, _ in selector.select(wait_s):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                waiting.discard(ready)
                selector.unregister(ready)  # nothing read: the tests read them as before


def test_connections_held_open_without_login_keep_no_operator_out(console_world: ConsoleWorld) -> None:
    port, operator = console_world.port, console_world.keys.operator

    async def scenario(stack: ExitStack) -> tuple[int | None, list[int | None], list[socket.socket]]:
        async with asyncssh.connect(
            "127.0.0.1", port, username="olga", client_keys=[operator], known_hosts=None, agent_path=None
        ) as logged_in:
            sockets = await asyncio.to_thread(_silent_sockets, port, SILENT_SOCKETS, stack)
            await asyncio.to_thread(_until_taken_by_the_console, sockets)
            fresh = await exec_commands(port, operator, ["status"])
            held = await logged_in.run("status", check=False, timeout=CLIENT_TIMEOUT_S)
            return held.exit_status, [result.exit_status for result in fresh], sockets

    with ExitStack() as stack:
        started = time.monotonic()
        held_status, fresh_statuses, sockets = asyncio.run(scenario(stack))
        assert held_status == 0  # a logged-in operator kept its connection
        assert fresh_statuses == [0]  # a new operator logged in and ran status
        assert time.monotonic() - started < CLIENT_TIMEOUT_S  # not after the login timeout
        still_open = _left_open_by_the_console(sockets)
        # The oldest silent ones were closed to make room: at most the limit are still waiting.
        assert len(still_open) <= CONNECTIONS_LOGGING_IN_MAX, len(still_open)


async def _status_after_logins_held(port: int, key: asyncssh.SSHKey) -> tuple[str, int | None]:
    """With CONNECTIONS_MAX logged in: how one more login ends, then a status once one has left."""
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(_login(port, key)) for _ in range(CONNECTIONS_MAX)]
        try:
            async with _login(port, key) as extra:
                await extra.run("status", check=False, timeout=CLIENT_TIMEOUT_S)
            over = "served"
        except (asyncssh.Error, OSError) as error:
            over = type(error).__name__
        held[0].close()
        await held[0].wait_closed()
        await asyncio.sleep(0.2)  # the console has seen it go
        (after,) = await exec_commands(port, key, ["status"])
        return over, after.exit_status


def _login(port: int, key: asyncssh.SSHKey) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    return asyncssh.connect(
        "127.0.0.1", port, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    )


def test_logged_in_connections_stay_bounded_and_one_leaving_makes_room(console_world: ConsoleWorld) -> None:
    over, after = asyncio.run(_status_after_logins_held(console_world.port, console_world.keys.viewer))
    assert over != "served", "a login past CONNECTIONS_MAX was served"
    assert after == 0


CLOSED_LOG_INTERVAL_S = 1.0
CLOSED_BEFORE_LOGIN = "console connection closed before login"


def _closed_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage().startswith(CLOSED_BEFORE_LOGIN)]


def _wait_closed_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    deadline_s = time.monotonic() + CLIENT_TIMEOUT_S
    while len(_closed_lines(caplog)) < count and time.monotonic() < deadline_s:
        time.sleep(0.05)
    return _closed_lines(caplog)


def test_connections_closed_before_login_are_logged_at_a_rate_the_next_line_counting_the_rest(
    bare_world: World, keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ops.console")
    closed = 10  # past the limit of those logging in from one address, each new one closes its oldest
    with (
        console_of(
            bare_world,
            keys,
            tmp_path / "audit.jsonl",
            closed_before_login_log_interval_s=CLOSED_LOG_INTERVAL_S,
        ) as console,
        ExitStack() as stack,
    ):
        _until_taken_by_the_console(
            _silent_sockets(console.port, CONNECTIONS_LOGGING_IN_PER_ADDRESS_MAX + closed, stack)
        )
        first = _wait_closed_lines(caplog, 1)
        assert len(first) == 1, [record.getMessage() for record in first]  # was one line per connection
        time.sleep(CLOSED_LOG_INTERVAL_S)
        _silent_sockets(console.port, 1, stack)
        lines = _wait_closed_lines(caplog, 2)
    assert len(lines) == 2, [record.getMessage() for record in lines]
    assert [getattr(line, "closed_before_login_not_logged", None) for line in lines] == [0, closed - 1]


OTHER_ADDRESS = "127.0.0.2"  # Linux routes all of 127/8 to lo: another source address on loopback


def _socket_from(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.settimeout(CLIENT_TIMEOUT_S)
    sock.connect(("127.0.0.1", port))
    return sock


async def _login_over(sock: socket.socket, key: asyncssh.SSHKey) -> int | None:
    async with asyncssh.connect(
        sock=sock, username="olga", client_keys=[key], known_hosts=None, agent_path=None
    ) as connection:
        done = await connection.run("status", check=False, timeout=CLIENT_TIMEOUT_S)
        return done.exit_status


@pytest.mark.parametrize(
    "flooding",
    [
        ["127.0.0.1"],  # the flood alone would fill the console's limit twice over
        ["127.0.0.1", "127.0.0.3"],  # together they fill it: the busiest address gives way, not the login
    ],
)
def test_a_flood_from_other_addresses_does_not_close_a_login(
    console_world: ConsoleWorld, flooding: list[str]
) -> None:
    port = console_world.port
    with ExitStack() as stack:
        # The operator's connection is open and logging in (the oldest) when the flood comes.
        operator = stack.enter_context(_socket_from(OTHER_ADDRESS, port))
        flood = [
            stack.enter_context(_socket_from(address, port))
            for _ in range(2 * CONNECTIONS_LOGGING_IN_MAX // len(flooding))
            for address in flooding
        ]
        _until_taken_by_the_console(flood)
        status = asyncio.run(_login_over(operator, console_world.keys.operator))
        assert status == 0  # was closed as the oldest of those logging in
        still_open = _left_open_by_the_console(flood)
    assert len(still_open) < CONNECTIONS_LOGGING_IN_MAX, len(still_open)


ARRIVALS_MAX = 3
ARRIVALS_WINDOW_S = 2.0
# How long past the window the login from the polling address comes: the console's loop may count an
# arrival a little after its socket connected.
LOGIN_PAST_WINDOW_S = 0.4


def test_new_connections_from_one_address_past_its_rate_are_closed_as_they_come(
    bare_world: World, keys: Keys, tmp_path: Path
) -> None:
    """Past the rate, a new connection is closed as it comes. Those closed are not counted: they were,
    so a script polling the console past the rate from the operators' jump host kept every login from
    there out for as long as it went on, and for a whole window after it stopped."""
    with (
        console_of(
            bare_world,
            keys,
            tmp_path / "audit.jsonl",
            connections_per_address_per_window_max=ARRIVALS_MAX,
            connections_per_address_window_s=ARRIVALS_WINDOW_S,
        ) as console,
        ExitStack() as stack,
    ):
        started_s = time.monotonic()
        within = _silent_sockets(console.port, ARRIVALS_MAX, stack)
        (over,) = _silent_sockets(console.port, 1, stack)
        assert _closed_by_the_console(over)  # was let in to log in as the first ones were
        other = stack.enter_context(_socket_from(OTHER_ADDRESS, console.port))
        assert asyncio.run(_login_over(other, keys.operator)) == 0  # another address is not counted
        # The script polls on, half a window later: still past the rate, each try is closed as it comes.
        time.sleep(max(0.0, started_s + ARRIVALS_WINDOW_S / 2 - time.monotonic()))
        polled = _silent_sockets(console.port, ARRIVALS_MAX, stack)
        polling_stopped_s = time.monotonic()
        assert all(_closed_by_the_console(sock) for sock in polled)
        # The first ones' window has passed; the script's closed tries were in the next window.
        time.sleep(max(0.0, started_s + ARRIVALS_WINDOW_S - time.monotonic()) + LOGIN_PAST_WINDOW_S)
        operator = stack.enter_context(_socket_from("127.0.0.1", console.port))
        assert _login_status(operator, keys.operator) == 0  # was closed: the closed tries were counted
        assert time.monotonic() - polling_stopped_s < ARRIVALS_WINDOW_S
        assert _left_open_by_the_console(within) == within  # those within the rate wait


def _login_status(sock: socket.socket, key: asyncssh.SSHKey) -> int | str | None:
    """status's exit status over a login on sock, or the name of the error that ended the login."""
    try:
        return asyncio.run(_login_over(sock, key))
    except (asyncssh.Error, OSError) as error:
        return type(error).__name__
