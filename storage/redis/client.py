"""Redis access: one client per process, every key under the configured prefix."""

from __future__ import annotations

import redis

from config.settings import Settings


def open_redis(settings: Settings, redis_url: str) -> redis.Redis:
    """A client with short timeouts, so a dead Redis degrades requests instead of hanging them."""
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.socket_timeout_s,
        health_check_interval=30,
    )


def redis_ready(client: redis.Redis) -> str | None:
    """None when Redis answers a PING, else the reason it does not."""
    try:
        client.ping()
    except Exception as exc:
        return f"redis unreachable: {type(exc).__name__}"
    return None
