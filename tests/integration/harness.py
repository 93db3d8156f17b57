"""A running switch on loopback with a small world in it: programmes, a merchant, terminals, cards."""

from __future__ import annotations

import atexit
import datetime
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
from sqlalchemy import Engine, event

from ops.logs import holds_card_number
from protocols.wire import backoffice_pb2 as bo
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from protocols.wire import terminal_pb2 as pb
from protocols.wire import terminal_pb2_grpc as pb_grpc
from switch.config import Settings
from switch.server import SwitchServer
from switch.store import engine as engine_module
from switch.store.engine import create_schema, make_engine
from switch.store.journal import Write
from tests.pg import postgres_schema

ADMIN_TOKEN = "test-admin-token"
MERCHANT_EMAIL = "shop@example.test"
MERCHANT_PASSWORD = "shop-password"
OTHER_EMAIL = "other@example.test"
EMPLOYEE = pb.EmployeeAuth(employee_number="7", pin="4321")


@dataclass
class TerminalClient:
    stub: pb_grpc.TerminalStub
    credential: str
    terminal_id: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    def redeem(
        self, card: str, amount_minor: int, txn: str = "", *, partial: bool = False, currency: str = "EUR"
    ) -> pb.TransactionResponse:
        request = pb.RedeemRequest(
            transaction_id=txn or new_txn(),
            card=pb.CardRef(card_number=card),
            amount=pb.Amount(amount_minor=amount_minor, currency=currency),
            allow_partial=partial,
        )
        return self.stub.Redeem(request, metadata=self.metadata, timeout=20)

    def load(self, card: str, amount_minor: int, txn: str = "") -> pb.TransactionResponse:
        request = pb.LoadRequest(
            transaction_id=txn or new_txn(),
            card=pb.CardRef(card_number=card),
            amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
        )
        return self.stub.Load(request, metadata=self.metadata, timeout=20)

    def balance(self, card: str) -> int:
        response = self.stub.Balance(
            pb.BalanceRequest(card=pb.CardRef(card_number=card)), metadata=self.metadata, timeout=20
        )
        return response.balance.amount_minor

    def reversal(self, original: str) -> pb.TransactionResponse:
        return self.stub.Reversal(
            pb.ReversalRequest(original_transaction_id=original), metadata=self.metadata, timeout=20
        )

    def cancel(self, original: str, pin: str = EMPLOYEE.pin, txn: str = "") -> pb.TransactionResponse:
        request = pb.CancelRequest(
            transaction_id=txn or new_txn(),
            original_transaction_id=original,
            employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=pin),
        )
        return self.stub.Cancel(request, metadata=self.metadata, timeout=20)

    def refund(
        self, original: str, amount_minor: int, pin: str = EMPLOYEE.pin, txn: str = ""
    ) -> pb.TransactionResponse:
        request = pb.RefundRequest(
            transaction_id=txn or new_txn(),
            original_transaction_id=original,
            amount=pb.Amount(amount_minor=amount_minor, currency="EUR"),
            employee=pb.EmployeeAuth(employee_number=EMPLOYEE.employee_number, pin=pin),
        )
        return self.stub.Refund(request, metadata=self.metadata, timeout=20)


def clock_at(at: datetime.datetime) -> types.ModuleType:
    """A stand-in for the `datetime` module whose datetime.now() tells the given instant: the wall
    clock only (as freezegun would set it); everything else is the real datetime module."""
    assert at.tzinfo is not None

    class FrozenDateTime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> datetime.datetime:  # type: ignore[override]
            return at.astimezone(tz) if tz is not None else at.astimezone().replace(tzinfo=None)

    module = types.ModuleType("datetime")
    module.__dict__.update(datetime.__dict__)
    module.datetime = FrozenDateTime  # type: ignore[attr-defined]
    return module


# call(cursor, statement, parameters): the DBAPI cursor, the SQL text and its parameters.
StatementCall = Callable[[Any, str, Any], None]
# call(): run on the thread whose connection begins or commits a transaction.
TransactionCall = Callable[[], None]
Moment = Literal["before", "after", "begin", "commit"]


@dataclass(frozen=True, eq=False)
class _Hook:
    """An open window's call, on the thread doing it, at moment on engine: before or after each
    statement (with its cursor, text and parameters), as a transaction begins or commits (none)."""

    engine: Engine
    moment: Moment
    call: Callable[..., None]


_hooks: list[_Hook] = []  # those open now, on any engine
_hooks_lock = threading.Lock()


def _run_hooks(moment: Moment, conn: Any, *arguments: Any) -> None:
    if not _hooks:  # none open: the usual case, no lock taken
        return
    with _hooks_lock:
        calls = [hook.call for hook in _hooks if hook.moment == moment and hook.engine is conn.engine]
    for call in calls:  # outside the lock: a hook may wait, or run statements itself
        call(*arguments)


def _before_statement(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
    _run_hooks("before", conn, cursor, statement, parameters)


def _after_statement(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
    _run_hooks("after", conn, cursor, statement, parameters)


def _on_begin(conn: Any) -> None:
    _run_hooks("begin", conn)


def _on_commit(conn: Any) -> None:
    _run_hooks("commit", conn)


# One listener per event for every engine, added once as this module is imported, before any test's
# switch runs, and never removed: SQLAlchemy keeps listeners in a deque each statement iterates, and
# one added or removed while a switch's threads run statements failed theirs ("deque mutated during
# iteration", as `make profile` did). statements_run, on_statement and on_transaction open and close a
# window instead.
event.listen(Engine, "before_cursor_execute", _before_statement)
event.listen(Engine, "after_cursor_execute", _after_statement)
event.listen(Engine, "begin", _on_begin)
event.listen(Engine, "commit", _on_commit)


@contextmanager
def _hook_open(engine: Engine, moment: Moment, call: Callable[..., None]) -> Iterator[None]:
    hook = _Hook(engine, moment, call)
    with _hooks_lock:
        _hooks.append(hook)
    try:
        yield
    finally:
        with _hooks_lock:
            _hooks.remove(hook)


@contextmanager
def statements_run(engine: Engine, containing: str = "") -> Iterator[list[str]]:
    """The SQL statements run on engine meanwhile (those containing the text, if given)."""
    seen: list[str] = []

    def record(_cursor: Any, statement: str, _parameters: Any) -> None:
        if containing in statement:
            seen.append(statement)  # list.append is atomic: statements run on several threads

    with _hook_open(engine, "before", record):
        yield seen


def on_statement(
    engine: Engine, moment: Literal["before", "after"], call: StatementCall
) -> AbstractContextManager[None]:
    """call(cursor, statement, parameters) just before or just after each statement run on engine
    meanwhile, on the thread running it (it may wait there, to hold that thread at that point).
    Use this, never event.listen/remove on an engine whose switch is running."""
    return _hook_open(engine, moment, call)


def on_transaction(
    engine: Engine, moment: Literal["begin", "commit"], call: TransactionCall
) -> AbstractContextManager[None]:
    """call() as each transaction on engine begins or commits meanwhile, on the thread doing it (it
    may wait there). Use this, never event.listen/remove on an engine whose switch is running."""
    return _hook_open(engine, moment, call)


LOCK_HELD_S_MAX = 10.0  # the journal's SQLite busy timeout: a commit waits no longer for the lock


def _start_lock_holder(world: World, release: threading.Event, seconds: float) -> threading.Thread:
    """A thread on another connection that takes SQLite's write lock, holds it until release is set
    or seconds have passed, then commits; returned once the lock is taken."""
    path = world.server.settings.effective_database_url.split("///", 1)[1]
    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(LOCK_HELD_S_MAX), "the other connection did not take the lock"
    return thread


def hold_sqlite_write_lock(world: World, seconds: float) -> threading.Thread:
    """Another connection holds SQLite's write lock for a while, so the journal's commits wait."""
    return _start_lock_holder(world, threading.Event(), seconds)


@contextmanager
def sqlite_write_lock_held(world: World) -> Iterator[None]:
    """Another connection holds SQLite's write lock until the block ends, so the journal's commits
    wait; released at the block's end (or after LOCK_HELD_S_MAX), not after a fixed sleep."""
    release = threading.Event()
    thread = _start_lock_holder(world, release, LOCK_HELD_S_MAX)
    try:
        yield
    finally:
        release.set()
        thread.join()


def _waiting_in(waiter: str, under: str = "") -> bool:
    """Whether some thread is now blocked in threading's wait (an Event's, a Condition's) called by a
    function named waiter (its first frame outside threading.py), itself called from one named under
    at any depth, if given."""
    for frame in sys._current_frames().values():
        if frame.f_code.co_name != "wait" or not frame.f_code.co_filename.endswith("threading.py"):
            continue
        caller = frame.f_back
        while caller is not None and caller.f_code.co_filename.endswith("threading.py"):
            caller = caller.f_back
        if caller is None or caller.f_code.co_name != waiter:
            continue
        while under and caller is not None and caller.f_code.co_name != under:
            caller = caller.f_back
        if caller is not None:
            return True
    return False


SEEN_WAIT_S_MAX = 5.0


@contextmanager
def journal_write_held_past_a_wait(
    world: World, wait_s: float, waiter: str, under: str = "", which: Callable[[Write], bool] = lambda _: True
) -> Iterator[None]:
    """The first write handed to the journal meanwhile (of those `which` picks) waits for SQLite's
    write lock: another
    connection takes the lock as it is submitted (the journal writer's submit, observed and called
    through once the lock is taken; the caller's own transactions before it have landed), and holds
    it until a thread has been seen blocked in a wait of `waiter` (called from `under`, if given) and
    wait_s more have passed.
    A wait of wait_s begun there (a reply timeout) has then run out, however loaded the machine, as
    it began no later than it was seen. Released after SEEN_WAIT_S_MAX if no such wait is seen, and
    when the block ends."""
    writer = world.server.core.writer
    submit = writer.submit
    release = threading.Event()
    holders: list[threading.Thread] = []

    def watch() -> None:
        deadline_s = time.monotonic() + SEEN_WAIT_S_MAX
        while not _waiting_in(waiter, under):
            if release.wait(0.005) or time.monotonic() >= deadline_s:
                break
        else:
            release.wait(wait_s)
        release.set()

    def observed(write: Write, done: Any) -> bool:
        if not holders and which(write):
            holders.append(_start_lock_holder(world, release, LOCK_HELD_S_MAX))
            holders.append(threading.Thread(target=watch))
            holders[-1].start()
        return submit(write, done)

    setattr(writer, "submit", observed)  # noqa: B010 (an instance's method: mypy refuses the assignment)
    try:
        yield
    finally:
        delattr(writer, "submit")
        release.set()
        for thread in holders:
            thread.join()


@contextmanager
def sqlite_lock_waits(call: Callable[[], None]) -> Iterator[None]:
    """call() on a writer's thread each time it finds SQLite's write lock taken by another connection
    (switch.store.engine.on_write_lock_taken), meanwhile: a sure sign that the thread waits for it."""
    assert engine_module.on_write_lock_taken is None, "one window on the write lock's waits at a time"
    engine_module.on_write_lock_taken = call
    try:
        yield
    finally:
        engine_module.on_write_lock_taken = None


def new_txn() -> str:
    """A random id; drawn again when its digits hold a card number (about one uuid4 in 185), which
    the switch refuses as an id it would store in clear."""
    while True:
        txn = uuid.uuid4().hex
        if not holds_card_number(txn):
            return txn


@dataclass
class World:
    server: SwitchServer
    channel: grpc.Channel
    backoffice: bo_grpc.BackofficeStub
    gift_programme: str = ""
    benefit_programme: str = ""
    foreign_programme: str = ""
    merchant_id: str = ""
    terminals: list[TerminalClient] = field(default_factory=list)

    @property
    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {ADMIN_TOKEN}"),)

    def issue(self, balance_minor: int, programme: str = "") -> str:
        request = bo.IssueCardRequest(
            programme_id=programme or self.gift_programme,
            initial_load=pb.Amount(amount_minor=balance_minor, currency="EUR"),
            request_id=new_txn(),
        )
        return self.backoffice.IssueCard(request, metadata=self.admin_metadata, timeout=20).card_number

    def activate(self, device_name: str, location: str = "Shop") -> TerminalClient:
        stub = pb_grpc.TerminalStub(self.channel)
        response = stub.Activate(
            pb.ActivateRequest(
                merchant_email=MERCHANT_EMAIL,
                password=MERCHANT_PASSWORD,
                device_name=device_name,
                location=location,
            ),
            timeout=20,
        )
        return TerminalClient(stub, response.credential, response.terminal_id)

    def ledger(self) -> bo.LedgerCheck:
        return self.backoffice.CheckLedger(bo.CheckLedgerRequest(), metadata=self.admin_metadata, timeout=20)


_schema_template: list[Path] = []  # this process's, once made


def schema_template() -> Path:
    """A SQLite file holding a new schema and nothing else, made once in this process (each xdist
    worker) by `create_schema`, as a switch makes it on a new file; removed as the process ends.

    A World's switch on a new SQLite file spent 30 to 200 ms creating its 31 tables and 60
    indexes; on a copy of this file (0.2 ms) its `create_schema` finds them all and creates none."""
    if not _schema_template:
        directory = Path(tempfile.mkdtemp(prefix="txswitch-schema-"))
        atexit.register(shutil.rmtree, directory, True)
        path = directory / "schema.sqlite"
        engine = make_engine(f"sqlite:///{path}")
        try:
            create_schema(engine)
        finally:
            engine.dispose()  # the last connection's close checkpoints the WAL into the file
        assert not Path(f"{path}-wal").exists(), "the template is whole in its file, nothing in a WAL"
        _schema_template.append(path)
    return _schema_template[0]


def start_world(data_dir: Path, database_url: str, terminals: int = 2, **overrides: object) -> World:
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        grpc_port=0,
        metrics_port=-1,
        console_port=-1,
        demo_data=False,
        card_hash_key_hex="11" * 32,
        admin_token=ADMIN_TOKEN,
    ).with_overrides(**overrides)
    database_file = settings.data_dir / "txswitch.sqlite"
    if not settings.database_url and not database_file.exists():  # a new World on its own SQLite file
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(schema_template(), database_file)
    server = SwitchServer(settings)
    server.start()
    channel = grpc.insecure_channel(server.address)
    world = World(server, channel, bo_grpc.BackofficeStub(channel))
    admin = server.core.admin
    from switch.domain.programmes import ProgrammeKind

    world.gift_programme = admin.create_programme(
        "Gift", ProgrammeKind.gift, "EUR", "600101", balance_max_minor=100_000
    )
    world.benefit_programme = admin.create_programme(
        "Taxi",
        ProgrammeKind.benefit,
        "EUR",
        "600102",
        balance_max_minor=100_000,
        copay=(180, 500),
        funder_name="City",
    )
    world.foreign_programme = admin.create_programme("Elsewhere", ProgrammeKind.gift, "EUR", "600103")
    world.merchant_id = admin.create_merchant("Shop", MERCHANT_EMAIL, MERCHANT_PASSWORD)
    admin.add_location(world.merchant_id, "Shop")
    admin.add_employee(world.merchant_id, EMPLOYEE.employee_number, "Manager", EMPLOYEE.pin, "manager")
    admin.join_programme(world.merchant_id, world.gift_programme, 250)
    admin.join_programme(world.merchant_id, world.benefit_programme, 0)
    world.terminals = [world.activate(f"A77-{index}") for index in range(terminals)]
    return world


def world_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, terminals: int = 2, **overrides: object
) -> Iterator[World]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgres" else ""
        world = start_world(tmp_path, url, terminals, **overrides)
        try:
            yield world
        finally:
            world.channel.close()
            world.server.stop()


@dataclass
class SecondNode:
    """Node B: another switch on world's database, and world's first terminal connected to it."""

    server: SwitchServer
    terminal: TerminalClient
    backoffice: bo_grpc.BackofficeStub


@contextmanager
def second_node(world: World, data_dir: Path) -> Iterator[SecondNode]:
    """Start node B beside world's switch (which must share its database knowingly: several nodes)."""
    settings = world.server.settings.with_overrides(
        data_dir=data_dir, database_url=world.server.settings.effective_database_url
    )
    node_b = SwitchServer(settings)
    node_b.start()
    channel_b = grpc.insecure_channel(node_b.address)
    try:
        on_a = world.terminals[0]
        on_b = TerminalClient(pb_grpc.TerminalStub(channel_b), on_a.credential, on_a.terminal_id)
        yield SecondNode(node_b, on_b, bo_grpc.BackofficeStub(channel_b))
    finally:
        channel_b.close()
        node_b.stop()
