"""A py-spy raw profile (`py-spy record --threads --format raw`) summed by kind of thread and by function.

    .venv/bin/py-spy record --pid <switch> --threads --gil --nonblocking -r 100 -d 12 --format raw -o gil.txt
    .venv/bin/python -m terminal_sim.spy_summary gil.txt --thread grpc-loop --top 30

With `--gil` py-spy samples only the thread holding the interpreter lock, so the shares by kind of
thread say who holds it; `--thread` then lists that kind's functions by inclusive samples (a
function counted once per sample however deep it recurs) and by own samples (where the sample
stood). A thread's kind is its name without its number: "CardActor-17 (...)" and "grpc_3" are
"CardActor" and "grpc".
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_NUMBERED = re.compile(r"[-_ ]?\d+.*$")
_PATH_PREFIX = re.compile(r" \(.*?/(?:site-packages/|lib/python3\.\d+/|(?=[a-z_]+/[a-z_]+\.py))")


@dataclass
class Summary:
    samples: int = 0
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = field(default_factory=dict)
    own: dict[str, collections.Counter[str]] = field(default_factory=dict)


def thread_kind(thread: str) -> str:
    """'thread (0x7f..): CardActor-17 (...)' to 'CardActor'."""
    name = thread.split(": ", 1)[1] if ": " in thread else thread
    return _NUMBERED.sub("", name) or name


def summarise(lines: Iterable[str]) -> Summary:
    summary = Summary()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        kind = thread_kind(thread)
        summary.samples += count
        summary.by_kind[kind] += count
        inclusive = summary.inclusive.setdefault(kind, collections.Counter())
        for frame in {_PATH_PREFIX.sub(" (", frame) for frame in frames}:
            inclusive[frame] += count
        if frames:
            summary.own.setdefault(kind, collections.Counter())[_PATH_PREFIX.sub(" (", frames[-1])] += count
    return summary


def report(summary: Summary, kind: str | None, top: int) -> list[str]:
    lines = [f"{summary.samples} samples"]
    lines += [
        f"  {name:28s} {count:7d} {100 * count / summary.samples:5.1f} %"
        for name, count in summary.by_kind.most_common()
    ]
    if kind is not None:
        total = summary.by_kind[kind]
        for title, counter in (("inclusive", summary.inclusive), ("own", summary.own)):
            lines.append(f"{kind}, {title}:")
            lines += [
                f"  {count:7d} {100 * count / total:5.1f} % {frame}"
                for frame, count in counter.get(kind, collections.Counter()).most_common(top)
            ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m terminal_sim.spy_summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("raw", type=Path, help="py-spy's --format raw output")
    parser.add_argument("--thread", help="list this kind of thread's functions")
    parser.add_argument("--top", type=int, default=30, help="functions listed (1 to 1,000)")
    args = parser.parse_args(argv)
    if not 1 <= args.top <= 1_000:
        parser.error(f"--top must be from 1 to 1,000, not {args.top}")
    try:
        text = args.raw.read_text()
    except OSError as error:
        parser.error(f"cannot read {args.raw}: {error.strerror}")
    summary = summarise(text.splitlines())
    if not summary.samples:
        parser.error(f"{args.raw} holds no py-spy raw samples")
    if args.thread is not None and args.thread not in summary.by_kind:
        parser.error(f"--thread {args.thread!r} is none of {', '.join(sorted(summary.by_kind))}")
    print("\n".join(report(summary, args.thread, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
