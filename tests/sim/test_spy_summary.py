"""terminal_sim.spy_summary: a py-spy raw profile summed by kind of thread and by function."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal_sim import spy_summary

WORKER = "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:81)"
RAW = f"""\
thread (0x7f01): grpc-loop;run (asyncio/base_events.py:607);edge (/work/main/ops/grpc_interceptors.py:162) 6
thread (0x7f01): grpc-loop;run (asyncio/base_events.py:607);select (selectors.py:468) 2
thread (0x7f02): CardActor-17 (urn:x);on_receive (/work/main/actors/card_actor.py:189) 1
thread (0x7f03): grpc_3;{WORKER};{WORKER} 1
not a sample line
"""


def test_samples_are_summed_by_kind_of_thread_and_function() -> None:
    summary = spy_summary.summarise(RAW.splitlines())
    assert summary.samples == 10
    assert summary.by_kind == {"grpc-loop": 8, "CardActor": 1, "grpc": 1}
    assert summary.inclusive["grpc-loop"]["run (asyncio/base_events.py:607)"] == 8
    assert summary.own["grpc-loop"]["edge (ops/grpc_interceptors.py:162)"] == 6
    # A frame twice in one stack counts once for that sample.
    assert summary.inclusive["grpc"]["_worker (concurrent/futures/thread.py:81)"] == 1


def test_the_report_names_shares_and_a_threads_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "gil.txt"
    raw.write_text(RAW)
    assert spy_summary.main([str(raw), "--thread", "grpc-loop", "--top", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "10 samples"
    assert "grpc-loop" in printed[1] and "80.0 %" in printed[1]
    assert printed[-1].endswith("75.0 % edge (ops/grpc_interceptors.py:162)")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--thread", "nothing"], "--thread 'nothing' is none of CardActor, grpc, grpc-loop"),
        (["--top", "0"], "--top must be from 1 to 1,000, not 0"),
    ],
)
def test_a_bad_flag_is_refused_by_name(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "gil.txt"
    raw.write_text(RAW)
    with pytest.raises(SystemExit) as refused:
        spy_summary.main([str(raw), *argv])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
