"""SwitchServer: wires storage, actors, gRPC services, health and reflection into one process."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actors.base import keep_waits_off_this_thread, let_waits_on_this_thread
from actors.journal_writer import LostObserver
from ops.metrics import SwitchMetrics, watch_loop_lag
from ops.service import SwitchOperations
from protocols.backoffice_service import BackofficeService
from protocols.cardholder_service import CardholderService
from protocols.iso_inbound import IsoInboundListener, inbound_listener
from protocols.portal_service import PortalService
from protocols.serving import BusyMethodsRegistered
from protocols.terminal_service import RequestObserver, TerminalService
from protocols.wire import (
    backoffice_pb2,
    cardholder_pb2,
    cardholder_pb2_grpc,
    portal_pb2,
    portal_pb2_grpc,
    terminal_pb2,
    terminal_pb2_grpc,
)
from protocols.wire import backoffice_pb2_grpc as bo_grpc
from switch.acquiring import Acquiring, PaymentNode
from switch.config import Settings
from switch.core import SwitchCore
from switch.demo import ensure_demo_data
from switch.listening import host_port, listening
from switch.pins import TerminalPinKeys
from switch.secret_files import card_hash_key, secret_file
from switch.security import MasterKey, SecurityModule
from switch.store.engine import MissingIndexes, create_schema, make_engine, shown_url
from switch.store.keys import KeyStore
from switch.store.node_lock import NodeLock, NodeLockError, node_lock_for
from switch.store.repository import Store

log = logging.getLogger(__name__)

GRPC_START_TIMEOUT_S = 30.0  # bound already: starting is grpc's own setup, never a wait on the network

SERVICE_NAMES = (
    terminal_pb2.DESCRIPTOR.services_by_name["Terminal"].full_name,
    backoffice_pb2.DESCRIPTOR.services_by_name["Backoffice"].full_name,
    portal_pb2.DESCRIPTOR.services_by_name["Portal"].full_name,
    cardholder_pb2.DESCRIPTOR.services_by_name["Cardholder"].full_name,
)
# What the gRPC port serves, as `txswitch serve` and a refused bind name it: SERVICE_NAMES, in words.
GRPC_SERVES = "terminals, backoffice, portal and cardholders"


class SwitchServer:
    def __init__(
        self,
        settings: Settings,
        observe: RequestObserver | None = None,
        on_journal_lost: LostObserver | None = None,
    ) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = settings.admin_token or secret_file(
            settings.data_dir / "admin.token", secrets.token_urlsafe(24)
        )
        if not settings.master_key_hex:
            master_path = settings.data_dir / "master.key"
            master_hex = secret_file(master_path, secrets.token_hex(32))
            log.warning(
                "master key read from %s: the keys sealed under it are no safer than that directory; "
                "set TXSWITCH_MASTER_KEY_HEX outside it in production",
                master_path,
            )
            settings = settings.with_overrides(master_key_hex=master_hex)
            self.settings = settings
        card_key = (
            bytes.fromhex(settings.card_hash_key_hex)
            if settings.card_hash_key_hex
            else card_hash_key(
                settings.data_dir / "card_hash.key", MasterKey.from_hex(settings.master_key_hex)
            )
        )
        shared = settings.copy_max_age_s is not None
        # Alone on its file: the lock it holds while it runs.
        self._node_lock: NodeLock | None = node_lock_for(settings.effective_database_url, shared)
        if self._node_lock is not None:
            self._node_lock.acquire()  # NodeLockError if another switch runs on it
        node = PaymentNode(self._node_id(settings, shared), shared)
        try:
            self.engine = make_engine(settings.effective_database_url)
            missing_indexes = MissingIndexes(self.engine, create_schema(self.engine))
        except BaseException:
            if self._node_lock is not None:
                self._node_lock.release()
            raise
        _refuse_old_payables(Store(self.engine), settings)
        # One cache of terminal PIN keys for activation, payments and closed-loop PIN checks; read
        # again once older than a shared copy may be, so an activation on another node counts here.
        terminal_pin_keys = TerminalPinKeys(KeyStore(self.engine), max_age_s=settings.copy_max_age_s)
        # Bank-card payments; None when no acquirers file is configured.
        self.acquiring: Acquiring | None = Acquiring.from_settings(
            settings,
            self.engine,
            SecurityModule(MasterKey.from_hex(settings.master_key_hex)),
            card_key,
            terminal_pin_keys,
            node,
        )
        self.metrics = SwitchMetrics()
        self.core = SwitchCore(
            settings,
            self.engine,
            card_key,
            on_batch=self.metrics.observe_commit,
            on_commit_failure=self.metrics.commit_failed,
            payments=self.acquiring.processor if self.acquiring is not None else None,
            terminal_pin_keys=terminal_pin_keys,
            on_receipt=self.metrics.receipt,
            on_journal_lost=on_journal_lost,
        )
        self.draining = threading.Event()
        self.ops = SwitchOperations(
            settings,
            self.core,
            self.metrics,
            draining=self.draining,
            drain=self.drain,
            missing_indexes=missing_indexes,
        )
        self._observe = observe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None
        self._serving_asked: asyncio.Event | None = None
        self._grpc_started: futures.Future[bool] = futures.Future()  # False: stopped before serving
        self._grace_s = 0.0
        # Backoffice, health and reflection, and the terminal RPCs that may block, run here.
        self._blocking = futures.ThreadPoolExecutor(
            max_workers=settings.grpc_workers, thread_name_prefix="grpc"
        )
        self.iso_inbound: IsoInboundListener | None = None  # acquirers' ISO 8583 in, when configured
        self.health = health.HealthServicer()
        self.grpc_port = 0

    def _node_id(self, settings: Settings, shared: bool) -> str:
        """What names the bank-card payments this node sends (see `Acquiring.start`): the data
        directory's `node.id`, so a restarted node knows its own; a node sharing its data directory
        with one that runs gets an id of its own for this run, and its payments left in flight are
        then taken by age, as another node's."""
        if shared:
            self._node_lock = NodeLock(settings.data_dir / "node.id")
            try:
                self._node_lock.acquire()
            except NodeLockError:
                self._node_lock = None
                log.warning("another node runs from %s: this one names its payments anew", settings.data_dir)
                return secrets.token_hex(16)
        return secret_file(settings.data_dir / "node.id", secrets.token_hex(16))

    def start(self) -> None:
        """Bind every listener, then start what writes or sends by itself (the core's sweeps, the
        acquirer links with the reversal advices a restart left, the demo data), then serve.

        A listener that cannot bind (a port another process holds) raises CannotListenError, naming
        the listener and the setting that placed it, before anything was written or sent; what
        started is stopped again first, so no switch half started answers while its process ends."""
        self.core.start_workers()
        try:
            self._bind_all()
            self._start_work()
            self._serve_all()
        except BaseException:
            self.stop()
            raise

    def _bind_all(self) -> None:
        """gRPC bound but not yet answering, then metrics and the console, then the ISO 8583
        listener, bound but not yet answering either."""
        settings = self.settings
        bound: futures.Future[int] = futures.Future()
        self._loop_thread = threading.Thread(target=self._serve, args=(bound,), name="grpc-loop", daemon=True)
        self._loop_thread.start()
        with listening(f"gRPC ({GRPC_SERVES})", settings.grpc_host, settings.grpc_port, "grpc_port"):
            self.grpc_port = bound.result()
        iso_inbound = inbound_listener(self.core) if settings.iso_listen_port >= 0 else None
        acquiring = self.acquiring
        self.ops.start(
            gateway=acquiring.gateway if acquiring is not None else None,
            acquirer_endpoints=acquiring.config.gateway.acquirers if acquiring is not None else (),
            payment_recoveries=acquiring.recoveries if acquiring is not None else None,
            iso_inbound=iso_inbound.statistics if iso_inbound is not None else None,
        )
        if iso_inbound is not None:
            with listening("ISO 8583", settings.iso_listen_host, settings.iso_listen_port, "iso_listen_port"):
                iso_inbound.bind()
            self.iso_inbound = iso_inbound

    def _start_work(self) -> None:
        self.core.start_sweeps()
        if self.acquiring is not None:
            self.acquiring.start()  # pending reversals from before a restart go out from here
        if self.settings.demo_data:
            ensure_demo_data(self.core, self.settings.data_dir)

    def _serve_all(self) -> None:
        """gRPC and the ISO 8583 listener answer from here, and health says SERVING."""
        assert self._loop is not None and self._serving_asked is not None, "gRPC is bound"
        self._loop.call_soon_threadsafe(self._serving_asked.set)
        started = self._grpc_started.result(timeout=GRPC_START_TIMEOUT_S)
        assert started, "gRPC started serving"
        if self.iso_inbound is not None:
            self.iso_inbound.answer()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # A drain asked during the start (the console answers before gRPC does) is kept: looked at
        # after SERVING is set, so one asked meanwhile sets NOT_SERVING after it either way.
        if self.draining.is_set():
            self.drain()

    def _serve(self, bound: futures.Future[int]) -> None:
        """The gRPC server's event loop thread, until the server stops."""
        keep_waits_off_this_thread()
        try:
            asyncio.run(self._serve_async(bound))
        except BaseException as error:
            for waited in (bound, self._grpc_started):  # the starting thread waits for both in turn
                if not waited.done():
                    waited.set_exception(error)
            raise
        finally:
            let_waits_on_this_thread()  # a later thread may get this one's ident

    async def _serve_async(self, bound: futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        # The concurrency limit is the interceptor's: grpc.aio's counts only the calls it accepts.
        interceptors = self.ops.interceptors()
        # No SO_REUSEPORT (grpc's default): with it a second switch on this port shared it, each
        # connection going to either, instead of being refused.
        server = BusyMethodsRegistered(
            grpc.aio.server(
                migration_thread_pool=self._blocking,
                interceptors=interceptors,
                options=(("grpc.so_reuseport", 0),),
            ),
            interceptors=interceptors,
            accepts_per_method=self.settings.grpc_accepts_per_method,
        )
        terminal_pb2_grpc.add_TerminalServicer_to_server(
            TerminalService(self.core, self._blocking, self._observe, self.acquiring), server
        )
        bo_grpc.add_BackofficeServicer_to_server(
            BackofficeService(self.core, self.admin_token, self._blocking), server
        )
        portal_pb2_grpc.add_PortalServicer_to_server(PortalService(self.core, self._blocking), server)
        cardholder_pb2_grpc.add_CardholderServicer_to_server(CardholderService(self.core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = host_port(self.settings.grpc_host, self.settings.grpc_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            bound.set_exception(OSError("grpc could not bind it (taken, or no address of this machine)"))
            return
        self._stop_requested = asyncio.Event()
        self._serving_asked = asyncio.Event()  # or a stop: every other listener bound, the work started
        bound.set_result(port)
        await self._serving_asked.wait()
        serving = not self._stop_requested.is_set()
        # Started even when stopped before serving: grpc.aio (1.85) keeps a bound, never started
        # server's socket listening after stop() until the process ends, so a process embedding
        # SwitchServer kept the port after a refused start. Started here it is stopped at once, the
        # switch draining already (health NOT_SERVING, terminal requests UNAVAILABLE).
        await server.start()
        self._grpc_started.set_result(serving)
        lag = asyncio.create_task(watch_loop_lag(self.ops.metrics))
        await self._stop_requested.wait()
        await server.stop(self._grace_s)
        lag.cancel()

    def _ask_stop(self) -> None:
        """On the gRPC loop: a server still waiting to serve does not start."""
        assert self._stop_requested is not None and self._serving_asked is not None
        self._stop_requested.set()
        self._serving_asked.set()

    def drain(self) -> None:
        """Health NOT_SERVING and new terminal requests refused (UNAVAILABLE); in-flight ones finish."""
        self.draining.set()
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def address(self) -> str:
        return host_port(self.settings.grpc_host, self.grpc_port)

    def stop(self, grace_s: float = 5.0) -> None:
        """Drain, stop accepting, finish in-flight requests, flush commits, then stop the actors."""
        self.drain()
        self.health.enter_graceful_shutdown()
        if self._stop_requested is not None and self._loop is not None:
            self._grace_s = grace_s
            self._loop.call_soon_threadsafe(self._ask_stop)
        if self._loop_thread is not None:
            self._loop_thread.join(grace_s + 1)
        self._blocking.shutdown(wait=True)
        self.ops.stop_console()
        if self.iso_inbound is not None:
            self.iso_inbound.stop()
        if self.acquiring is not None:
            self.acquiring.stop()
        self.core.stop()
        self.ops.stop()
        if self._node_lock is not None:
            self._node_lock.release()
        self.engine.dispose()

    def wait(self) -> None:
        assert self._loop_thread is not None
        self._loop_thread.join()


def _refuse_old_payables(store: Store, settings: Settings) -> None:
    missing = store.memberships_without_payable_count()
    if missing:
        raise SystemExit(
            f"{shown_url(settings.effective_database_url)}: {missing} merchant memberships have no payable "
            "account of their programme; this data predates per-programme payables and there are no "
            "migrations. Start from an empty data directory (make clean)."
        )
