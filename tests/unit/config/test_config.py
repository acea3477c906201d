from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from cwndproxy.config import (
    Config,
    ConfigError,
    load_file,
    parse_upstream_url,
    to_toml,
    validate,
)


def _config() -> Config:
    config = Config()
    config.target.host = "origin.example"
    return config


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_file(path)


def test_defaults_validate_without_a_warm_up_path() -> None:
    # auto holds what real traffic grows when it has nothing to grow with, so a bare
    # upstream is a complete configuration.
    config = _config()
    validate(config)
    assert config.pool.strategy == "auto"
    assert config.pool.pool_size == 4
    assert config.pool.warm_up_direction == "download"
    # auto warms each session for the whole path: one request gets the full rate.
    assert config.warm_up_target == "path"
    assert config.per_connection_target_bps == 100_000_000


def test_burst_needs_a_path_and_splits_the_bandwidth() -> None:
    config = _config()
    config.pool.strategy = "burst"
    with pytest.raises(ConfigError, match=r"needs pool\.warm_up_download_path"):
        validate(config)
    config.pool.warm_up_download_path = "/big.bin"
    validate(config)
    # The original spec's target: floor(100 Mbit/s / 4).
    assert config.warm_up_target == "share"
    assert config.per_connection_target_bps == 25_000_000


def test_derived_target_floors() -> None:
    config = _config()
    config.pool.bandwidth_mbps = 10.0
    config.pool.pool_size = 3
    config.pool.warm_up_target = "share"
    assert config.per_connection_target_bps == 3_333_333
    config.pool.warm_up_target = "path"
    assert config.per_connection_target_bps == 10_000_000


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
[target]
host = "origin.example"
port = 443
[pool]
pool_size = 8
bandwidth_mbps = 200
warm_up_headers = { authorization = "Bearer x" }
warm_up_download_path = "/big.bin"
[server]
port = 9000
""",
    )
    validate(config)
    assert config.target.host == "origin.example"
    assert config.pool.pool_size == 8
    assert config.pool.bandwidth_mbps == 200.0
    assert config.pool.warm_up_headers == {"authorization": "Bearer x"}
    assert config.server.port == 9000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pool]\npool_sise = 3\n", "unknown key pool.pool_sise"),
        ("[bogus]\nx = 1\n", "unknown section [bogus]"),
        ('[pool]\npool_size = "3"\n', "pool.pool_size must be an integer"),
        ("[target]\ntls = 1\n", "target.tls must be a boolean"),
        ("[pool]\nwarm_up_headers = { a = 1 }\n", "pool.warm_up_headers must be a table"),
        ("[pool\n", "is not valid TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, text)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_file("/nonexistent/cwnd.toml")


def _invalid(**changes: object) -> str:
    config = _config()
    config.pool.warm_up_download_path = "/blob"
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    with pytest.raises(ConfigError) as info:
        validate(config)
    return str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pool__pool_size": 0}, "pool.pool_size = 0 must be 1-1024"),
        ({"pool__bandwidth_mbps": 0.0}, "pool.bandwidth_mbps = 0.0 must be a number > 0"),
        ({"pool__bandwidth_mbps": float("nan")}, "pool.bandwidth_mbps"),
        ({"pool__warm_up_direction": "sideways"}, 'pool.warm_up_direction = "sideways"'),
        ({"pool__warm_up_upload_method": "PATCH"}, "allowed: POST, PUT"),
        ({"pool__warm_up_download_method": "POST"}, "allowed: GET"),
        ({"pool__strategy": "magic"}, "allowed: auto, burst, ping, off"),
        ({"pool__warm_up_target": "all"}, "allowed: auto, path, share"),
        (
            {"pool__strategy": "burst", "pool__warm_up_direction": "upload"},
            'pool.warm_up_direction = "upload" needs pool.warm_up_upload_path',
        ),
        (
            {
                "pool__strategy": "burst",
                "pool__warm_up_direction": "both",
                "pool__warm_up_upload_path": "/sink",
                "pool__warm_up_download_path": None,
            },
            'pool.warm_up_direction = "both" needs pool.warm_up_download_path',
        ),
        ({"pool__warm_up_download_path": "blob"}, "must start with '/'"),
        ({"pool__warm_up_headers": {"Authorization": "x"}}, "must be lower-case"),
        ({"pool__stream_window_bytes": 1000}, "pool.stream_window_bytes"),
        ({"pool__max_frame_size": 2**24}, "pool.max_frame_size"),
        ({"pool__reconnect_max_ms": 1, "pool__reconnect_min_ms": 10}, "reconnect_max_ms"),
        ({"target__port": 0}, "target.port = 0 must be 1-65535"),
        ({"target__protocol": "http3"}, 'target.protocol = "http3"'),
        ({"target__tls": False, "target__tls_insecure_skip_verify": True}, "need target.tls"),
        ({"target__tls_ca_file": "/nonexistent.pem"}, "target.tls_ca_file"),
        ({"server__inbound_tls": True}, "server.inbound_tls = true needs"),
        ({"server__tls_cert_file": "/x.pem"}, "go together"),
        ({"server__read_timeout_ms": 0}, "server.read_timeout_ms"),
        ({"ui__log_format": "xml"}, 'ui.log_format = "xml"'),
        ({"target__host": ""}, "target.host is not set"),
        ({"target__host": "https://127.0.0.1/big.bin"}, "not a URL"),
        ({"target__host": "origin.example:443"}, "the port goes in target.port"),
        ({"target__host": "bad host"}, "is not a host name or address"),
        ({"server__host": "my-laptop"}, "server.host = 'my-laptop' must be an IP address"),
    ],
)
def test_every_invalid_combination_has_its_message(
    changes: dict[str, object], message: str
) -> None:
    assert message in _invalid(**changes)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://origin.example", ("origin.example", 443, True)),
        ("http://127.0.0.1:8081", ("127.0.0.1", 8081, False)),
        ("https://[::1]:8443", ("::1", 8443, True)),
    ],
)
def test_upstream_url(url: str, expected: tuple[str, int, bool]) -> None:
    assert parse_upstream_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://x", "origin.example", "https://x/path", "http://x:99999"])
def test_bad_upstream_url(url: str) -> None:
    with pytest.raises(ConfigError, match="--upstream"):
        parse_upstream_url(url)


def test_effective_config_round_trips(tmp_path: Path) -> None:
    config = _config()
    config.pool.warm_up_headers = {"authorization": 'Bearer "x"'}
    config.pool.warm_up_download_path = "/blob"
    path = tmp_path / "out.toml"
    path.write_text(to_toml(config))
    assert load_file(path) == config


@pytest.mark.parametrize("host", ["origin.example", "127.0.0.1", "::1", "[::1]", "a-b.example."])
def test_good_upstream_hosts(host: str) -> None:
    config = _config()
    config.target.host = host
    validate(config)


def test_a_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    config = _config()
    config.target.tls_ca_file = str(bad)
    with pytest.raises(ConfigError, match=r"target\.tls_ca_file = .*not a PEM certificate"):
        validate(config)


def test_inbound_certificate_and_key_must_load_and_match(tmp_path: Path) -> None:
    ca = trustme.CA()
    one, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    cert, key, wrong_key = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "w.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    one.private_key_pem.write_to_path(str(key))
    other.private_key_pem.write_to_path(str(wrong_key))
    config = _config()
    config.server.inbound_tls = True
    config.server.tls_cert_file, config.server.tls_key_file = str(cert), str(key)
    validate(config)
    config.server.tls_key_file = str(wrong_key)
    with pytest.raises(ConfigError, match=r"server\.tls_cert_file = .* do not load"):
        validate(config)
    config.server.tls_cert_file = config.server.tls_key_file = str(key)
    with pytest.raises(ConfigError, match=r"server\.tls_cert_file"):
        validate(config)


def test_every_config_key_is_in_the_reference_and_docs_are_current() -> None:
    from cwndproxy.config.reference import MEANING, keys, markdown

    names = [key for key, _, _ in keys()]
    assert [n for n in names if n not in MEANING] == [], "undocumented config keys"
    assert [n for n in MEANING if n not in names] == [], "documented keys that do not exist"
    docs = Path(__file__).resolve().parents[3] / "docs" / "CONFIG.md"
    assert docs.read_text() == markdown(), "docs/CONFIG.md is stale: check-config --reference"


@pytest.mark.parametrize(
    ("mbps", "expected"),
    [(10, 16384), (100, 16384), (1000, 131072), (10000, 1024 * 1024), (100000, 1024 * 1024)],
)
def test_auto_frame_size_is_what_the_bandwidth_carries_in_2_ms(mbps: float, expected: int) -> None:
    config = _config()
    config.pool.bandwidth_mbps = mbps
    assert config.effective_max_frame_size == expected
    config.pool.max_frame_size = 65536  # a set value wins
    assert config.effective_max_frame_size == 65536
