"""`python -m terminal_sim.bench` refuses a bad command line by naming the flag, before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal_sim import bench
from tests.sim.fleet_flags import FLEET_FLAG_ROWS

PROG = "python -m terminal_sim.bench"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        *FLEET_FLAG_ROWS,
        (["--payment-terminals", "0"], "--payment-terminals must be from 1 to 100,000, not 0"),
        (["--payment-terminals", "100001"], "--payment-terminals must be from 1 to 100,000, not 100001"),
        (["--payment-duration-s", "-1"], "--payment-duration-s must be above 0 and finite, not -1.0"),
        (["--payment-duration-s", "nan"], "--payment-duration-s must be above 0 and finite, not nan"),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_anything_is_made(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "bench-out"
    with pytest.raises(SystemExit) as refused:
        bench.main([*argv, "--out-dir", str(out_dir)])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"{PROG}: error: {message}"
    assert not out_dir.exists()


def test_an_out_dir_that_cannot_be_made_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as refused:
        bench.main(["--out-dir", str(a_file / "bench-out")])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{PROG}: error: --out-dir {a_file / 'bench-out'} cannot be made: {a_file} is not a directory"
    )
