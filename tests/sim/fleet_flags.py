"""The bad values of the fleet's flags every load-tester command takes (txswitch-sim, bench, sweep, profile,
compare), with the line each is refused with: one table for all, so the commands cannot drift apart."""

from __future__ import annotations

FLEET_FLAG_ROWS: list[tuple[list[str], str]] = [
    (["--terminals", "0"], "--terminals must be from 1 to 100,000, not 0"),
    (["--terminals", "-4"], "--terminals must be from 1 to 100,000, not -4"),
    (["--terminals", "1000000000"], "--terminals must be from 1 to 100,000, not 1000000000"),
    (["--duration-s", "0"], "--duration-s must be above 0 and finite, not 0.0"),
    (["--duration-s", "-1"], "--duration-s must be above 0 and finite, not -1.0"),
    (["--duration-s", "nan"], "--duration-s must be above 0 and finite, not nan"),
    (["--duration-s", "inf"], "--duration-s must be above 0 and finite, not inf"),
    (["--cards", "0"], "--cards must be from 1 to 1,000,000, not 0"),
    (["--cards", "1000000000"], "--cards must be from 1 to 1,000,000, not 1000000000"),
]
