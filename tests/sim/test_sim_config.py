"""SimConfig and FaultShares refuse a setting outside what they allow with a ValueError naming it."""

from __future__ import annotations

from typing import Any

import pytest

from terminal_sim.config import FaultShares, SettingError, SimConfig

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"terminals": 0}, "terminals must be from 1 to 100,000, not 0"),
        ({"terminals": -3}, "terminals must be from 1 to 100,000, not -3"),
        ({"terminals": 10**9}, "terminals must be from 1 to 100,000, not 1000000000"),
        ({"duration_s": 0.0}, "duration_s must be above 0 and finite, not 0.0"),
        ({"duration_s": -1.0}, "duration_s must be above 0 and finite, not -1.0"),
        ({"duration_s": NAN}, "duration_s must be above 0 and finite, not nan"),
        ({"duration_s": INF}, "duration_s must be above 0 and finite, not inf"),
        ({"target_rate_per_s": 0.0}, "target_rate_per_s must be above 0 and finite, not 0.0"),
        ({"target_rate_per_s": -5.0}, "target_rate_per_s must be above 0 and finite, not -5.0"),
        ({"day_length_s": INF}, "day_length_s must be above 0 and finite, not inf"),
        ({"think_time_ms_mean": -1.0}, "think_time_ms_mean must not be negative or infinite, not -1.0"),
        ({"think_time_ms_mean": NAN}, "think_time_ms_mean must not be negative or infinite, not nan"),
        ({"employees": 0}, "employees must be at least 1, not 0"),
        ({"channels": 0}, "channels must be at least 1, not 0"),
        ({"wrong_pin_share": 1.5}, "wrong_pin_share must be from 0 to 1, not 1.5"),
        ({"partial_share": NAN}, "partial_share must be from 0 to 1, not nan"),
    ],
)
def test_a_bad_setting_is_refused_by_name(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingError) as refused:
        SimConfig(**settings)
    assert str(refused.value) == message
    assert refused.value.names == tuple(settings)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ((-0.1, 0.0, 0.0), "duplicate must be from 0 to 1, not -0.1"),
        ((0.0, 1.1, 0.0), "timeout must be from 0 to 1, not 1.1"),
        ((0.0, 0.0, NAN), "abandon must be from 0 to 1, not nan"),
        ((0.5, 0.4, 0.2), "duplicate, timeout and abandon together must not be above 1, not 1.1"),
    ],
)
def test_impossible_fault_shares_are_refused_by_name(
    shares: tuple[float, float, float], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        FaultShares(*shares)
    assert str(refused.value) == message


def test_the_defaults_and_the_edges_are_allowed() -> None:
    SimConfig()
    SimConfig(terminals=100_000, think_time_ms_mean=0.0, wrong_pin_share=1.0, employees=1)
    FaultShares(duplicate=1.0)
    FaultShares(0.5, 0.3, 0.2)
