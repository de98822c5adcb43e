"""The ``siogate`` command: serve, emit, token, listen.

Every ``serve`` option also reads ``SIOGATE_<NAME>`` (lists as comma-separated values) and
the ``--config`` TOML file. Precedence: flag > environment > TOML > default.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from ._version import __version__
from .config import AUTH_MODES, LOG_LEVELS, RATE_ACTIONS, Settings, load_toml
from .errors import ConfigError

# Exit status when settings are wrong (as click uses for usage errors).
EXIT_CONFIG = 2
# Exit status when the server cannot start (as uvicorn's STARTUP_FAILURE).
EXIT_STARTUP = 3
DEFAULT_URL = "http://127.0.0.1:8000"


def dev_credentials_path() -> Path:
    """Where a dev-mode ``serve`` leaves its generated credentials for the other commands."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "siogate" / "dev-credentials.json"


def read_dev_credentials() -> dict[str, str]:
    try:
        data = json.loads(dev_credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


class CommaList(click.ParamType):  # type: ignore[type-arg]
    """A repeatable option whose environment variable is a comma-separated list."""

    name = "text"
    envvar_list_splitter = ","

    def split_envvar_value(self, rv: str) -> list[str]:
        return [part.strip() for part in rv.split(",") if part.strip()]


def _env(name: str) -> str:
    return "SIOGATE_" + name.upper()


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_toml(Path(value))}
        except ConfigError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def option(name: str, *decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    """A ``serve`` option bound to the Settings field ``name`` and ``SIOGATE_<NAME>``."""
    flag = "--" + name.replace("_", "-")
    return click.option(flag, *decls, name, envvar=_env(name), show_envvar=True, **kwargs)


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
@option("host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@option("port", type=int, default=8000, show_default=True, help="TCP port (0: pick one).")
@option("api_key", help="Key for the HTTP API (Authorization: Bearer KEY). Generated if unset.")
@option("jwt_secret", help="HS256 secret for handshake tokens. Generated if unset.")
@option(
    "allow_anonymous",
    is_flag=True,
    default=False,
    help="Accept sockets that send no token (user is null).",
)
@option(
    "dev",
    is_flag=True,
    default=False,
    help="Development mode: allow generated credentials on a non-loopback --host.",
)
@option(
    "auth",
    type=click.Choice(AUTH_MODES),
    default="jwt",
    show_default=True,
    help="Who checks handshakes: JWT verification, or the handlers' on_connect.",
)
@option("jwt_issuer", help="Refuse handshake tokens whose iss claim is not this.")
@option("jwt_audience", help="Refuse handshake tokens whose aud claim does not name this.")
@option(
    "jwt_leeway",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds of clock skew allowed on exp and nbf.",
)
@option("webhook_url", help="POST client events (and connects/disconnects) here.")
@option("webhook_secret", help="HMAC-SHA256 key for the X-Siogate-Signature header.")
@option(
    "webhook_timeout", type=float, default=5.0, show_default=True, help="Seconds per webhook call."
)
@option(
    "webhook_concurrency",
    type=int,
    default=64,
    show_default=True,
    help="Webhook calls in flight at once.",
)
@option(
    "webhook_per_socket",
    type=int,
    default=4,
    show_default=True,
    help="Webhook calls one client connection may have in flight (more wait in its queue).",
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
    default=1_000_000,
    show_default=True,
    help="Largest Engine.IO packet, polling body or API body, in bytes.",
)
@option(
    "max_buffer",
    type=int,
    default=1_000_000,
    show_default=True,
    help="Outgoing bytes a socket may have queued before it is disconnected.",
)
@option(
    "slow_timeout",
    type=int,
    default=10_000,
    show_default=True,
    help="Milliseconds a socket's outgoing buffer may stay undrained before it is cut.",
)
@option(
    "max_connections",
    type=int,
    default=10_000,
    show_default=True,
    help="Open TCP connections in total; more are closed at once (503 over HTTP).",
)
@option(
    "max_connections_per_ip",
    type=int,
    default=1_000,
    show_default=True,
    help="Open TCP connections per client address (0: no cap). Raise it behind a proxy.",
)
@option(
    "max_head_size",
    type=int,
    default=16_384,
    show_default=True,
    help="Bytes of one HTTP request head, counted as it arrives (431 over it).",
)
@option(
    "head_timeout",
    type=int,
    default=10_000,
    show_default=True,
    help="Milliseconds for a request head to arrive once begun (408 over it).",
)
@option(
    "body_timeout",
    type=int,
    default=30_000,
    show_default=True,
    help="Milliseconds for a request body to arrive after its head (408 over it).",
)
@option(
    "max_pipelined",
    type=int,
    default=8,
    show_default=True,
    help="Requests read ahead on one keep-alive connection before reading pauses.",
)
@option(
    "max_attachments",
    type=int,
    default=10,
    show_default=True,
    help="Binary attachments in one Socket.IO packet (none before a namespace is joined).",
)
@option(
    "event_rate",
    type=float,
    default=100.0,
    show_default=True,
    help="Events per second one client connection may send (token bucket; 0: no limit).",
)
@option(
    "event_burst",
    type=int,
    default=200,
    show_default=True,
    help="Events a client connection may send at once above --event-rate.",
)
@option(
    "event_rate_action",
    type=click.Choice(RATE_ACTIONS),
    default="drop",
    show_default=True,
    help="What happens to events over the rate: dropped (acked with an error) or disconnect.",
)
@option("ping_interval", type=int, default=25_000, show_default=True, help="Milliseconds.")
@option("ping_timeout", type=int, default=20_000, show_default=True, help="Milliseconds.")
@option(
    "connect_timeout",
    type=int,
    default=45_000,
    show_default=True,
    help="Milliseconds a connection may stay without joining a namespace.",
)
@option(
    "redis_url",
    metavar="URL",
    help="Cluster mode: coordinate with the other nodes through this Redis "
    "(redis://[:password@]host:port/db). Default: one process, in memory.",
)
@option(
    "redis_prefix",
    default="siogate",
    show_default=True,
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
    default=5_000,
    show_default=True,
    help="Milliseconds after which a silent node counts as gone.",
)
@option(
    "cluster_timeout",
    type=int,
    default=1_000,
    show_default=True,
    help="Milliseconds a rooms/sockets listing waits for the other nodes.",
)
@option(
    "log_level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
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
    generated = {}
    if values.get("redis_url"):
        missing = [k for k in ("api_key", "jwt_secret") if not values.get(k)]
        if missing:
            names = " and ".join("--" + k.replace("_", "-") for k in missing)
            click.echo(f"siogate: cluster mode needs {names}, the same on every node", err=True)
            sys.exit(EXIT_CONFIG)
    for key in ("api_key", "jwt_secret"):
        if not values.get(key):
            values[key] = generated[key] = secrets.token_urlsafe(32)
    try:
        settings = Settings(**values)
    except ConfigError as exc:
        click.echo(f"siogate: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    from .app import build, install_event_loop

    try:
        gateway = build(settings)
    except ConfigError as exc:
        click.echo(f"siogate: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    on_listening = None
    if generated:
        _announce_dev_mode(generated)

        def on_listening(port: int) -> None:
            _save_dev_credentials(settings.local_url(port), generated)

    install_event_loop()
    try:
        asyncio.run(gateway.serve(on_listening))
    except OSError as exc:
        # Typically the port is taken or the host cannot be bound.
        click.echo(f"siogate: cannot listen on {settings.host}:{settings.port}: {exc}", err=True)
        sys.exit(EXIT_STARTUP)


def _announce_dev_mode(generated: dict[str, str]) -> None:
    lines = ["", "=" * 72, "  siogate DEV MODE: generated credentials (set them to silence this)"]
    lines += [f"    SIOGATE_{key.upper()}={value}" for key, value in generated.items()]
    lines += [
        f"  saved for `siogate emit/token/listen` in {dev_credentials_path()}",
        "=" * 72,
        "",
    ]
    click.echo("\n".join(lines), err=True)


def _save_dev_credentials(url: str, generated: dict[str, str]) -> None:
    """Only generated values are written (owner-readable only), never ones the user gave."""
    path = dev_credentials_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": url, **generated}, f)
    except OSError as exc:
        logging.getLogger("siogate").warning("cannot save dev credentials to %s: %s", path, exc)


def _client_value(value: str | None, key: str) -> str:
    if value:
        return value
    dev = read_dev_credentials().get(key)
    if dev:
        click.echo(f"(using the dev {key} saved in {dev_credentials_path()})", err=True)
        return dev
    raise click.UsageError(f"--{key.replace('_', '-')} (or SIOGATE_{key.upper()}) is required")


@main.command()
@click.argument("event")
@click.argument("data", required=False)
@click.option("--room", "rooms", multiple=True, help="Target room (repeatable). Default: all.")
@click.option("--except", "exclude", multiple=True, help="Room to leave out (repeatable).")
@click.option("--namespace", default="/", show_default=True)
@click.option("--url", envvar="SIOGATE_URL", show_envvar=True, help=f"Default: {DEFAULT_URL}.")
@click.option("--api-key", envvar="SIOGATE_API_KEY", show_envvar=True)
def emit(
    event: str,
    data: str | None,
    rooms: tuple[str, ...],
    exclude: tuple[str, ...],
    namespace: str,
    url: str | None,
    api_key: str | None,
) -> None:
    """Emit EVENT with DATA (a JSON value) through the HTTP API."""
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
    base = url or read_dev_credentials().get("url") or DEFAULT_URL
    key = _client_value(api_key, "api_key")
    try:
        response = httpx.post(
            f"{base}/v1/emit", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {base}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(f"{response.status_code}: {response.text}")
    click.echo(response.text)


@main.command()
@click.option("--sub", help="User id (the sub claim); the socket joins room user:<sub>.")
@click.option("--room", "rooms", multiple=True, help="Room joined on connect (repeatable).")
@click.option("--ttl", type=float, default=3600, show_default=True, help="Seconds until exp.")
@click.option("--jwt-secret", envvar="SIOGATE_JWT_SECRET", show_envvar=True)
def token(sub: str | None, rooms: tuple[str, ...], ttl: float, jwt_secret: str | None) -> None:
    """Mint a handshake JWT (HS256) with the gateway's secret."""
    from .auth import mint_token

    secret = _client_value(jwt_secret, "jwt_secret")
    click.echo(mint_token(secret, sub=sub, rooms=rooms, ttl=ttl))


@main.command()
@click.option("--room", "rooms", multiple=True, help="Room to join (repeatable).")
@click.option("--sub", default="siogate-cli", show_default=True, help="User id for the token.")
@click.option("--namespace", default="/", show_default=True)
@click.option("--url", envvar="SIOGATE_URL", show_envvar=True, help=f"Default: {DEFAULT_URL}.")
@click.option("--jwt-secret", envvar="SIOGATE_JWT_SECRET", show_envvar=True)
@click.option("--count", type=int, default=0, help="Exit after this many events (0: never).")
def listen(
    rooms: tuple[str, ...],
    sub: str,
    namespace: str,
    url: str | None,
    jwt_secret: str | None,
    count: int,
) -> None:
    """Connect as a Socket.IO client and print each event as a JSON line."""
    from .auth import mint_token
    from .listener import listen as run_listen

    secret = _client_value(jwt_secret, "jwt_secret")
    base = url or read_dev_credentials().get("url") or DEFAULT_URL
    jwt = mint_token(secret, sub=sub, rooms=rooms, ttl=24 * 3600)
    try:
        code = asyncio.run(run_listen(base, namespace, {"token": jwt}, count))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
