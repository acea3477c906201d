"""What a SIGHUP reload applies and what needs a restart: a plain function of two configs."""

from __future__ import annotations

from cwndproxy.config import Config
from cwndproxy.config.reload import plan_reload


def _config() -> Config:
    config = Config()
    config.target.host = "origin.example"
    return config


def test_live_keys_apply_and_the_rest_keep_the_running_value() -> None:
    old, new = _config(), _config()
    new.pool.pool_size = 8
    new.pool.bandwidth_mbps = 250.0
    new.server.write_timeout_ms = 5000
    new.target.host = "other.example"  # a different upstream: restart
    new.server.port = 9999  # a different listener: restart
    plan = plan_reload(old, new)
    assert sorted(plan.applied) == [
        "pool.bandwidth_mbps",
        "pool.pool_size",
        "server.write_timeout_ms",
    ]
    assert sorted(plan.needs_restart) == ["server.port", "target.host"]
    assert plan.restart_warmup  # bandwidth is a warm-up setting
    assert plan.config.pool.pool_size == 8 and plan.config.pool.bandwidth_mbps == 250.0
    assert plan.config.target.host == "origin.example" and plan.config.server.port == 8080


def test_an_unchanged_file_changes_nothing() -> None:
    plan = plan_reload(_config(), _config())
    assert plan.applied == [] and plan.needs_restart == [] and not plan.restart_warmup


def test_pool_size_alone_does_not_restart_the_warm_up() -> None:
    new = _config()
    new.pool.pool_size = 2
    plan = plan_reload(_config(), new)
    assert plan.applied == ["pool.pool_size"] and not plan.restart_warmup
