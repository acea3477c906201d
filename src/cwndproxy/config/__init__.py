"""The proxy's configuration: typed settings with defaults in source (``settings``), the
generated reference of every key (``reference``) and what a reload may change (``reload``).
The settings are the package's face, so callers write ``from cwndproxy.config import Config``.
"""

from cwndproxy.config.settings import (
    DIRECTIONS,
    DOWNLOAD_METHODS,
    HTTP2_CODECS,
    LOG_FORMATS,
    STRATEGIES,
    UPLOAD_METHODS,
    WARM_UP_TARGETS,
    Config,
    ConfigError,
    PoolConfig,
    ServerConfig,
    TargetConfig,
    UiConfig,
    apply_table,
    load_file,
    parse_host_port,
    parse_upstream_url,
    to_toml,
    validate,
)

__all__ = [
    "DIRECTIONS",
    "DOWNLOAD_METHODS",
    "HTTP2_CODECS",
    "LOG_FORMATS",
    "STRATEGIES",
    "UPLOAD_METHODS",
    "WARM_UP_TARGETS",
    "Config",
    "ConfigError",
    "PoolConfig",
    "ServerConfig",
    "TargetConfig",
    "UiConfig",
    "apply_table",
    "load_file",
    "parse_host_port",
    "parse_upstream_url",
    "to_toml",
    "validate",
]
