"""How command-line flags land on the configuration."""

from __future__ import annotations

from pathlib import Path

from cwndproxy.cli.parser import build_parser, config_from_args


def test_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[pool]\npool_size = 8\n[server]\nport = 9000\n")
    args = build_parser().parse_args(
        [
            "run",
            "--config",
            str(path),
            "--upstream",
            "http://10.0.0.1:81",
            "--pool-size",
            "2",
            "--listen",
            "0.0.0.0:7000",
            "--insecure",
        ]
    )
    config = config_from_args(args)
    assert (config.target.host, config.target.port, config.target.tls) == ("10.0.0.1", 81, False)
    assert config.pool.pool_size == 2
    assert (config.server.host, config.server.port) == ("0.0.0.0", 7000)
    assert config.target.tls_insecure_skip_verify is True
