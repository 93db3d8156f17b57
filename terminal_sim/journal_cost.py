"""What the journal process costs in CPU per write, over batches as the card actors submit them.

The switch's journal commits group-committed batches in a process of its own
(`switch/store/journal_process.py`). This builds batches of the simulator's money flows
(redemptions, loads, refunds and cancels in its default weights, each as `actors/card_actor.py`
writes it), against a database of its own (a fresh SQLite file, or `--database-url`), sends them
to a journal process one batch at a time, and reads that process's CPU (user plus system, from
/proc) over each round: its receiving, unpickling, SQL, commit and pickling of the answers. The
sending side's CPU (the writer thread's pickling and waiting on the pipe) is reported beside it.
Every write must be taken: a refused one would send its batch one write at a time.

    python -m terminal_sim.journal_cost --batches 2000 --writes 2 --rounds 5
    python -m terminal_sim.journal_cost --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, insert

from switch.domain import ledger
from switch.domain.ledger import AccountKind
from switch.domain.programmes import ProgrammeKind
from switch.store.engine import create_schema, make_engine
from switch.store.journal import CardIssue, OriginalChange, TransactionRecord, Write, commit_batch
from switch.store.journal_forkserver import can_serve
from switch.store.journal_process import JournalProcess
from switch.store.schema import accounts, locations, merchant_programmes, merchants, programmes, terminals
from terminal_sim.bench import process_cpu_s
from terminal_sim.config import SettingError, check_count

# The simulator's default flow weights (terminal_sim.config.FlowWeights) of the flows that write;
# a balance enquiry writes nothing.
FLOW_WEIGHTS = {"redemption": 50, "load": 20, "refund": 5, "cancel": 10}
BATCHES_MAX = 100_000
WRITES_PER_BATCH_MAX = 256  # the switch's journal_batch_writes_max
ROUNDS_MAX = 100
TERMINALS_MAX = 1_000
CARDS_MAX = 100_000
CURRENCY = "EUR"
CARD_START_MINOR = 5_000_000
CARD_CEILING_MINOR = 100_000_000
FUNDER_SHARE_PERCENT = 10  # a load's funder part, so some loads post to three accounts
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


# A redemption that a later batch may refund or cancel: (terminal, transaction id, card, amount)
_Original = tuple[str, str, str, int]


@dataclass
class _World:
    """The rows the batches write against, named with the run's own prefix so a shared
    PostgreSQL database may hold several runs."""

    prefix: str
    terminal_ids: list[str]
    card_ids: list[str]
    merchant_id: str
    programme_id: str
    balances_minor: dict[str, int] = field(default_factory=dict)
    # Redemptions committed in earlier batches, not yet refunded or cancelled
    originals: list[_Original] = field(default_factory=list)
    sequence: int = 0


def _make_world(engine: Engine, terminal_count: int, card_count: int) -> _World:
    prefix = uuid.uuid4().hex[:8]
    world = _World(
        prefix,
        [f"trm_{prefix}_{i}" for i in range(terminal_count)],
        [f"crd_{prefix}_{i}" for i in range(card_count)],
        f"mer_{prefix}",
        f"prg_{prefix}",
    )
    with engine.begin() as conn:
        conn.execute(
            insert(programmes),
            {
                "programme_id": world.programme_id,
                "name": "Gift",
                "kind": ProgrammeKind.gift,
                "currency": CURRENCY,
                # unique among programmes: a run's own, so runs can share a database
                "card_prefix": f"{int(prefix, 16) % 1_000_000:06d}",
                "balance_max_minor": CARD_CEILING_MINOR,
            },
        )
        merchant = {
            "merchant_id": world.merchant_id,
            "name": "Shop",
            "email": f"shop-{prefix}@x",
            "password_hash": "-",
        }
        conn.execute(insert(merchants), {**merchant, "created_at": NOW})
        conn.execute(
            insert(merchant_programmes),
            {"merchant_id": world.merchant_id, "programme_id": world.programme_id},
        )
        location_id = f"loc_{prefix}"
        conn.execute(
            insert(locations), {"location_id": location_id, "merchant_id": world.merchant_id, "name": "Shop"}
        )
        conn.execute(insert(terminals), [_terminal_row(world, t, location_id) for t in world.terminal_ids])
        programme_id = world.programme_id
        conn.execute(
            insert(accounts),
            [
                {"account_id": account, "kind": kind, "currency": CURRENCY, "balance_minor": 0}
                for account, kind in (
                    (
                        ledger.merchant_payable_account(world.merchant_id, programme_id),
                        AccountKind.merchant_payable,
                    ),
                    (ledger.programme_float_account(programme_id), AccountKind.programme_float),
                    (ledger.funder_account(programme_id), AccountKind.funder),
                )
            ],
        )
    _issue_cards(engine, world)
    return world


def _terminal_row(world: _World, terminal_id: str, location_id: str) -> dict[str, object]:
    return {
        "terminal_id": terminal_id,
        "merchant_id": world.merchant_id,
        "location_id": location_id,
        "device_name": f"A77-{terminal_id}",
        "credential_hash": "-",
        "period_number": 1,
        "period_opened_at": NOW,
        "activated_at": NOW,
    }


def _issue_cards(engine: Engine, world: _World) -> None:
    """Each card issued and loaded by one journal write, as the back office does."""
    writes = []
    for number, card_id in enumerate(world.card_ids):
        issue = CardIssue(
            card_id,
            world.programme_id,
            f"hash-{card_id}",
            f"6000********{number % 10_000:04d}",
            dt.date(2030, 1, 1),
            CURRENCY,
        )
        entry = ledger.load_entry(
            f"issue:{card_id}", CURRENCY, card_id, world.programme_id, CARD_START_MINOR, 0, CARD_CEILING_MINOR
        )
        writes.append(Write(card_issue=issue, entry=entry))
        world.balances_minor[card_id] = CARD_START_MINOR
    for start in range(0, len(writes), WRITES_PER_BATCH_MAX):
        outcome = commit_batch(engine, writes[start : start + WRITES_PER_BATCH_MAX])
        refused = [result.problem for result in outcome.results if not result.ok]
        assert not refused, f"cards not issued: {refused[:3]}"


def _record(
    world: _World,
    terminal_id: str,
    transaction_id: str,
    kind: str,
    card_id: str,
    amount_minor: int,
    **extra: object,
) -> TransactionRecord:
    """The row record_of makes of an approval (actors/outcomes.py)."""
    card_delta_minor = -amount_minor if kind == "redemption" else amount_minor
    return TransactionRecord(
        source=terminal_id,
        transaction_id=transaction_id,
        transaction_type=kind,
        fingerprint=uuid.uuid4().hex,
        currency=CURRENCY,
        result="approved",
        status="approved",
        card_id=card_id,
        merchant_id=world.merchant_id,
        requested_minor=amount_minor,
        approved_minor=amount_minor,
        balance_after_minor=world.balances_minor[card_id] + card_delta_minor,
        authorization_code=f"{world.sequence % 1_000_000:06d}",
        period_number=1,
        card_masked="6000********0001",
        **extra,  # type: ignore[arg-type]
    )


def _write(world: _World, chooser: random.Random, shared_cards: bool) -> tuple[Write, _Original | None]:
    """One write of the flow mix, and the original it makes (a redemption) to be refunded or
    cancelled in a later batch; the world's balances follow it."""
    kind = chooser.choices(list(FLOW_WEIGHTS), weights=list(FLOW_WEIGHTS.values()))[0]
    if kind in ("refund", "cancel") and not world.originals:
        kind = "redemption"
    world.sequence += 1
    transaction_id = f"t{world.sequence}"
    programme_id, merchant_id = world.programme_id, world.merchant_id
    if kind in ("refund", "cancel"):
        terminal_id, original_id, card_id, amount_minor = world.originals.pop(
            chooser.randrange(len(world.originals))
        )
        return _adjustment(
            world, kind, terminal_id, transaction_id, original_id, card_id, amount_minor, shared_cards
        )
    terminal_id = chooser.choice(world.terminal_ids)
    card_id = chooser.choice(world.card_ids)
    key = f"txn:{terminal_id}:{transaction_id}"
    if kind == "redemption":
        amount_minor = chooser.randrange(100, 5_000)
        entry = ledger.redemption_entry(
            key, CURRENCY, card_id, amount_minor, merchant_id=merchant_id, programme_id=programme_id
        )
        record = _record(world, terminal_id, transaction_id, kind, card_id, amount_minor)
        world.balances_minor[card_id] -= amount_minor
        return Write(record=record, entry=entry), (terminal_id, transaction_id, card_id, amount_minor)
    amount_minor = chooser.randrange(1_000, 10_000)
    funder_minor = amount_minor * FUNDER_SHARE_PERCENT // 100
    entry = ledger.load_entry(
        key, CURRENCY, card_id, programme_id, amount_minor - funder_minor, funder_minor, CARD_CEILING_MINOR
    )
    record = _record(
        world,
        terminal_id,
        transaction_id,
        kind,
        card_id,
        amount_minor,
        cardholder_part_minor=amount_minor - funder_minor,
        funder_part_minor=funder_minor,
    )
    world.balances_minor[card_id] += amount_minor
    return Write(record=record, entry=entry, active_card=card_id if shared_cards else None), None


def _adjustment(
    world: _World,
    kind: str,
    terminal_id: str,
    transaction_id: str,
    original_id: str,
    card_id: str,
    amount_minor: int,
    shared_cards: bool,
) -> tuple[Write, None]:
    """A full refund or a cancel of an earlier redemption, as the card actor writes them."""
    programme_id, merchant_id = world.programme_id, world.merchant_id
    credited = card_id if shared_cards else None
    if kind == "refund":
        entry = ledger.refund_entry(
            f"txn:{terminal_id}:{transaction_id}",
            CURRENCY,
            card_id,
            amount_minor,
            merchant_id=merchant_id,
            programme_id=programme_id,
            card_ceiling_minor=CARD_CEILING_MINOR,
        )
        change = OriginalChange(terminal_id, original_id, "approved", refund_minor=amount_minor)
    else:
        redeemed = ledger.redemption_entry(
            "", CURRENCY, card_id, amount_minor, merchant_id=merchant_id, programme_id=programme_id
        )
        entry = redeemed.reversed(f"undo:{terminal_id}:{original_id}", "cancel")
        change = OriginalChange(terminal_id, original_id, "cancelled", require_unrefunded=True)
    record = _record(
        world, terminal_id, transaction_id, kind, card_id, amount_minor, original_transaction_id=original_id
    )
    world.balances_minor[card_id] += amount_minor
    return Write(record=record, entry=entry, original=change, credited_card=credited), None


def _batches(
    world: _World, count: int, writes_per_batch: int, chooser: random.Random, shared_cards: bool
) -> Iterator[list[Write]]:
    """Batches whose refunds and cancels name redemptions of earlier batches only: a terminal
    sends one after its original was answered, so after that original's commit."""
    for _ in range(count):
        made = [_write(world, chooser, shared_cards) for _ in range(writes_per_batch)]
        yield [write for write, _ in made]
        world.originals.extend(original for _, original in made if original is not None)


@dataclass(frozen=True)
class Round:
    journal_us_per_write: float  # the journal process's CPU, user and system
    journal_system_us_per_write: float  # of which in the kernel (the pipe, the database's writes and syncs)
    sender_us_per_write: float  # the sending thread's CPU (pickling, the pipe)
    wall_us_per_write: float


def _round(process: JournalProcess, batches: list[list[Write]]) -> Round:
    pid = process.pid
    assert pid is not None
    writes = sum(len(batch) for batch in batches)
    before_cpu_s = process_cpu_s(pid)
    before_system_s = _system_cpu_s(pid)
    before_thread_s, before_wall_s = time.thread_time(), time.perf_counter()
    for batch in batches:
        outcome = process.commit(batch)
        refused = [result.problem for result in outcome.results if not result.ok]
        if refused:
            raise SystemExit(
                f"the journal refused a write of the workload ({refused[0]}); nothing is measured"
            )
    after_thread_s, after_wall_s = time.thread_time(), time.perf_counter()
    after_cpu_s = process_cpu_s(pid)
    after_system_s = _system_cpu_s(pid)
    if before_cpu_s is None or after_cpu_s is None:
        raise SystemExit("this system's /proc does not give a process's CPU time")
    return Round(
        round((after_cpu_s - before_cpu_s) / writes * 1e6, 1),
        round((after_system_s - before_system_s) / writes * 1e6, 1),
        round((after_thread_s - before_thread_s) / writes * 1e6, 1),
        round((after_wall_s - before_wall_s) / writes * 1e6, 1),
    )


def _system_cpu_s(pid: int) -> float:
    """The system part of process_cpu_s (stime in /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def problem_of(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, naming the flag; None when nothing is."""
    try:
        check_count("--batches", args.batches, 1, BATCHES_MAX)
        check_count("--writes", args.writes, 1, WRITES_PER_BATCH_MAX)
        check_count("--rounds", args.rounds, 1, ROUNDS_MAX)
        check_count("--terminals", args.terminals, 1, TERMINALS_MAX)
        check_count("--cards", args.cards, 1, CARDS_MAX)
    except SettingError as error:
        return str(error)
    if args.database_url is not None and not can_serve(args.database_url):
        return "--database-url must be one another process can open, not an in-memory SQLite database"
    return None


def measure(args: argparse.Namespace, database_url: str) -> dict[str, object]:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        world = _make_world(engine, args.terminals, args.cards)
    finally:
        engine.dispose()
    chooser = random.Random(args.seed)
    process = JournalProcess(database_url)
    process.start()
    rounds = []
    try:
        # A warm-up round first (the child's statement caches, the pool), not counted.
        for _ in range(args.rounds + 1):
            batches = list(_batches(world, args.batches, args.writes, chooser, args.shared_cards))
            rounds.append(_round(process, batches))
    finally:
        process.stop()
    counted = rounds[1:]
    journal = [r.journal_us_per_write for r in counted]
    return {
        "writes_per_round": args.batches * args.writes,
        "journal_cpu_us_per_write": journal,
        "journal_cpu_us_per_write_spread": _spread(journal),
        "journal_system_cpu_us_per_write_spread": _spread([r.journal_system_us_per_write for r in counted]),
        "sender_cpu_us_per_write_spread": _spread([r.sender_us_per_write for r in counted]),
        "wall_us_per_write_spread": _spread([r.wall_us_per_write for r in counted]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.journal_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batches", type=int, default=2_000, help="batches per round")
    parser.add_argument(
        "--writes", type=int, default=2, help="writes per batch (the closed loop's: 1.3 to 2)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds measured, after one warm-up round")
    parser.add_argument("--terminals", type=int, default=20, help="terminals the writes come from")
    parser.add_argument("--cards", type=int, default=200, help="cards the writes move money on")
    parser.add_argument("--seed", type=int, default=1, help="of the flow mix, so runs compare")
    parser.add_argument(
        "--shared-cards",
        action="store_true",
        help="write as nodes sharing cards do: a load checks its card is active, a credit names its card",
    )
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temporary directory")
    args = parser.parse_args(argv)
    if (problem := problem_of(args)) is not None:
        parser.error(problem)
    if args.database_url is not None:
        report = measure(args, args.database_url)
    else:
        with tempfile.TemporaryDirectory(prefix="journal-cost-") as directory:
            report = measure(args, f"sqlite:///{Path(directory) / 'journal.sqlite'}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
