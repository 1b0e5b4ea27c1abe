"""Operator configuration, read once from the environment and validated at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    namespaces: list[str] = field(default_factory=list)
    """MLTASK_NAMESPACES: comma-separated namespaces to watch; empty watches the whole cluster."""
    resync_seconds: int = 60
    """MLTASK_RESYNC_SECONDS: how often every task is reconciled even without events."""
    workers: int = 8
    """MLTASK_WORKERS: threads that run reconciles."""
    metrics_port: int = 8080
    """MLTASK_METRICS_PORT: Prometheus metrics port; 0 disables the server."""
    watch_server_timeout: int = 300
    """MLTASK_WATCH_SERVER_TIMEOUT: seconds the API server keeps a watch open."""
    watch_client_timeout: int = 330
    """MLTASK_WATCH_CLIENT_TIMEOUT: seconds before the client gives up on a silent watch."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        namespaces = [n.strip() for n in env.get("MLTASK_NAMESPACES", "").split(",") if n.strip()]
        server = _int(env, "MLTASK_WATCH_SERVER_TIMEOUT", 300, 10)
        client = _int(env, "MLTASK_WATCH_CLIENT_TIMEOUT", server + 30, 10)
        if client <= server:
            raise ConfigError(f"MLTASK_WATCH_CLIENT_TIMEOUT={client} must exceed "
                              f"MLTASK_WATCH_SERVER_TIMEOUT={server}")
        return cls(
            namespaces=namespaces,
            resync_seconds=_int(env, "MLTASK_RESYNC_SECONDS", 60, 5),
            workers=_int(env, "MLTASK_WORKERS", 8, 1),
            metrics_port=_int(env, "MLTASK_METRICS_PORT", 8080, 0),
            watch_server_timeout=server,
            watch_client_timeout=client,
        )
