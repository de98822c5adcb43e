"""Settings: one frozen object built from defaults < TOML file < SIOGATE_* env < flags.

The CLI (``siogate.cli``) generates one flag and one environment variable per field
below, so this dataclass is the single list of what can be configured.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

AuthMode = Literal["jwt", "handlers"]
AUTH_MODES: tuple[AuthMode, ...] = ("jwt", "handlers")
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LOG_LEVELS: tuple[LogLevel, ...] = ("critical", "error", "warning", "info", "debug")
RateAction = Literal["drop", "disconnect"]
RATE_ACTIONS: tuple[RateAction, ...] = ("drop", "disconnect")
# The most worker processes ``serve --workers`` starts.
MAX_WORKERS = 256
ClusterRouting = Literal["sharded", "broadcast"]
CLUSTER_ROUTINGS: tuple[ClusterRouting, ...] = ("sharded", "broadcast")


@dataclass(frozen=True)
class Settings:
    """Everything ``siogate serve`` can be told."""

    # Network
    host: str = "127.0.0.1"
    port: int = 8000
    # Credentials (generated for a dev run when missing; see cli.serve)
    api_key: str | None = None
    jwt_secret: str | None = None
    allow_anonymous: bool = False
    # Development mode: generated credentials are allowed on a non-loopback host.
    dev: bool = False
    # "handlers": the handshake payload goes unverified to the handlers' on_connect.
    auth: AuthMode = "jwt"
    # Optional checks on handshake tokens (seconds for the leeway).
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = 0.0
    # Webhooks
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_timeout: float = 5.0
    webhook_concurrency: int = 64
    webhook_per_socket: int = 4
    # user.online / user.offline webhooks (needs webhook_url).
    presence_webhooks: bool = False
    # room.join / room.leave webhooks (needs webhook_url).
    room_webhooks: bool = False
    # Namespaces whose room members get presence:join / presence:leave ("*": all).
    presence_events: tuple[str, ...] = ()
    # Socket.IO
    cors_origin: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    handlers: str | None = None
    # Limits
    max_payload: int = 1_000_000
    max_buffer: int = 1_000_000
    # Milliseconds a socket's outgoing buffer may stay undrained before it is cut.
    slow_timeout: int = 10_000
    max_connections: int = 10_000
    max_connections_per_ip: int = 1_000
    max_head_size: int = 16_384
    # Milliseconds for a request head, and for a body once its head has arrived.
    head_timeout: int = 10_000
    body_timeout: int = 30_000
    max_pipelined: int = 8
    max_attachments: int = 10
    # Inbound events per second per client connection (0: no limit), and the burst.
    event_rate: float = 100.0
    event_burst: int = 200
    event_rate_action: RateAction = "drop"
    # Emits with ack: sockets one may reach (cluster-wide), and how many may wait at once
    # on the node they were asked through.
    max_ack_recipients: int = 1_000
    max_pending_acks: int = 100
    # Timeouts (milliseconds, as Engine.IO announces them)
    ping_interval: int = 25_000
    ping_timeout: int = 20_000
    connect_timeout: int = 45_000
    # Cluster (None: one process, in-memory broker)
    redis_url: str | None = None
    redis_prefix: str = "siogate"
    advertise_url: str | None = None
    node_ttl: int = 5_000
    cluster_timeout: int = 1_000
    # Worker processes sharing the port (serve --workers; see docs/workers.md). Without
    # redis_url they coordinate through the primary process; 1: no workers, one process.
    workers: int = 1
    # How commands reach the nodes (docs/cluster.md, "Routing"); the same on every node.
    cluster_routing: ClusterRouting = "sharded"
    # Seconds an Idempotency-Key is remembered after its request succeeded.
    idempotency_ttl: int = 86_400
    # The @socket.io/admin-ui namespace (see docs/admin.md).
    admin: bool = False
    admin_namespace: str = "/admin"
    admin_username: str = "admin"
    admin_password_hash: str | None = None
    admin_no_auth: bool = False
    # Connection state recovery (seconds a socket waits for its client after a transport
    # loss; 0: off), events kept per waiting socket, and messages kept in all.
    recovery_window: float = 0.0
    recovery_max_missed: int = 10_000
    recovery_max_messages: int = 1_000_000
    # Room history (GET /v1/rooms/<room>/history): events kept per room (0: off), for
    # how long (seconds), and in all.
    history_size: int = 0
    history_ttl: float = 3600.0
    history_max_messages: int = 100_000
    # Messages of @socket.io/redis-emitter on the cluster's Redis (see docs/emitter.md),
    # and the channel prefix it publishes under (its ``key`` option).
    emitter_compat: bool = False
    emitter_key: str = "socket.io"
    # Logging
    log_level: LogLevel = "info"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        if self.max_payload < 1024:
            raise ConfigError("max_payload must be at least 1024 bytes")
        if self.max_buffer < self.max_payload:
            raise ConfigError("max_buffer must be at least max_payload")
        if self.ping_interval < 1 or self.ping_timeout < 1 or self.connect_timeout < 1:
            raise ConfigError("ping_interval, ping_timeout and connect_timeout must be positive")
        if self.slow_timeout < 1:
            raise ConfigError("slow_timeout must be positive")
        if self.max_connections < 1 or self.max_connections_per_ip < 0:
            raise ConfigError("max_connections must be >= 1 and max_connections_per_ip >= 0")
        if self.max_head_size < 1024:
            raise ConfigError("max_head_size must be at least 1024 bytes")
        if self.head_timeout < 1 or self.body_timeout < 1:
            raise ConfigError("head_timeout and body_timeout must be positive")
        if self.max_pipelined < 1:
            raise ConfigError("max_pipelined must be at least 1")
        if not 0 <= self.max_attachments <= 1000:
            raise ConfigError("max_attachments must be 0-1000")
        if self.event_rate < 0 or self.event_burst < 1:
            raise ConfigError("event_rate must be >= 0 and event_burst >= 1")
        if self.event_rate_action not in RATE_ACTIONS:
            raise ConfigError(f"event_rate_action must be one of {', '.join(RATE_ACTIONS)}")
        if self.max_ack_recipients < 1 or self.max_pending_acks < 1:
            raise ConfigError("max_ack_recipients and max_pending_acks must be at least 1")
        if self.jwt_leeway < 0:
            raise ConfigError("jwt_leeway must be >= 0")
        if self.webhook_timeout <= 0:
            raise ConfigError("webhook_timeout must be positive")
        if self.webhook_concurrency < 1 or self.webhook_per_socket < 1:
            raise ConfigError("webhook_concurrency and webhook_per_socket must be at least 1")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError("webhook_url must be an http:// or https:// URL")
            if not self.webhook_secret:
                raise ConfigError("webhook_url needs webhook_secret: webhooks are always signed")
        if self.presence_webhooks and self.webhook_url is None:
            raise ConfigError("presence_webhooks needs webhook_url")
        if self.room_webhooks and self.webhook_url is None:
            raise ConfigError("room_webhooks needs webhook_url")
        for ns in self.presence_events:
            if ns != "*" and not ns.startswith("/"):
                raise ConfigError(f"presence_events {ns!r} must be '*' or start with '/'")
        for ns in self.namespace:
            if not ns.startswith("/"):
                raise ConfigError(f"namespace {ns!r} must start with '/'")
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"auth must be one of {', '.join(AUTH_MODES)}")
        if self.auth == "handlers" and not self.handlers:
            raise ConfigError("auth = handlers needs handlers (module:attr) with an on_connect")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")
        if self.redis_url is not None and "," in self.redis_url:
            # A list names nodes of one Redis Cluster (siogate.broker.redis_cluster).
            for url in self.redis_url.split(","):
                if not url.strip().startswith(("redis://", "rediss://")):
                    raise ConfigError(
                        "redis_url: each URL of a list (Redis Cluster nodes) must be "
                        f"redis:// or rediss://, not {url.strip()!r}"
                    )
        if not self.redis_prefix or any(c in self.redis_prefix for c in " *?[]"):
            raise ConfigError("redis_prefix must be non-empty, without spaces or * ? [ ]")
        if self.advertise_url is not None and not self.advertise_url.startswith("http://"):
            # Node-to-node traffic is plain HTTP, meant for a private network.
            raise ConfigError("advertise_url must be an http:// URL")
        if self.node_ttl < 1000:
            raise ConfigError("node_ttl must be at least 1000 milliseconds")
        if self.cluster_timeout < 1:
            raise ConfigError("cluster_timeout must be positive")
        if self.cluster_routing not in CLUSTER_ROUTINGS:
            raise ConfigError(f"cluster_routing must be one of {', '.join(CLUSTER_ROUTINGS)}")
        if self.idempotency_ttl < 1:
            raise ConfigError("idempotency_ttl must be at least 1 second")
        if self.admin:
            if self.admin_password_hash is None and not self.admin_no_auth:
                raise ConfigError(
                    "admin needs admin_password_hash (a bcrypt hash) or admin_no_auth"
                )
            if self.admin_password_hash is not None and self.admin_no_auth:
                raise ConfigError("admin_password_hash and admin_no_auth exclude each other")
            if not self.admin_namespace.startswith("/") or self.admin_namespace == "/":
                raise ConfigError("admin_namespace must start with '/' and not be '/'")
            if not self.admin_username:
                raise ConfigError("admin_username must not be empty")
        if self.recovery_window < 0:
            raise ConfigError("recovery_window must be >= 0 (0: off)")
        if self.recovery_max_missed < 1 or self.recovery_max_messages < 1:
            raise ConfigError("recovery_max_missed and recovery_max_messages must be at least 1")
        if self.history_size < 0 or self.history_ttl <= 0 or self.history_max_messages < 1:
            raise ConfigError(
                "history_size must be >= 0 (0: off), history_ttl > 0 and history_max_messages >= 1"
            )
        if self.history_size > 0 and self.cluster and self.recovery_window <= 0:
            raise ConfigError(
                "history_size with redis_url or workers above 1 needs recovery_window: "
                "nodes and workers answer room history from the recovery log (in Redis, "
                "or in the workers' primary)"
            )
        if self.emitter_compat and self.redis_url is None:
            raise ConfigError("emitter_compat needs redis_url: the emitter publishes through Redis")
        if not self.emitter_key or len(self.emitter_key) > 256:
            raise ConfigError("emitter_key must be 1-256 characters")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be 1-{MAX_WORKERS} (or auto), got {self.workers}")
        if self.workers > 1 and sys.platform == "win32":
            # Workers inherit sockets and watch their stdin, which Windows does not offer.
            raise ConfigError("workers above 1 need a Unix-like system (Linux, macOS, BSD)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")

    def local_url(self, port: int) -> str:
        """The gateway's http:// URL as seen from this machine, once listening on ``port``."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def recovery_log_age(self) -> float | None:
        """How long the recovery log keeps entries beyond the window: room history
        (``history_size``) answers from the same log, for ``history_ttl``."""
        return self.history_ttl if self.history_size > 0 else None

    @property
    def cluster(self) -> bool:
        return self.redis_url is not None or self.workers > 1

    @property
    def namespaces(self) -> frozenset[str] | None:
        """The namespace allowlist, or None when any namespace is served."""
        return frozenset(self.namespace) if self.namespace else None


FIELD_NAMES = frozenset(f.name for f in fields(Settings))
SETTING_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML settings file: top-level keys named like the fields (``api_key``...)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("siogate", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [siogate] must be a table")
    if table is not data and len(data) > 1:
        others = ", ".join(sorted(k for k in data if k != "siogate"))
        raise ConfigError(f"{path}: settings outside [siogate] would be ignored: {others}")
    unknown = sorted(set(table) - FIELD_NAMES)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return {key: tuple(v) if isinstance(v, list) else v for key, v in table.items()}
