"""The per-request floors (lab/bench/floors.py) measure real, complete requests: every
floor's client gets its 1 KiB with status 200 from a real nginx over TLS h2, and a floor
whose requests fail raises instead of reporting a cost per request."""

from __future__ import annotations

from pathlib import Path

import pytest

from cwndproxy.lab.bench import floors
from cwndproxy.lab.bench.small_requests import OBJECT_SIZE, small_origin
from cwndproxy.lab.nginx import NginxServer
from tests.conftest import Certs, require_tool


@pytest.fixture
def origin(tmp_path: Path, certs: Certs) -> NginxServer:
    require_tool("nginx")
    return small_origin(tmp_path / "nginx", (certs.ca_file, certs.cert_file, certs.key_file))


@pytest.mark.parametrize("name", ["session-h2", "session-lean", "bound"])
async def test_client_floors_count_only_complete_answers(
    origin: NginxServer, certs: Certs, name: str
) -> None:
    with origin:
        assert origin.tls_port is not None
        result = await floors._one(name, origin.tls_port, certs.ca_file, 300)
    # (Its cpu_us is not checked: /proc counts 10 ms ticks, more than 300 requests take.)
    assert result["requests"] == 300


async def test_a_floor_whose_requests_fail_raises(origin: NginxServer, certs: Certs) -> None:
    origin.add_blob("small.bin", OBJECT_SIZE + 1)  # every answer the wrong size
    with origin, pytest.raises(RuntimeError, match="requests failed"):
        assert origin.tls_port is not None
        await floors._one("bound", origin.tls_port, certs.ca_file, 300)


async def test_the_front_end_floor_serves_what_h2load_asks() -> None:
    require_tool("h2load")
    result = await floors._front("asgi", 300)
    assert result["requests"] == 300
