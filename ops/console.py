"""The SSH ops console: asyncssh on its own asyncio loop thread, public-key login, audited commands."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ops.console_audit import AuditLog
from ops.console_auth import AuthorizedKeys, Caller, Role
from ops.console_backend import OpsBackend
from ops.console_commands import COMMAND_LINE_CHARS_MAX, CommandResult, Outcome, execute
from ops.ssh import asyncssh
from switch.caller_limit import caller_address

log = logging.getLogger(__name__)

CONSOLE_HOST_DEFAULT = "127.0.0.1"
CONSOLE_PORT_DEFAULT = 2222
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
BACKEND_CALL_TIMEOUT_S = 10.0
SESSION_IDLE_TIMEOUT_S = 15 * 60.0
LOGIN_TIMEOUT_S = 30.0
# Logged-in connections. Connections still logging in have a limit of their own: counted with
# these, 16 TCP connections that never spoke SSH kept every operator out for LOGIN_TIMEOUT_S.
CONNECTIONS_MAX = 16
# Connections not logged in yet. Past it a new one closes the oldest of them, so sockets held
# open without logging in cannot keep an operator's login out; a login takes well under a second.
CONNECTIONS_LOGGING_IN_MAX = 8
# Connections logging in from one source address (an IPv6 one counted as its /64). Past it a new
# one closes that address's oldest, and past CONNECTIONS_LOGGING_IN_MAX the oldest of the address
# holding the most goes: one address opening connections closed another's login as the oldest.
CONNECTIONS_LOGGING_IN_PER_ADDRESS_MAX = 4
# New connections let in from one source address in a window; past it a new one is closed as it
# comes, before its key exchange (each costs the console one, and closed one of the address's own
# logins). Those closed are not counted: the address is let in again as those let in age out.
CONNECTIONS_PER_ADDRESS_PER_WINDOW_MAX = 60
CONNECTIONS_PER_ADDRESS_WINDOW_S = 60.0
# Source addresses whose new connections are counted; past it the one quiet longest is forgotten.
ADDRESSES_COUNTED_MAX = 1024
# Shell and exec sessions open at once on one connection: SSH lets a client open channels
# without end, and each held a task, buffers and a place in the backend workers' queue.
SESSIONS_PER_CONNECTION_MAX = 4
BACKEND_WORKERS_MAX = 4
# The shell's line editor keeps one character past the command limit: a line it cut at the
# limit ran as the command left after the cut ('cards block X' of 'cards block X ... more');
# one character over, the whole line is refused as too long.
LINE_EDITOR_CHARS_MAX = COMMAND_LINE_CHARS_MAX + 1
# Output a shell session may hold unsent before the console runs no more of its commands: a
# client that types and never reads made the console run every line and keep every answer.
OUTPUT_BUFFERED_BYTES_MAX = 64 * 1024
# At most one "closed before login" line in this long, the next one counting those not logged: a
# client opening connections without end wrote one line each into the switch log.
CLOSED_BEFORE_LOGIN_LOG_INTERVAL_S = 60.0

AUDIT_STARTED = "started"
TIMED_OUT = (
    "timed out: the switch did not answer within {seconds:g} s and may still complete the command; "
    "check its result before sending it again"
)
NOT_RUN = (
    "not run: every console worker was busy for {seconds:g} s (commands the switch has not answered); "
    "nothing was done, send it again"
)
AUDIT_OUTCOME_NOT_WRITTEN = "warning: the audit log cannot be written; the switch log has details"

_CALLER_INFO = "txswitch_caller"
_EXIT_WORDS = frozenset({"exit", "quit", "logout"})


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """authorized_keys: a file path or `<role> <OpenSSH public key>` lines. audit_log_path:
    JSON lines. host_key_path: created on first start if missing; None = a new key each start."""

    authorized_keys: Path | Sequence[str]
    audit_log_path: Path
    host: str = CONSOLE_HOST_DEFAULT
    port: int = CONSOLE_PORT_DEFAULT
    host_key_path: Path | None = None
    banner: str = "txswitch ops console"
    backend_call_timeout_s: float = BACKEND_CALL_TIMEOUT_S
    session_idle_timeout_s: float = SESSION_IDLE_TIMEOUT_S
    closed_before_login_log_interval_s: float = CLOSED_BEFORE_LOGIN_LOG_INTERVAL_S
    connections_per_address_per_window_max: int = CONNECTIONS_PER_ADDRESS_PER_WINDOW_MAX
    connections_per_address_window_s: float = CONNECTIONS_PER_ADDRESS_WINDOW_S


def load_host_key(path: Path | None) -> asyncssh.SSHKey:
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    key.write_private_key(path)
    path.chmod(0o600)
    return key


def _authorized_keys(source: Path | Sequence[str]) -> AuthorizedKeys:
    if isinstance(source, Path):
        return AuthorizedKeys.from_file(source)
    return AuthorizedKeys.from_lines(source)


def _source_address(connection: asyncssh.SSHServerConnection) -> str:
    """Where a connection comes from, as connections are counted: the rule of the switch's other
    per-caller limits (an IPv6 address as its /64, an IPv4-mapped one as its IPv4 address)."""
    peer = connection.get_extra_info("peername", ("?", 0))
    host = str(peer[0])
    if ":" in host:
        return caller_address(f"ipv6:[{host}]:{peer[1]}")
    return caller_address(f"ipv4:{host}:{peer[1]}")


@dataclass(frozen=True, slots=True)
class _CommandInFlight:
    caller: Caller
    line: str
    mode: str


class _ConsoleSSHServer(asyncssh.SSHServer):
    """One per connection: public keys only, and the key decides the caller's role."""

    def __init__(self, console: OpsConsole) -> None:
        self._console = console
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn
        self._console.admit(conn)

    def auth_completed(self) -> None:
        assert self._connection is not None, "login before the connection was made"
        if not self._console.logged_in(self._connection):
            log.warning("console connection refused: too many logged in")
            self._connection.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._console.forget(self._connection)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        authorized = self._console.authorized_keys.find(key)
        if authorized is None or self._connection is None:
            log.info("console key refused", extra={"key_fingerprint": key.get_fingerprint()})
            return False
        peer = self._connection.get_extra_info("peername", ("?", 0))
        caller = Caller(
            name=authorized.name,
            role=authorized.role,
            key_fingerprint=authorized.fingerprint,
            ssh_username=username,
            remote_address=f"{peer[0]}:{peer[1]}",
        )
        # The last key validated is the one whose signature completes the login.
        self._connection.set_extra_info(**{_CALLER_INFO: caller})
        return True


class OpsConsole:
    """Start and stop from synchronous code; the SSH server runs on its own loop thread."""

    def __init__(self, backend: OpsBackend, config: ConsoleConfig) -> None:
        self._backend = backend
        self._config = config
        self.authorized_keys = _authorized_keys(config.authorized_keys)
        self.audit = AuditLog(config.audit_log_path)
        self._host_key = load_host_key(config.host_key_path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()  # logged in
        # Oldest first (dicts keep insertion order), each with its source address; the per-address
        # dicts hold the same connections, oldest first too.
        self._logging_in: dict[asyncssh.SSHServerConnection, str] = {}
        self._logging_in_by_address: dict[str, dict[asyncssh.SSHServerConnection, None]] = {}
        self._sessions_open: dict[asyncssh.SSHServerConnection, int] = {}  # on the loop thread only
        self._closed_before_login_logged_s = -math.inf  # on the loop thread only, as the two below
        self._closed_before_login_not_logged = 0
        # Times of each address's recent new connections; least recently arrived first.
        self._arrivals: dict[str, collections.deque[float]] = {}  # on the loop thread only
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        # Commands handed to the workers whose outcome is not yet audited, with what their audit
        # line needs: those the stop cancels still waiting for a worker are audited not_run then.
        self._commands_in_flight: dict[concurrent.futures.Future[CommandResult], _CommandInFlight] = {}
        self._commands_lock = threading.Lock()
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def host_key_fingerprint(self) -> str:
        fingerprint: str = self._host_key.get_fingerprint()
        return fingerprint

    def commands_in_flight(self) -> int:
        """Commands handed to the backend workers (running or waiting for one) not yet answered."""
        with self._commands_lock:
            return len(self._commands_in_flight)

    def start(self) -> int:
        """Listen; returns the bound port (useful when configured with port 0)."""
        assert self._loop is None, "console already started"
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._workers = concurrent.futures.ThreadPoolExecutor(
            BACKEND_WORKERS_MAX, thread_name_prefix="ops-console-backend"
        )
        self._thread = threading.Thread(target=loop.run_forever, name="ops-console", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), loop).result(START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise
        log.info(
            "ops console listening",
            extra={"host": self._config.host, "port": self._port, "keys": len(self.authorized_keys)},
        )
        return self._port

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(STOP_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, RuntimeError):
            log.warning("ops console did not close in time; stopping its loop")
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        if loop is not None and not loop.is_running():
            loop.close()
        if self._workers is not None:
            # A backend call stuck past its timeout must not hold the shutdown.
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._audit_cancelled()
        self._loop = self._thread = self._workers = None

    def _audit_cancelled(self) -> None:
        """A not_run line for each command the stop cancelled while it waited for a worker: its
        session is gone with the loop, and the audit log showed nothing of it."""
        with self._commands_lock:
            cancelled = list(self._commands_in_flight.items())
            self._commands_in_flight.clear()
        for running, command in cancelled:
            if not running.cancelled():
                continue
            try:
                self.audit.record(
                    command.caller,
                    command.line,
                    Outcome.not_run.name,
                    mode=command.mode,
                    exit_status=Outcome.not_run.exit_status,
                )
            except OSError:
                log.exception("console audit line not written", extra={"outcome": Outcome.not_run.name})

    async def _listen(self) -> None:
        self._acceptor = await asyncssh.create_server(
            lambda: _ConsoleSSHServer(self),
            self._config.host,
            self._config.port,
            server_host_keys=[self._host_key],
            process_factory=self._session,
            line_editor=True,
            line_echo=True,
            # A byte that is not UTF-8 is a refused command (console_commands names it), not a
            # protocol error that drops the operator's connection.
            encoding="utf-8",
            errors="replace",
            max_line_length=LINE_EDITOR_CHARS_MAX,
            login_timeout=LOGIN_TIMEOUT_S,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            reuse_address=True,
        )
        self._port = self._acceptor.get_port()

    async def _close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        connections = [*self._connections, *self._logging_in]
        for connection in connections:
            connection.close()
        for connection in connections:
            await connection.wait_closed()
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
        # A session waiting on a command (a worker the database holds) outlives its connection's
        # close: asyncssh does not cancel it, and the loop was stopped and closed with it pending
        # ("Task was destroyed but it is pending"). Every task left on the console's own loop is
        # cancelled and awaited; a command it waited for stays with the workers (the stop cancels
        # those still queued, audited not_run).
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    # -- connections and sessions ---------------------------------------------------------

    def admit(self, connection: asyncssh.SSHServerConnection) -> None:
        """Let a new connection log in; past its address's limit that address's oldest still logging
        in is closed, past the limit of all the oldest of the address holding the most."""
        address = _source_address(connection)
        if not self._arrival_allowed(address):
            self._log_closed_before_login("too many new connections from its address")
            connection.close()
            return
        same_address = self._logging_in_by_address.get(address, {})
        if len(same_address) >= CONNECTIONS_LOGGING_IN_PER_ADDRESS_MAX:
            self._close_before_login(next(iter(same_address)))
        elif len(self._logging_in) >= CONNECTIONS_LOGGING_IN_MAX:
            self._close_before_login(self._oldest_of_the_busiest_address())
        self._logging_in[connection] = address
        self._logging_in_by_address.setdefault(address, {})[connection] = None

    def _arrival_allowed(self, address: str) -> bool:
        """False past the address's rate; else count the new connection. Refused ones are not
        counted: they cost no key exchange, and counted, a script polling past the rate from the
        operators' jump host kept every login from there out while it ran and a window after."""
        now_s = time.monotonic()
        arrivals = self._arrivals.pop(address, None)
        if arrivals is None:
            arrivals = collections.deque(maxlen=self._config.connections_per_address_per_window_max)
        while arrivals and arrivals[0] <= now_s - self._config.connections_per_address_window_s:
            arrivals.popleft()
        allowed = len(arrivals) < self._config.connections_per_address_per_window_max
        if allowed:
            arrivals.append(now_s)
        self._arrivals[address] = arrivals  # last: the dict stays ordered by latest arrival
        if len(self._arrivals) > ADDRESSES_COUNTED_MAX:
            del self._arrivals[next(iter(self._arrivals))]
        return allowed

    def _oldest_of_the_busiest_address(self) -> asyncssh.SSHServerConnection:
        most = max(len(connections) for connections in self._logging_in_by_address.values())
        return next(
            connection
            for connection, address in self._logging_in.items()
            if len(self._logging_in_by_address[address]) == most
        )

    def _close_before_login(self, connection: asyncssh.SSHServerConnection) -> None:
        self._not_logging_in(connection)
        self._log_closed_before_login("too many logging in")
        connection.close()

    def _not_logging_in(self, connection: asyncssh.SSHServerConnection) -> None:
        address = self._logging_in.pop(connection, None)
        if address is None:
            return
        same_address = self._logging_in_by_address[address]
        del same_address[connection]
        if not same_address:
            del self._logging_in_by_address[address]

    def _log_closed_before_login(self, reason: str) -> None:
        now_s = time.monotonic()
        if now_s - self._closed_before_login_logged_s < self._config.closed_before_login_log_interval_s:
            self._closed_before_login_not_logged += 1
            return
        log.warning(
            f"console connection closed before login: {reason}",
            extra={"closed_before_login_not_logged": self._closed_before_login_not_logged},
        )
        self._closed_before_login_logged_s = now_s
        self._closed_before_login_not_logged = 0

    def logged_in(self, connection: asyncssh.SSHServerConnection) -> bool:
        """False, and the connection is to be closed, when CONNECTIONS_MAX are logged in."""
        self._not_logging_in(connection)
        if len(self._connections) >= CONNECTIONS_MAX:
            return False
        self._connections.add(connection)
        return True

    def forget(self, connection: asyncssh.SSHServerConnection) -> None:
        self._not_logging_in(connection)
        self._connections.discard(connection)

    async def _session(self, process: asyncssh.SSHServerProcess[str]) -> None:
        caller = process.get_extra_info(_CALLER_INFO)
        if not isinstance(caller, Caller):
            process.stderr.write("no identity for this session\r\n")
            process.exit(Outcome.refused.exit_status)
            return
        connection = process.channel.get_connection()
        assert isinstance(connection, asyncssh.SSHServerConnection), connection
        if self._sessions_open.get(connection, 0) >= SESSIONS_PER_CONNECTION_MAX:
            mode = "shell" if process.command is None else "exec"
            await self._audit(caller, "(session)", Outcome.refused.name, mode=mode)
            process.stderr.write(
                f"too many sessions on this connection (at most {SESSIONS_PER_CONNECTION_MAX})\r\n"
            )
            process.exit(Outcome.refused.exit_status)
            return
        self._sessions_open[connection] = self._sessions_open.get(connection, 0) + 1
        try:
            await self._serve(process, caller)
        finally:
            self._session_ended(connection)

    def _session_ended(self, connection: asyncssh.SSHServerConnection) -> None:
        left = self._sessions_open.pop(connection) - 1
        if left:
            self._sessions_open[connection] = left

    async def _serve(self, process: asyncssh.SSHServerProcess[str], caller: Caller) -> None:
        try:
            if process.command is not None:
                await self._exec(process, caller, process.command)
            else:
                await self._shell(process, caller)
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, BrokenPipeError):
            return
        except Exception:
            log.exception("console session failed")
            process.exit(Outcome.error.exit_status)

    async def _exec(self, process: asyncssh.SSHServerProcess[str], caller: Caller, command: str) -> None:
        await self._audit(caller, "(login)", "ok", mode="exec")
        result = await self._run(caller, command, mode="exec")
        stream = process.stdout if result.outcome is Outcome.ok else process.stderr
        if result.output:
            stream.write(result.output + "\n")
        process.exit(result.exit_status)

    async def _shell(self, process: asyncssh.SSHServerProcess[str], caller: Caller) -> None:
        await self._audit(caller, "(login)", "ok", mode="shell")
        prompt = f"txswitch {caller.role.value}> "
        process.channel.set_write_buffer_limits(high=OUTPUT_BUFFERED_BYTES_MAX)
        process.stdout.write(f"{self._config.banner}; you are {caller.name} ({caller.role.value})")
        process.stdout.write("; type help\n")
        while True:
            process.stdout.write(prompt)
            line = await self._read_line(process)
            if line is None or line.strip() in _EXIT_WORDS:
                break
            if not line.strip():
                continue
            # Only the line's end goes: stripped of its spaces, a line over the limit fitted in it.
            result = await self._run(caller, line.rstrip("\r\n"), mode="shell")
            if result.output:
                process.stdout.write(result.output + "\n")
            if not await self._output_read(process, caller):
                break
        process.stdout.write("bye\n")
        process.exit(0)

    async def _output_read(self, process: asyncssh.SSHServerProcess[str], caller: Caller) -> bool:
        """Wait, before the next command, for the client to read output past the buffer limit;
        False when it has not within the idle timeout."""
        try:
            await asyncio.wait_for(process.stdout.drain(), self._config.session_idle_timeout_s)
        except TimeoutError:
            log.warning("console session closed: its output was not read", extra={"who": caller.name})
            return False
        return True

    async def _read_line(self, process: asyncssh.SSHServerProcess[str]) -> str | None:
        """The next line, "" after an interrupt, None at end of input or idle timeout."""
        try:
            line = await asyncio.wait_for(process.stdin.readline(), self._config.session_idle_timeout_s)
        except TimeoutError:
            process.stdout.write("\nidle too long, closing\n")
            return None
        except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
            process.stdout.write("\n")
            return ""
        return line if line else None

    async def _audit(
        self, caller: Caller, command: str, outcome: str, *, mode: str, exit_status: int | None = None
    ) -> None:
        """Write an audit line on a thread: its fsync waits for the disk, and on the loop every
        other console session waited with it."""
        record = self.audit.record
        await asyncio.to_thread(record, caller, command, outcome, mode=mode, exit_status=exit_status)

    async def _run(self, caller: Caller, line: str, *, mode: str) -> CommandResult:
        """Run line on a worker; a command that changes the switch is audited as started first,
        so no change is without its line, and then every command with its outcome."""

        def audit_start() -> None:
            self.audit.record(caller, line, AUDIT_STARTED, mode=mode)

        assert self._workers is not None, "console not started"
        with self._commands_lock:
            running = self._workers.submit(execute, line, caller, self._backend, audit_start)
            self._commands_in_flight[running] = _CommandInFlight(caller, line, mode)
        try:
            # Shielded: wait_for's cancel at the timeout took a command still queued off the queue
            # without a word, and the operator was told it may still complete; _past_timeout says which.
            result = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(running)), self._config.backend_call_timeout_s
            )
        except TimeoutError:
            result = self._past_timeout(running)
        with self._commands_lock:  # audited below from here, not by the stop
            del self._commands_in_flight[running]
        try:
            # Not on the backend workers: when every one of them waits on a command the switch
            # does not answer, a timed-out command's line waited with them, and its operator too.
            await self._audit(caller, line, result.outcome.name, mode=mode, exit_status=result.exit_status)
        except OSError:
            # Shown, not dropped: a change already done is already in the log as started.
            log.exception("console audit line not written", extra={"outcome": result.outcome.name})
            return CommandResult(f"{result.output}\n{AUDIT_OUTCOME_NOT_WRITTEN}", result.outcome)
        return result

    def _past_timeout(self, running: concurrent.futures.Future[CommandResult]) -> CommandResult:
        """What the operator is told of a command past its timeout: not run when it was still
        waiting for a worker (cancelled here, it never runs), unknown when it had started."""
        seconds = self._config.backend_call_timeout_s
        if running.cancel():
            return CommandResult(NOT_RUN.format(seconds=seconds), Outcome.not_run)
        if running.done():  # done between the timeout and here
            return running.result()
        # Not `error`: the command may still complete, so its outcome is unknown, not failed.
        return CommandResult(TIMED_OUT.format(seconds=seconds), Outcome.timed_out)


__all__ = ["ConsoleConfig", "OpsConsole", "Role", "load_host_key"]
