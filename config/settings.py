"""The settings model: config/default.toml, then a file given with --config, then TILEHALL_* env.

Top-level settings map to ``TILEHALL_<NAME>`` (``TILEHALL_DATABASE_URL``); grouped ones to
``TILEHALL_<GROUP>__<NAME>`` (``TILEHALL_STORAGE__MAX_BATCH``). Every setting is documented in
``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config.dev_secret import MIN_DEV_SECRET_CHARS, load_or_create_dev_secret

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_TOML = CONFIG_DIR / "default.toml"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=0, le=65535)
    allowed_origins: list[str] = Field(default_factory=list)
    max_connections: int = Field(10000, ge=1)
    idle_connection_timeout_s: float = Field(30.0, gt=0)
    body_timeout_s: float = Field(10.0, gt=0)
    max_write_buffer_bytes: int = Field(256 * 1024, ge=4096)
    websocket_ping_interval_s: float = Field(20.0, gt=0)
    websocket_ping_timeout_s: float = Field(20.0, gt=0)
    shutdown_grace_s: float = Field(5.0, ge=0)
    allow_remote_dev: bool = False
    max_http_connections: int = Field(1000, ge=1)
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an IP address or CIDR network") from None
        return v
    # serve --workers: worker processes sharing host:port (SO_REUSEPORT); "auto" = os.cpu_count()
    workers: int | Literal["auto"] = 1
    worker_ops_port: int = Field(0, ge=0, le=65535)  # worker i's own port: this + i - 1; 0: port + i

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError("must be 1 to 1024 worker processes, or \"auto\"")
        return v

    def worker_count(self) -> int:
        """How many worker processes ``serve`` runs (``"auto"``: one per CPU)."""
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)


class AuthSettings(_Group):
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    jwks_url: str | None = None
    jwks_cache_s: int = Field(300, ge=0)
    public_key_pem: str | None = None
    public_key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = Field(10, ge=0, le=300)
    jwks_refetch_cooldown_s: float = Field(10.0, ge=0)
    dev_secret: str | None = Field(None, min_length=MIN_DEV_SECRET_CHARS)
    dev_issuer: str = "tilehall-dev"
    dev_token_ttl_s: int = Field(3600, ge=1)
    login_rate_per_minute: float = Field(60.0, gt=0)
    login_burst: int = Field(20, ge=1)
    # The web client's OpenID Connect sign-in (public values, served at GET /auth/config).
    client_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile"])
    client_token: Literal["id", "access"] = "id"
    client_auth_params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _client_needs_issuer(self) -> AuthSettings:
        if self.client_id is not None and not self.issuer:
            raise ValueError("auth.client_id needs auth.issuer (the web client discovers the IdP from it)")
        if self.client_id is not None and "openid" not in self.scopes:
            raise ValueError('auth.scopes must include "openid" for the web client\'s sign-in')
        if self.client_id is not None and self.client_token == "id" and self.audience not in (None, self.client_id):
            raise ValueError("auth.client_token = \"id\": ID tokens name the client, so auth.audience must be auth.client_id")
        return self


class StorageSettings(_Group):
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(8, ge=1)
    max_batch: int = Field(500, ge=1)
    commit_timeout_s: float = Field(2.0, gt=0)
    allow_unsafe_durability: bool = False
    partitions_ahead_days: int = Field(7, ge=1)
    maintenance_interval_s: float = Field(3600.0, gt=0)
    connect_timeout_s: int = Field(3, ge=1)
    keepalives_idle_s: int = Field(10, ge=1)
    keepalives_interval_s: int = Field(5, ge=1)
    keepalives_count: int = Field(3, ge=1)
    statement_timeout_s: float = Field(5.0, gt=0)
    lock_timeout_s: float = Field(2.0, gt=0)
    idle_in_transaction_timeout_s: float = Field(10.0, gt=0)


class RetentionSettings(_Group):
    days: int = Field(30, ge=1)
    archive_dir: Path = Path("var/archive")


class RedisSettings(_Group):
    key_prefix: str = "tilehall:"
    cache_staleness_ms: int = Field(100, ge=0)
    cache_ttl_s: int = Field(3600, ge=1)
    socket_timeout_s: float = Field(0.5, gt=0)


class SessionSettings(_Group):
    hello_timeout_s: float = Field(5.0, gt=0)
    heartbeat_interval_ms: int = Field(5000, ge=100)
    idle_timeout_s: float = Field(30.0, gt=0)
    reconnect_window_s: float = Field(60.0, gt=0)
    reconnect_token_ttl_s: int = Field(3600, ge=1)
    reconnect_max_attempts: int = Field(10, ge=1)
    reconnect_attempts_window_s: float = Field(60.0, gt=0)
    event_buffer_size: int = Field(512, ge=1)
    max_frame_bytes: int = Field(4096, ge=256)
    max_frames_per_second: float = Field(60.0, gt=0)
    malformed_frame_budget: int = Field(3, ge=0)
    max_unacked_actions: int = Field(64, ge=1)


class GameSettings(_Group):
    map: str = "default"
    moves_per_second: float = Field(8.0, ge=1 / 60, le=256)
    chats_per_second: float = Field(2.0, ge=1 / 60, le=256)
    max_health: int = Field(100, ge=1)
    max_json_bytes: int = Field(16 * 1024, ge=256)
    view_radius: int = Field(12, ge=1)
    respawn_delay_s: float = Field(3.0, ge=0)
    item_respawn_s: float = Field(60.0, ge=0)


class RuntimeSettings(_Group):
    kind: Literal["pooled", "threading"] = "pooled"
    pool_workers: int = Field(4, ge=1, le=256)
    messages_per_turn: int = Field(32, ge=1)


class ClusterSettings(_Group):
    roster_interval_s: float = Field(2.0, gt=0)
    peer_timeout_s: float = Field(6.0, gt=0)

    @model_validator(mode="after")
    def _timeout_spans_rosters(self) -> ClusterSettings:
        if self.peer_timeout_s <= self.roster_interval_s:
            raise ValueError("cluster.peer_timeout_s must be longer than cluster.roster_interval_s")
        return self


class DebugSettings(_Group):
    fault_hooks: bool = False


class LoggingSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """Everything tilehall reads at start. Build one with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="TILEHALL_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    mode: Literal["dev", "production"] = "dev"
    database_url: str | None = None
    redis_url: str | None = None
    admin_token: str | None = None
    var_dir: Path = Path("var")

    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    game: GameSettings = Field(default_factory=GameSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    debug: DebugSettings = Field(default_factory=DebugSettings)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or "host=" in parts.query):
            raise ValueError("must look like postgresql://user@host:port/dbname")
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must look like redis://host:port/db or unix:///path/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name a host, like redis://127.0.0.1:6379/0")
        return v

    @model_validator(mode="after")
    def _dev_secret_of_this_install(self) -> Settings:
        """Dev mode without an explicit ``auth.dev_secret``: the one in ``<var_dir>/dev-secret``."""
        if self.mode == "dev" and self.auth.dev_secret is None:
            try:
                self.auth.dev_secret = load_or_create_dev_secret(self.var_dir)
            except OSError as exc:
                raise ValueError(f"cannot read or create the dev secret under {self.var_dir}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _production_needs(self) -> Settings:
        if self.mode != "production":
            return self
        missing = []
        if not (self.auth.jwks_url or self.auth.public_key_pem or self.auth.public_key_file):
            missing.append("JWT verification keys (auth.jwks_url, auth.public_key_pem or auth.public_key_file)")
        if not self.database_url:
            missing.append("a database URL (TILEHALL_DATABASE_URL)")
        if not self.redis_url:
            missing.append("a Redis URL (TILEHALL_REDIS_URL)")
        if not self.admin_token:
            missing.append("an admin token for /debug (TILEHALL_ADMIN_TOKEN)")
        if any(a.upper().startswith("HS") for a in self.auth.algorithms):
            missing.append("an asymmetric algorithm list (auth.algorithms must not contain HS*)")
        if self.auth.client_id and not self.auth.audience:
            missing.append("auth.audience with auth.client_id (else tokens the IdP gave any other client pass)")
        if missing:
            raise ValueError("production mode needs " + "; ".join(missing))
        return self

    @property
    def archive_dir(self) -> Path:
        """The retention archive directory, relative paths taken from the working directory."""
        return self.retention.archive_dir

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_TOML] + ([_CONFIG_FILE[0]] if _CONFIG_FILE[0] else [])
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=files, deep_merge=True),
        )


# The --config file for the Settings being built (pydantic-settings has no per-call file hook).
_CONFIG_FILE: list[Path | None] = [None]


class SettingsError(Exception):
    """Settings that cannot be used; ``str()`` is one line an operator can act on."""


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Read default.toml, then ``config_file``, then TILEHALL_* env, then ``overrides``."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")
        _CONFIG_FILE[0] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise SettingsError(f"cannot read settings: {exc}") from None
    finally:
        _CONFIG_FILE[0] = None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}" if err["loc"] else msg)
    return "invalid settings: " + "; ".join(problems)
