"""SwitchOperations: the metrics endpoint, the SSH console and the gRPC interceptors of one switch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from actors.acquirer_gateway import AcquirerGateway
from actors.acquirer_types import AcquirerEndpoint
from ops.console import ConsoleConfig, OpsConsole
from ops.grpc_interceptors import EdgeInterceptor
from ops.metrics import GcPauses, MetricsServer, SwitchMetrics
from ops.runtime import DatabaseReads, PaymentRecoveries, wire_metrics
from protocols.iso_inbound import ListenerStatistics
from switch.config import Settings
from switch.core import SwitchCore
from switch.listening import listening
from switch.ops_backend import SwitchOpsBackend
from switch.store.engine import MissingIndexes

log = logging.getLogger(__name__)

PORT_OFF = -1
AUDIT_LOG_NAME = "ops-audit.jsonl"
HOST_KEY_NAME = "ops_host_key"


class SwitchOperations:
    """Owns what operators connect to; start after the gRPC server, stop before the actors."""

    def __init__(
        self,
        settings: Settings,
        core: SwitchCore,
        metrics: SwitchMetrics,
        *,
        draining: threading.Event,
        drain: Callable[[], None],
        missing_indexes: MissingIndexes | None = None,
    ) -> None:
        self._settings = settings
        self._core = core
        self.metrics = metrics
        self._draining = draining
        self._drain = drain
        self._missing_indexes = missing_indexes
        self._metrics_server: MetricsServer | None = None
        self._database_reads: DatabaseReads | None = None
        self._gc_pauses = GcPauses(metrics)
        self.console: OpsConsole | None = None
        self.metrics_port: int | None = None
        self.console_port: int | None = None

    def interceptors(self) -> list[Any]:
        return [EdgeInterceptor(self.metrics, self._draining, self._settings.grpc_concurrent_rpcs_max)]

    def start(
        self,
        gateway: AcquirerGateway | None = None,
        acquirer_endpoints: Sequence[AcquirerEndpoint] = (),
        payment_recoveries: PaymentRecoveries | None = None,
        iso_inbound: Callable[[], ListenerStatistics] | None = None,
    ) -> None:
        settings = self._settings
        self._database_reads = wire_metrics(
            self.metrics, self._core, gateway, self._missing_indexes, payment_recoveries, iso_inbound
        )
        self._gc_pauses.start()
        if settings.metrics_port != PORT_OFF:
            server = MetricsServer(self.metrics, settings.metrics_host, settings.metrics_port)
            with listening("metrics", settings.metrics_host, settings.metrics_port, "metrics_port"):
                self.metrics_port = server.start()
            self._metrics_server = server
        keys = settings.console_authorized_keys
        if keys is not None and settings.console_port != PORT_OFF:
            backend = SwitchOpsBackend(
                self._core,
                drain=self._drain,
                draining=self._draining.is_set,
                requests_in_flight=self.metrics.requests_in_flight_total,
                gateway=gateway,
                acquirer_endpoints=acquirer_endpoints,
                missing_indexes=self._missing_indexes,
            )
            config = ConsoleConfig(
                authorized_keys=keys,
                audit_log_path=settings.data_dir / AUDIT_LOG_NAME,
                host=settings.console_host,
                port=settings.console_port,
                host_key_path=settings.data_dir / HOST_KEY_NAME,
            )
            console = OpsConsole(backend, config)
            with listening("the ops console", settings.console_host, settings.console_port, "console_port"):
                self.console_port = console.start()
            self.console = console

    @property
    def metrics_url(self) -> str | None:
        if self.metrics_port is None:
            return None
        return f"http://{self._settings.metrics_host}:{self.metrics_port}/metrics"

    @property
    def console_address(self) -> str | None:
        if self.console_port is None:
            return None
        return f"ssh -p {self.console_port} {self._settings.console_host}"

    def stop_console(self) -> None:
        if self.console is not None:
            self.console.stop()
            self.console = None

    def stop(self) -> None:
        self._gc_pauses.stop()
        self.stop_console()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self._database_reads is not None:
            self._database_reads.stop()
            self._database_reads = None
