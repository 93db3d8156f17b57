"""Acquiring: the bank-card side of the switch, built from the acquirers file: gateway, keys, payments."""

from __future__ import annotations

if __name__ == "__main__":  # `python -m switch.acquiring wrap-key` (README): none of the imports below
    from switch.wrap_key import wrap_key_main

    wrap_key_main()
    raise SystemExit(0)

import dataclasses
import datetime as dt
import logging
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from actors.acquirer_gateway import STAN_ATTEMPTS_MAX, AcquirerGateway, GatewayNotRunningError
from actors.acquirer_types import AcquirerEndpoint, BinRange, GatewayConfig, GatewayLimits
from actors.payments import PaymentProcessor, PaymentServices, original_of, recovered_answer
from switch.config import Settings
from switch.domain.cvm import CONTACTLESS_NO_PIN_LIMITS_MINOR_DEFAULT, CvmPolicy
from switch.pins import TerminalPinKeys, terminal_pin_key_id
from switch.security import (
    IssuedTerminalKey,
    KeyAlgorithm,
    KeyIntegrityError,
    KeyUsage,
    SecurityModule,
    WrappedKey,
    pin_block_format,
)
from switch.stopping import join_within
from switch.store.keys import KeyStore
from switch.store.payments import STAGE_RECOVERED, PaymentDetails, PaymentStore
from switch.store.repository import Store
from switch.store.saf import StanInUseError

log = logging.getLogger(__name__)

RESPONSE_TIMEOUT_MS_DEFAULT = 5_000
# How long past the response timeout a node waits before it takes another node's unanswered
# payment as left behind (that node died): its own answer, stored meanwhile, wins (`resolve_pending`).
OTHER_NODE_GRACE_MS_DEFAULT = 30_000
RECOVERY_BATCHES_MAX = 1_000  # of PENDING_BATCH_MAX payments each
SIGN_ON_WAIT_MS_DEFAULT = 2_000  # Settings.acquirer_sign_on_wait_ms sets it for the switch
SWEEP_INTERVAL_MAX_S = 10.0
# How long a stop waits for the recovery sweep's thread: a sweep stuck in the database (a lock never
# released, a connection that hangs) is left to the daemon thread, logged, so the switch's stop still ends.
STOP_TIMEOUT_S = 10.0
# What became of a payment found left in flight: reversed (its reversal queued, its terminal's
# answer stored as 68), or answered by its own node meanwhile (nothing to do).
RECOVERY_OUTCOMES = ("reversed", "answered_meanwhile")
# Whose it was: this node's (or its predecessor's on the data directory, by `node.id`) or another's.
RECOVERY_NODES = ("own", "other")


@dataclass(frozen=True, slots=True)
class PaymentNode:
    """Which node sends the payments (a row's `node_id`), and whether other nodes share the database."""

    node_id: str = ""
    shared: bool = False


class AcquiringConfigError(ValueError):
    """The acquirers file is wrong; the message names the entry (never a key's value)."""


@dataclass(frozen=True, slots=True)
class AcquiringConfig:
    gateway: GatewayConfig
    terminal_transport_key: WrappedKey
    response_timeout_ms: int
    cvm: CvmPolicy
    other_node_grace_ms: int = OTHER_NODE_GRACE_MS_DEFAULT

    @property
    def left_behind_after(self) -> dt.timedelta:
        """The age at which another node's pending payment is taken as left behind."""
        return dt.timedelta(milliseconds=self.response_timeout_ms + self.other_node_grace_ms)


def load_config(path: Path) -> AcquiringConfig:
    """Read the acquirers file (TOML); keys in it are WrappedKey lines sealed under the master key."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise AcquiringConfigError(f"{path}: {error}") from None
    acquirers = tuple(_endpoint(index, item) for index, item in enumerate(_list(raw, "acquirers")))
    if not acquirers:
        raise AcquiringConfigError("acquirers: at least one [[acquirers]] entry is needed")
    names = {endpoint.name for endpoint in acquirers}
    routes = tuple(_route(index, item, names) for index, item in enumerate(_list(raw, "routes")))
    limits = _limits(raw.get("limits", {}))
    timeout_ms = _int(raw, "response_timeout_ms", RESPONSE_TIMEOUT_MS_DEFAULT)
    if timeout_ms <= 0:
        raise AcquiringConfigError("response_timeout_ms must be positive")
    grace_ms = _int(raw, "other_node_grace_ms", OTHER_NODE_GRACE_MS_DEFAULT)
    if grace_ms < 0:
        raise AcquiringConfigError("other_node_grace_ms must be 0 or more")
    cvm_raw = raw.get("cvm", {})
    limits_minor = cvm_raw.get("contactless_no_pin_limits_minor", CONTACTLESS_NO_PIN_LIMITS_MINOR_DEFAULT)
    if not isinstance(limits_minor, Mapping) or not all(isinstance(v, int) for v in limits_minor.values()):
        raise AcquiringConfigError("cvm.contactless_no_pin_limits_minor must map currencies to integers")
    return AcquiringConfig(
        gateway=GatewayConfig(acquirers, routes, limits),
        terminal_transport_key=_wrapped(raw, "terminal_transport_key", KeyUsage.terminal_transport),
        response_timeout_ms=timeout_ms,
        cvm=CvmPolicy(dict(limits_minor)),
        other_node_grace_ms=grace_ms,
    )


def _list(raw: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise AcquiringConfigError(f"{name} must be a list of tables ([[{name}]])")
    return value


def _str(raw: Mapping[str, Any], name: str, where: str = "") -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        raise AcquiringConfigError(f"{where}{name} is missing or not a string")
    return value


def _int(raw: Mapping[str, Any], name: str, default: int | None = None, where: str = "") -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise AcquiringConfigError(f"{where}{name} must be an integer")
    return value


def _wrapped(raw: Mapping[str, Any], name: str, usage: KeyUsage, where: str = "") -> WrappedKey:
    try:
        key = WrappedKey.from_text(_str(raw, name, where))
    except KeyIntegrityError as error:
        raise AcquiringConfigError(f"{where}{name}: {error}") from None
    if key.usage is not usage:
        raise AcquiringConfigError(f"{where}{name} must be a {usage.value} key")
    return key


def _endpoint(index: int, item: Mapping[str, Any]) -> AcquirerEndpoint:
    where = f"acquirers[{index}]."
    return AcquirerEndpoint(
        name=_str(item, "name", where),
        host=_str(item, "host", where),
        port=_int(item, "port", where=where),
        zone_pin_key=_wrapped(item, "zone_pin_key", KeyUsage.zone_pin, where),
        acquiring_institution_id=str(item.get("acquiring_institution_id", "0")),
    )


def _route(index: int, item: Mapping[str, Any], names: set[str]) -> BinRange:
    where = f"routes[{index}]."
    low, high, acquirer = _str(item, "low", where), _str(item, "high", where), _str(item, "acquirer", where)
    if not (low.isdigit() and high.isdigit() and len(low) == len(high) and low <= high):
        raise AcquiringConfigError(f"{where}low and high must be digits of one length, low <= high")
    if acquirer not in names:
        raise AcquiringConfigError(f"{where}acquirer names no configured acquirer")
    return BinRange(low, high, acquirer)


def _limits(raw: Mapping[str, Any]) -> GatewayLimits:
    known = {item.name for item in dataclasses.fields(GatewayLimits)}
    unknown = set(raw) - known
    if unknown:
        raise AcquiringConfigError(f"limits: unknown {', '.join(sorted(unknown))}")
    for name, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AcquiringConfigError(f"limits.{name} must be a positive integer")
    return GatewayLimits(**raw)


class Acquiring:
    """Owns the acquirer gateway and the terminal PIN keys; hands payments to the terminal actors."""

    def __init__(
        self,
        config: AcquiringConfig,
        engine: Engine,
        security: SecurityModule,
        card_hash_key: bytes,
        now: Callable[[], dt.datetime] | None = None,
        terminal_keys: TerminalPinKeys | None = None,
        node: PaymentNode | None = None,
        sign_on_wait_ms: int = SIGN_ON_WAIT_MS_DEFAULT,
    ) -> None:
        self.config = config
        self.sign_on_wait_ms = sign_on_wait_ms
        self.node = node or PaymentNode()
        self.security = security
        self.gateway = AcquirerGateway(config.gateway, engine, security)
        # Shared with the closed-loop PIN checks (see TerminalPinKeys): pass the process's one.
        self.terminal_keys = terminal_keys or TerminalPinKeys(KeyStore(engine))
        payment_store = PaymentStore(engine, self.node.node_id)
        payment_store.create_tables()
        self.payments = payment_store
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        # (node, outcome) -> payments recovered since this process started; start and sweep add.
        self._recoveries = {(node, outcome): 0 for node in RECOVERY_NODES for outcome in RECOVERY_OUTCOMES}
        self._recoveries_lock = threading.Lock()
        self.processor = PaymentProcessor(
            PaymentServices(
                gateway=self.gateway,
                store=Store(engine),
                payments=payment_store,
                terminal_pin_key=self.terminal_pin_key,
                pan_hash_key=card_hash_key,
                cvm=config.cvm,
                response_timeout_ms=config.response_timeout_ms,
                now=self._now,
            )
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engine: Engine,
        security: SecurityModule,
        card_hash_key: bytes,
        terminal_keys: TerminalPinKeys | None = None,
        node: PaymentNode | None = None,
    ) -> Acquiring | None:
        """None when no acquirers file is configured (payments then answer UNIMPLEMENTED)."""
        if settings.acquirers_file is None:
            return None
        config = load_config(settings.acquirers_file)
        return cls(
            config,
            engine,
            security,
            card_hash_key,
            terminal_keys=terminal_keys,
            node=node,
            sign_on_wait_ms=settings.acquirer_sign_on_wait_ms,
        )

    def start(self) -> None:
        """Recover payments left in flight, then start the links; waits up to sign_on_wait_ms for
        sign-on, but a down acquirer does not stop the switch. Call it before terminals are accepted.

        A node alone on its database recovers every pending payment, for it sent them all. A node
        sharing it recovers its own (its predecessor's, by `node.id`) and other nodes' once they
        are older than `left_behind_after`, and goes on doing so while it runs: a payment another
        node is still waiting for is not reversed under it, and one a node that died left behind
        is reversed by a node that lives."""
        self.recover_pending(self._left_behind_before(), own_too=True)  # none of its own is in flight
        self.gateway.start()
        if self.node.shared:
            self._sweeper = threading.Thread(target=self._sweep, name="payment-recovery", daemon=True)
            self._sweeper.start()
        self.gateway.wait_signed_on(self.sign_on_wait_ms)

    def recover_pending(self, sent_before: dt.datetime | None = None, own_too: bool = False) -> int:
        """Each payment whose authorisation went out but whose answer was never stored (its node
        died in between) gets a reversal advice queued and is answered as timed out (68), in one
        transaction; a retry of its id then gets that answer. Returns how many were recovered."""
        recovered = 0
        for _ in range(RECOVERY_BATCHES_MAX):
            batch = self.payments.pending(sent_before=sent_before, own_too=own_too)
            if not batch:
                return recovered
            in_batch = 0
            for details in batch:
                resolved = self._recover_one(details)
                in_batch += resolved
                self._count_recovery(details, resolved)
            log.warning("recovered %d payments left in flight; their reversals are queued", in_batch)
            recovered += in_batch
            if in_batch == 0:  # their nodes answered them meanwhile; a later sweep sees what is left
                return recovered
        raise RuntimeError("payments still pending after recovery; is another switch sending?")

    def _count_recovery(self, details: PaymentDetails, reversed_: bool) -> None:
        """Once across the nodes: a payment another node's recovery reversed first is that node's to
        count (it was counted here too, as answered_meanwhile, when a start and a sweep both saw it)."""
        if not reversed_:
            now = self.payments.details(details.source, details.transaction_id)
            if now is not None and now.stage == STAGE_RECOVERED:
                return
        node = "own" if details.node_id == self.node.node_id else "other"
        with self._recoveries_lock:
            self._recoveries[node, "reversed" if reversed_ else "answered_meanwhile"] += 1

    def recoveries(self) -> dict[tuple[str, str], int]:
        """Payments found left in flight since this process started, by (node, outcome): a snapshot."""
        with self._recoveries_lock:
            return dict(self._recoveries)

    def _recover_one(self, details: PaymentDetails) -> bool:
        """Queue the payment's reversal and answer it as timed out; False when its node answered it
        meanwhile. An advice whose STAN another node's advice holds goes again under another."""
        answer = recovered_answer(details)
        for _ in range(STAN_ATTEMPTS_MAX):
            reversal = self.gateway.reversal_advice(original_of(details), "switch_restart")
            try:
                return self.payments.resolve_pending(details, answer, reversal, self._now())
            except IntegrityError:  # its own node queued the reversal meanwhile: it is answered
                log.info("payment %s was answered while it was being recovered", details.transaction_id)
                return False
            except StanInUseError:
                continue
        raise StanInUseError(f"no free STAN for the reversal of {details.transaction_id}")

    def _left_behind_before(self) -> dt.datetime | None:
        return self._now() - self.config.left_behind_after if self.node.shared else None

    def _sweep(self) -> None:
        interval_s = min(SWEEP_INTERVAL_MAX_S, self.config.left_behind_after.total_seconds() / 2)
        while not self._sweeping.wait(interval_s):
            try:
                self.recover_pending(self._left_behind_before())
            except (SQLAlchemyError, GatewayNotRunningError, StanInUseError):
                log.exception("recovering other nodes' payments failed; trying again")

    def stop(self) -> None:
        """Close the links; pending reversals stay stored and go out after the next start."""
        self._sweeping.set()
        if self._sweeper is not None:
            join_within(self._sweeper, STOP_TIMEOUT_S, log, "the payment recovery sweep")
        self.gateway.stop()

    @property
    def response_timeout_ms(self) -> int:
        return self.config.response_timeout_ms

    # --- terminal PIN keys ------------------------------------------------------------------------

    def new_terminal_pin_key(self, terminal_id: str, legacy_pin_pad: bool) -> IssuedTerminalKey:
        """At activation: a fresh PIN key, wrapped under the master key (for the activation to store
        with the terminal's credential, in one transaction) and under the TTK (for the terminal)."""
        algorithm = KeyAlgorithm.tdes if legacy_pin_pad else KeyAlgorithm.aes128
        return self.security.issue_terminal_pin_key(
            terminal_pin_key_id(terminal_id), self.config.terminal_transport_key, algorithm
        )

    def terminal_pin_key_stored(self, terminal_id: str) -> None:
        """The activation that stored a new PIN key has committed: use the stored key from now on."""
        self.terminal_keys.stored_elsewhere(terminal_id)

    def terminal_pin_key(self, terminal_id: str) -> WrappedKey | None:
        return self.terminal_keys.get(terminal_id)

    def terminal_pin_block_format(self, terminal_id: str) -> int | None:
        key = self.terminal_pin_key(terminal_id)
        return None if key is None else int(pin_block_format(key))
