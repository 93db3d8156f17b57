"""The acquirers file: a good one loads; each mistake is named without showing a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.acquiring import AcquiringConfigError, load_config
from switch.security import KeyAlgorithm, KeyUsage, MasterKey, SecurityModule

SECURITY = SecurityModule(MasterKey(bytes(range(32))))
ZONE = SECURITY.import_key(bytes(16), "zpk-a", KeyUsage.zone_pin, KeyAlgorithm.aes128).to_text()
TRANSPORT = SECURITY.import_key(bytes(16), "ttk", KeyUsage.terminal_transport, KeyAlgorithm.aes128).to_text()


def text(
    transport: str = TRANSPORT,
    zone: str = ZONE,
    route_acquirer: str = "acq-a",
    extra: str = "",
    port: str = "8583",
    low: str = "4",
) -> str:
    return f"""
terminal_transport_key = "{transport}"
{extra}
[[acquirers]]
name = "acq-a"
host = "127.0.0.1"
port = {port}
zone_pin_key = "{zone}"

[[routes]]
low = "{low}"
high = "5"
acquirer = "{route_acquirer}"
"""


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "acquirers.toml"
    path.write_text(
        text(
            extra="response_timeout_ms = 700\nother_node_grace_ms = 300\n"
            "[cvm]\ncontactless_no_pin_limits_minor = { EUR = 2500 }"
        )
    )
    config = load_config(path)
    assert config.response_timeout_ms == 700
    assert config.left_behind_after.total_seconds() == 1.0
    assert config.cvm.contactless_no_pin_limits_minor == {"EUR": 2500}
    (endpoint,) = config.gateway.acquirers
    assert (endpoint.name, endpoint.port) == ("acq-a", 8583)
    assert config.gateway.routes[0].acquirer == "acq-a"


BAD_FILES = [
    (
        "transport key of the wrong usage",
        text(transport=ZONE),
        "terminal_transport_key must be a terminal-transport key",
    ),
    ("zone key of the wrong usage", text(zone=TRANSPORT), "acquirers[0].zone_pin_key must be a zone-pin key"),
    ("unreadable key", text(zone="v1:nonsense"), "acquirers[0].zone_pin_key: wrapped key text"),
    ("route to nowhere", text(route_acquirer="acq-b"), "routes[0].acquirer names no configured acquirer"),
    ("port not a number", text(port='"x"'), "acquirers[0].port must be an integer"),
    ("BIN bounds", text(low="44"), "routes[0].low and high must be digits of one length"),
    ("timeout", text(extra="response_timeout_ms = 0"), "response_timeout_ms must be positive"),
    ("grace", text(extra="other_node_grace_ms = -1"), "other_node_grace_ms must be 0 or more"),
    ("unknown limit", text(extra="[limits]\nfoo_ms = 5"), "limits: unknown foo_ms"),
    ("not TOML", "acquirers = [", "acquirers.toml"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_mistakes_are_named(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / "acquirers.toml"
    path.write_text(content)
    with pytest.raises(AcquiringConfigError) as caught:
        load_config(path)
    assert message in str(caught.value), name
    assert ZONE.split(":")[-1] not in str(caught.value)
