"""The ``siogate`` command: serve, emit, token, listen.

Every ``serve`` option also reads ``SIOGATE_<NAME>`` (lists as comma-separated values) and
the ``--config`` TOML file. Precedence: flag > environment > TOML > default.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
import httpx
from click.core import ParameterSource

from ._version import __version__
from .auth.strength import GENERATE_HINT, secret_problem
from .config import AUTH_MODES, LOG_LEVELS, RATE_ACTIONS, SETTING_DEFAULTS, Settings, load_toml
from .errors import ConfigError

# Exit status when settings are wrong (as click uses for usage errors).
EXIT_CONFIG = 2
# Exit status when the server cannot start (as uvicorn's STARTUP_FAILURE).
EXIT_STARTUP = 3
DEFAULT_URL = "http://127.0.0.1:8000"


# Servers remembered in the dev-credentials file; the oldest entries go first.
MAX_DEV_SERVERS = 32


def dev_credentials_path() -> Path:
    """Where a dev-mode ``serve`` leaves its generated credentials for the other commands.

    The file maps each server's URL to what it generated, so that several dev servers
    on one machine do not overwrite each other: ``{"http://127.0.0.1:8000": {"api_key":
    ..., "jwt_secret": ..., "saved_at": ...}}``. It is always owner-only (0600).
    """
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "siogate" / "dev-credentials.json"


def _normal_url(url: str) -> str:
    """``url`` as a key of the dev-credentials file (localhost and 127.0.0.1 are one)."""
    parts = urlsplit(url.strip().rstrip("/"))
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a URL with a valid port: compared as written
        return url.strip().rstrip("/")
    host = (parts.hostname or "").lower()
    if host == "localhost":
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}{port}{parts.path}"


def _load_dev_servers(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("url"), str):
        # The single-server layout of earlier versions.
        data = {data["url"]: data}
    return {
        _normal_url(url): entry
        for url, entry in data.items()
        if isinstance(url, str) and isinstance(entry, dict)
    }


def read_dev_credentials(url: str | None = None) -> dict[str, str]:
    """The dev credentials saved by the server at ``url`` (by the last one to start, when
    ``url`` is None), with its ``url``; empty when there are none."""
    servers = _load_dev_servers(dev_credentials_path())
    if url is not None:
        key = _normal_url(url)
        entry = servers.get(key)
    elif servers:
        key, entry = max(servers.items(), key=lambda item: _saved_at(item[1]))
    else:
        return {}
    if entry is None:
        return {}
    found = {
        k: v for k, v in entry.items() if k in ("api_key", "jwt_secret") and isinstance(v, str)
    }
    return {"url": key, **found} if found else {}


def _saved_at(entry: dict[str, Any]) -> float:
    value = entry.get("saved_at")
    return float(value) if isinstance(value, int | float) else 0.0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``path`` (where flock exists)."""
    try:
        import fcntl
    except ImportError:  # Windows: a concurrent start may lose the other server's entry
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, owner-only from the first byte.

    The content goes to a fresh file (O_EXCL, 0600, not following links) that then
    replaces ``path``: whatever mode or link was there before, the result is a 0600
    regular file, and a reader never sees half of it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o600)  # in case the umask or the filesystem changed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _update_dev_servers(change: Callable[[dict[str, dict[str, Any]]], None]) -> Path:
    path = dev_credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(path):
        servers = _load_dev_servers(path)
        change(servers)
        newest = sorted(servers.items(), key=lambda item: _saved_at(item[1]))[-MAX_DEV_SERVERS:]
        _write_private(path, dict(newest))
    return path


class CommaList(click.ParamType):  # type: ignore[type-arg]
    """A repeatable option whose environment variable is a comma-separated list."""

    name = "text"
    envvar_list_splitter = ","

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part.strip() for part in rv.split(",") if part.strip()]


class WorkerCount(click.ParamType):  # type: ignore[type-arg]
    """A number of worker processes, or ``auto`` for the cores this process may use."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() == "auto":
            return usable_cores()
        try:
            return int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _env(name: str) -> str:
    return "SIOGATE_" + name.upper()


# ctx.meta key: which file the TOML settings came from, and who named it.
_CONFIG_ORIGIN = "siogate.config"


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        by_env = ctx.get_parameter_source("config") is ParameterSource.ENVIRONMENT
        origin = f"{value} (named by {'SIOGATE_CONFIG' if by_env else '--config'})"
        ctx.meta[_CONFIG_ORIGIN] = origin
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_toml(Path(value))}
        except ConfigError as exc:
            # Not click.BadParameter: its message would always add "(env var:
            # 'SIOGATE_CONFIG')", even when the file came from --config.
            source = "SIOGATE_CONFIG" if by_env else "--config"
            click.echo(f"siogate: config file from {source}: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
    return value


class SettingOption(click.Option):
    """An option whose error messages name where the bad value came from.

    click names the environment variable in every error about an option that has one,
    so a bad value from the TOML file (or the command line) blamed ``SIOGATE_<NAME>``.
    """

    def get_error_hint(self, ctx: click.Context | None) -> str:
        source = ctx.get_parameter_source(self.name) if ctx is not None and self.name else None
        if source is ParameterSource.ENVIRONMENT:
            return super().get_error_hint(ctx)
        flags = click.Parameter.get_error_hint(self, ctx)
        if source is ParameterSource.DEFAULT_MAP and ctx is not None:
            origin = ctx.meta.get(_CONFIG_ORIGIN, "the config file")
            return f"{self.name!r} in {origin}, for {flags}"
        return flags


def option(name: str, *decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A ``serve`` option bound to the Settings field ``name`` and ``SIOGATE_<NAME>``.

    Its default is the field's (one place for every default); one that is not None or
    False is shown in ``--help``.
    """
    flag = "--" + name.replace("_", "-")
    default = SETTING_DEFAULTS[name]
    kwargs.setdefault("default", default)
    if default is not None and default is not False and default != ():
        kwargs.setdefault("show_default", True)
    return click.option(
        flag, *decls, name, cls=SettingOption, envvar=_env(name), show_envvar=True, **kwargs
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="siogate")
def main() -> None:
    """siogate: browsers connect with Socket.IO; backends talk HTTP and receive webhooks.

    Start the gateway with `siogate serve`, then push events with `POST /v1/emit`
    (or `siogate emit`). Run `siogate COMMAND --help` for each command's options.
    """


@main.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="SIOGATE_CONFIG",
    show_envvar=True,
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="TOML file with settings named like the options (api_key = ...).",
)
@option("host", help="Interface to listen on.")
@option("port", type=int, help="TCP port (0: pick one).")
@option("api_key", help="Key for the HTTP API (Authorization: Bearer KEY). Generated if unset.")
@option("jwt_secret", help="HS256 secret for handshake tokens. Generated if unset.")
@option(
    "allow_anonymous",
    is_flag=True,
    help="Accept sockets that send no token (user is null).",
)
@option(
    "dev",
    is_flag=True,
    help="Development mode: allow generated credentials on a non-loopback --host.",
)
@option(
    "auth",
    type=click.Choice(AUTH_MODES),
    help="Who checks handshakes: JWT verification, or the handlers' on_connect.",
)
@option("jwt_issuer", help="Refuse handshake tokens whose iss claim is not this.")
@option("jwt_audience", help="Refuse handshake tokens whose aud claim does not name this.")
@option(
    "jwt_leeway",
    type=float,
    help="Seconds of clock skew allowed on exp and nbf.",
)
@option("webhook_url", help="POST client events (and connects/disconnects) here.")
@option("webhook_secret", help="HMAC-SHA256 key for the X-Siogate-Signature header.")
@option("webhook_timeout", type=float, help="Seconds per webhook call.")
@option(
    "webhook_concurrency",
    type=int,
    help="Webhook calls in flight at once.",
)
@option(
    "webhook_per_socket",
    type=int,
    help="Webhook calls one client connection may have in flight (more wait in its queue).",
)
@option(
    "presence_webhooks",
    is_flag=True,
    help="Send user.online / user.offline webhooks (a user's first and last socket).",
)
@option(
    "room_webhooks",
    is_flag=True,
    help="Send room.join / room.leave webhooks (room changes after connect).",
)
@option(
    "presence_events",
    type=CommaList(),
    multiple=True,
    help="Namespace whose rooms get presence:join / presence:leave (repeatable; '*': all).",
)
@option(
    "cors_origin",
    type=CommaList(),
    multiple=True,
    help="Browser origin allowed for long-polling (repeatable; '*' for any).",
)
@option(
    "namespace",
    type=CommaList(),
    multiple=True,
    help="Namespace clients may join (repeatable). Default: any.",
)
@option("handlers", metavar="MODULE:ATTR", help="In-process Python handlers to load.")
@option(
    "max_payload",
    type=int,
    help="Largest Engine.IO packet, polling body or API body, in bytes.",
)
@option(
    "max_buffer",
    type=int,
    help="Outgoing bytes a socket may have queued before it is disconnected.",
)
@option(
    "slow_timeout",
    type=int,
    help="Milliseconds a socket's outgoing buffer may stay undrained before it is cut.",
)
@option(
    "max_connections",
    type=int,
    help="Open TCP connections in total; more are closed at once (503 over HTTP).",
)
@option(
    "max_connections_per_ip",
    type=int,
    help="Open TCP connections per client address (0: no cap). Raise it behind a proxy.",
)
@option(
    "max_head_size",
    type=int,
    help="Bytes of one HTTP request head, counted as it arrives (431 over it).",
)
@option(
    "head_timeout",
    type=int,
    help="Milliseconds for a request head to arrive once begun (408 over it).",
)
@option(
    "body_timeout",
    type=int,
    help="Milliseconds for a request body to arrive after its head (408 over it).",
)
@option(
    "max_pipelined",
    type=int,
    help="Requests read ahead on one keep-alive connection before reading pauses.",
)
@option(
    "max_attachments",
    type=int,
    help="Binary attachments in one Socket.IO packet (none before a namespace is joined).",
)
@option(
    "event_rate",
    type=float,
    help="Events per second one client connection may send (token bucket; 0: no limit).",
)
@option(
    "event_burst",
    type=int,
    help="Events a client connection may send at once above --event-rate.",
)
@option(
    "event_rate_action",
    type=click.Choice(RATE_ACTIONS),
    help="What happens to events over the rate: dropped (acked with an error) or disconnect.",
)
@option(
    "max_ack_recipients",
    type=int,
    help="Sockets one emit with ack may reach, cluster-wide (400 too_many_recipients).",
)
@option(
    "max_pending_acks",
    type=int,
    help="Emits with ack waiting at once, per node asked (503 too_many_pending_acks).",
)
@option("ping_interval", type=int, help="Milliseconds.")
@option("ping_timeout", type=int, help="Milliseconds.")
@option(
    "connect_timeout",
    type=int,
    help="Milliseconds a connection may stay without joining a namespace.",
)
@option(
    "redis_url",
    metavar="URL",
    help="Cluster mode: coordinate with the other nodes through this Redis "
    "(redis://[:password@]host:port/db). Default: one process, in memory. A Redis "
    "Cluster: the URL of any of its nodes, or several separated by commas.",
)
@option(
    "redis_prefix",
    help="Prefix of every Redis key and channel (one per cluster sharing a Redis).",
)
@option(
    "advertise_url",
    metavar="URL",
    help="Where the other nodes reach this one (forwarded long-polling requests). "
    "Default: http://HOST:PORT.",
)
@option(
    "node_ttl",
    type=int,
    help="Milliseconds after which a silent node counts as gone.",
)
@option(
    "cluster_timeout",
    type=int,
    help="Milliseconds a rooms/sockets listing waits for the other nodes.",
)
@option(
    "workers",
    type=WorkerCount(),
    help="Worker processes sharing the port ('auto': one per usable core; see docs/workers.md).",
)
@option(
    "cluster_routing",
    type=click.Choice(("sharded", "broadcast")),
    help="sharded: a command reaches only the nodes holding its rooms or sockets (Redis 7+); "
    "broadcast: every node receives every command. The same on every node.",
)
@option(
    "idempotency_ttl",
    type=int,
    help="Seconds a request's Idempotency-Key is remembered (a repeat is answered, not applied).",
)
@option(
    "admin",
    is_flag=True,
    help="Serve the namespace @socket.io/admin-ui connects to (see docs/admin.md).",
)
@option("admin_namespace", help="Namespace of the admin UI.")
@option("admin_username", help="User name the admin UI logs in with.")
@option(
    "admin_password_hash",
    help="bcrypt hash of the admin UI's password (as instrument() takes).",
)
@option(
    "admin_no_auth",
    is_flag=True,
    help="Admin UI without a password: only with a loopback --host.",
)
@option(
    "recovery_window",
    type=float,
    metavar="SECONDS",
    help="Connection state recovery: a socket whose transport drops keeps its id, rooms "
    "and missed events this long (0: off; 120 recommended; across nodes with --redis-url, "
    "across --workers through the primary without it).",
)
@option(
    "recovery_max_missed",
    type=int,
    help="Events kept for one disconnected socket; one more ends it (no recovery).",
)
@option(
    "recovery_max_messages",
    type=int,
    help="Messages kept for recovery in all (offset log plus missed events).",
)
@option(
    "history_size",
    type=int,
    help="Room history: events kept per room for GET /v1/rooms/ROOM/history "
    "(0: off; with --redis-url or --workers above 1 it needs --recovery-window).",
)
@option("history_ttl", type=float, metavar="SECONDS", help="Room history: age limit.")
@option("history_max_messages", type=int, help="Room history: events kept over all rooms.")
@option(
    "emitter_compat",
    is_flag=True,
    help="With --redis-url: deliver what @socket.io/redis-emitter publishes "
    "(to/except/of, socketsJoin, socketsLeave, disconnectSockets; serverSideEmit to "
    "handlers' on_server_event; see docs/emitter.md).",
)
@option(
    "emitter_key",
    help="Channel prefix the emitter publishes under (its `key` option).",
)
@option(
    "log_level",
    type=click.Choice(LOG_LEVELS),
    help="Logging verbosity.",
)
def serve(**values: Any) -> None:
    """Run the gateway.

    Alone it keeps everything in memory. With --redis-url, several nodes behind one load
    balancer form a cluster (give them all the same --api-key and --jwt-secret).
    """
    logging.basicConfig(
        level=values["log_level"].upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every webhook request at INFO; siogate's own lines say what matters.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        settings = Settings(**values)
    except ConfigError as exc:
        _config_error(str(exc))
    _check_credentials(settings)
    generated: dict[str, str] = {}
    api_key = settings.api_key or generated.setdefault("api_key", secrets.token_urlsafe(32))
    jwt_secret = settings.jwt_secret or generated.setdefault(
        "jwt_secret", secrets.token_urlsafe(32)
    )
    settings = dataclasses.replace(settings, api_key=api_key, jwt_secret=jwt_secret)
    from .app import build, install_event_loop

    settings = _locate_redis(settings)
    try:
        gateway = build(settings)
    except ConfigError as exc:
        _config_error(str(exc))
    on_listening = None
    saved_url: list[str] = []
    if generated:

        def on_listening(port: int) -> None:
            # Only now: a server that cannot bind must neither save nor announce anything.
            url = settings.local_url(port)
            path = _save_dev_credentials(url, generated)
            if path is not None:
                saved_url.append(url)
            _announce_dev_mode(generated, url, path)

    try:
        if settings.workers > 1:
            from .supervisor import supervise

            code = supervise(settings, on_listening)
            if code:
                sys.exit(code)
        else:
            install_event_loop()
            asyncio.run(gateway.serve(on_listening))
    except ConfigError as exc:  # found at start (a Redis Cluster node as --redis-url)
        _config_error(str(exc))
    except OSError as exc:
        # Typically the port is taken or the host cannot be bound.
        click.echo(f"siogate: cannot listen on {settings.host}:{settings.port}: {exc}", err=True)
        sys.exit(EXIT_STARTUP)
    finally:
        for url in saved_url:
            _forget_dev_credentials(url, generated)


def _locate_redis(settings: Settings) -> Settings:
    """On a Redis Cluster, the primary and hash-tagged prefix of this deployment."""
    if settings.redis_url is None:
        return settings
    from .broker.redis import redacted
    from .broker.redis_cluster import ClusterUnreachable, locate

    try:
        located = locate(settings.redis_url, settings.redis_prefix)
    except ConfigError as exc:
        _config_error(str(exc))
    except ClusterUnreachable as exc:
        click.echo(f"siogate: {exc}", err=True)
        sys.exit(EXIT_STARTUP)
    if located is None or not located.cluster:
        return settings
    logging.getLogger("siogate").info(
        "Redis Cluster: keys and channels under %s live on %s",
        located.prefix,
        redacted(located.url),
    )
    return dataclasses.replace(settings, redis_url=located.url, redis_prefix=located.prefix)


def _config_error(message: str) -> NoReturn:
    click.echo(f"siogate: {message}", err=True)
    sys.exit(EXIT_CONFIG)


_SECRET_FLAGS = {
    "api_key": "--api-key",
    "jwt_secret": "--jwt-secret",
    "webhook_secret": "--webhook-secret",
}


def _check_credentials(settings: Settings) -> None:
    """Refuse weak secrets, and generated credentials where others could reach them."""
    if settings.redis_url is not None:
        missing = [k for k in ("api_key", "jwt_secret") if not getattr(settings, k)]
        if missing:
            names = " and ".join(_SECRET_FLAGS[k] for k in missing)
            _config_error(f"cluster mode needs {names}, the same on every node")
    for key, flag in _SECRET_FLAGS.items():
        value = getattr(settings, key)
        problem = None if value is None else secret_problem(value)
        if problem is not None:
            _config_error(
                f"{flag} (SIOGATE_{key.upper()}) {problem}; use a random value of 32+ "
                f"characters, for example the output of: {GENERATE_HINT}"
            )
    # A generated API key is printed to the log; a generated JWT secret lets nobody but
    # this machine's user mint tokens (with --auth handlers no token is checked at all).
    if settings.admin_no_auth and not is_loopback(settings.host):
        _config_error(
            f"refusing --admin-no-auth on {settings.host!r}: anyone who reaches the port "
            "could list and disconnect every socket; bind a loopback --host or pass "
            "--admin-password-hash"
        )
    missing = [] if settings.api_key else ["--api-key"]
    if not settings.jwt_secret and settings.auth == "jwt":
        missing.append("--jwt-secret")
    if missing and not settings.dev and not is_loopback(settings.host):
        names = " and ".join(missing)
        _config_error(
            f"refusing to listen on {settings.host!r} with generated credentials: pass "
            f"{names} (or their SIOGATE_* variables), or --dev to allow generated ones "
            "on a non-loopback host"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # another host name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _announce_dev_mode(generated: dict[str, str], url: str, saved: Path | None) -> None:
    lines = ["", "=" * 72, "  siogate DEV MODE: generated credentials (set them to silence this)"]
    lines += [f"    SIOGATE_{key.upper()}={value}" for key, value in generated.items()]
    if saved is not None:
        lines.append(f"  saved for `siogate emit/token/listen --url {url}` in {saved}")
    else:
        lines.append("  (not saved: `siogate emit/token/listen` need them passed)")
    lines += ["=" * 72, ""]
    click.echo("\n".join(lines), err=True)


def _save_dev_credentials(url: str, generated: dict[str, str]) -> Path | None:
    """Only generated values are written (owner-readable only), never ones the user gave."""

    def add(servers: dict[str, dict[str, Any]]) -> None:
        servers[_normal_url(url)] = {**generated, "saved_at": time.time()}

    try:
        return _update_dev_servers(add)
    except OSError as exc:
        logging.getLogger("siogate").warning(
            "cannot save dev credentials to %s: %s", dev_credentials_path(), exc
        )
        return None


def _forget_dev_credentials(url: str, generated: dict[str, str]) -> None:
    """Drop this server's entry when it stops: its credentials are dead now."""
    key = _normal_url(url)

    def drop(servers: dict[str, dict[str, Any]]) -> None:
        entry = servers.get(key)
        if entry is not None and all(entry.get(k) == v for k, v in generated.items()):
            del servers[key]

    with contextlib.suppress(OSError):
        _update_dev_servers(drop)


def _client_value(value: str | None, key: str, dev: dict[str, str]) -> str:
    """``value``, else the dev credential ``key`` of the server ``dev`` was read for."""
    if value:
        return value
    saved = dev.get(key)
    if saved:
        click.echo(
            f"(using the dev {key} of {dev['url']} saved in {dev_credentials_path()})", err=True
        )
        return saved
    raise click.UsageError(f"--{key.replace('_', '-')} (or SIOGATE_{key.upper()}) is required")


@main.command()
@click.argument("event")
@click.argument("data", required=False)
@click.option("--room", "rooms", multiple=True, help="Target room (repeatable). Default: all.")
@click.option("--except", "exclude", multiple=True, help="Room to leave out (repeatable).")
@click.option("--namespace", default="/", show_default=True)
@click.option("--url", envvar="SIOGATE_URL", show_envvar=True, help=f"Default: {DEFAULT_URL}.")
@click.option("--api-key", envvar="SIOGATE_API_KEY", show_envvar=True)
@click.option(
    "--ack-timeout",
    type=click.IntRange(1, 60_000),
    metavar="MS",
    help="Wait up to MS milliseconds for every recipient's ack; print their replies.",
)
def emit(
    event: str,
    data: str | None,
    rooms: tuple[str, ...],
    exclude: tuple[str, ...],
    namespace: str,
    url: str | None,
    api_key: str | None,
    ack_timeout: int | None,
) -> None:
    """Emit EVENT with DATA (a JSON value) through the HTTP API.

    With --ack-timeout, prints {"recipients", "acks": [{"socket", "args"}], "timeouts"}.
    """
    body: dict[str, Any] = {"event": event, "namespace": namespace}
    if data is not None:
        try:
            body["data"] = json.loads(data)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="DATA") from exc
    if rooms:
        body["rooms"] = list(rooms)
    if exclude:
        body["except"] = list(exclude)
    wait = 0.0
    if ack_timeout is not None:
        body["ack"] = {"timeout_ms": ack_timeout}
        wait = ack_timeout / 1000
    dev = read_dev_credentials(url)
    base = url or dev.get("url") or DEFAULT_URL
    key = _client_value(api_key, "api_key", dev)
    try:
        response = httpx.post(
            f"{base}/v1/emit",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10 + wait,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: {response.text}")
    click.echo(response.text)


def _claim_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--jwt-issuer and --jwt-audience, for tokens a gateway that checks them accepts."""
    f = click.option(
        "--jwt-audience", envvar="SIOGATE_JWT_AUDIENCE", show_envvar=True, help="The aud claim."
    )(f)
    return click.option(
        "--jwt-issuer", envvar="SIOGATE_JWT_ISSUER", show_envvar=True, help="The iss claim."
    )(f)


@main.command()
@click.option("--sub", help="User id (the sub claim); the socket joins room user:<sub>.")
@click.option("--room", "rooms", multiple=True, help="Room joined on connect (repeatable).")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace the token may join (repeatable; the namespaces claim). Default: any.",
)
@click.option("--ttl", type=float, default=3600, show_default=True, help="Seconds until exp.")
@click.option("--jwt-secret", envvar="SIOGATE_JWT_SECRET", show_envvar=True)
@_claim_options
@click.option(
    "--url",
    envvar="SIOGATE_URL",
    show_envvar=True,
    help="Gateway whose saved dev secret to use. Default: the last dev server started.",
)
def token(
    sub: str | None,
    rooms: tuple[str, ...],
    namespaces: tuple[str, ...],
    ttl: float,
    jwt_secret: str | None,
    jwt_issuer: str | None,
    jwt_audience: str | None,
    url: str | None,
) -> None:
    """Mint a handshake JWT (HS256) with the gateway's secret."""
    from .auth import mint_token

    secret = _client_value(jwt_secret, "jwt_secret", read_dev_credentials(url))
    try:
        minted = mint_token(
            secret,
            sub=sub,
            rooms=rooms,
            ttl=ttl,
            namespaces=namespaces or None,
            issuer=jwt_issuer,
            audience=jwt_audience,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(minted)


@main.command()
@click.option("--room", "rooms", multiple=True, help="Room to join (repeatable).")
@click.option("--sub", default="siogate-cli", show_default=True, help="User id for the token.")
@click.option("--namespace", default="/", show_default=True)
@click.option("--url", envvar="SIOGATE_URL", show_envvar=True, help=f"Default: {DEFAULT_URL}.")
@click.option("--jwt-secret", envvar="SIOGATE_JWT_SECRET", show_envvar=True)
@_claim_options
@click.option("--count", type=int, default=0, help="Exit after this many events (0: never).")
def listen(
    rooms: tuple[str, ...],
    sub: str,
    namespace: str,
    url: str | None,
    jwt_secret: str | None,
    jwt_issuer: str | None,
    jwt_audience: str | None,
    count: int,
) -> None:
    """Connect as a Socket.IO client and print each event as a JSON line."""
    from .auth import mint_token
    from .listener import listen as run_listen

    dev = read_dev_credentials(url)
    secret = _client_value(jwt_secret, "jwt_secret", dev)
    base = url or dev.get("url") or DEFAULT_URL
    jwt = mint_token(
        secret, sub=sub, rooms=rooms, ttl=24 * 3600, issuer=jwt_issuer, audience=jwt_audience
    )
    try:
        code = asyncio.run(run_listen(base, namespace, {"token": jwt}, count))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
