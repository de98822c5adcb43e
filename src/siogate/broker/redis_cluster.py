"""Redis Cluster: one deployment lives in one hash slot, on the primary that owns it.

Every key and channel of a deployment starts with ``<prefix>``. On a Redis Cluster the
prefix is made a hash tag (``siogate`` becomes ``{siogate}``, a prefix that already holds
a ``{tag}`` is kept), so that all of them hash to one slot: the multi-key scripts
(presence, idempotency, the registry's pipeline) and multi-channel ``SSUBSCRIBE`` work
unchanged, and ``PUBLISH`` receiver counts (per cluster node) count every subscriber,
since every siogate node subscribes on that one primary. At start :func:`locate` asks the
given seeds (any nodes of the cluster) which primary owns the slot, and the rest of
siogate talks to that primary as to a standalone Redis (``siogate.broker.redis``).

The trade-off: one deployment's traffic is carried by one primary (several deployments,
with different prefixes, spread over the cluster); what the cluster adds is where the
deployment lives, not more capacity for it. See docs/cluster.md, "Redis Cluster".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from ..errors import ConfigError
from .redis import redacted

# Seconds each seed may take to answer at start.
SEED_TIMEOUT = 2.0


class ClusterUnreachable(Exception):
    """None of the seed URLs answered at start."""


@dataclass(frozen=True)
class Located:
    """Where a deployment's keys and channels live."""

    url: str
    prefix: str
    # Whether ``url`` is a Redis Cluster primary (``prefix`` is then a hash tag).
    cluster: bool


def split_urls(value: str) -> list[str]:
    """``--redis-url``: one URL, or a comma-separated list of Redis Cluster nodes."""
    return [u.strip() for u in value.split(",") if u.strip()]


def has_hash_tag(prefix: str) -> bool:
    """Whether Redis hashes ``<prefix>:...`` by a ``{tag}`` inside ``prefix`` alone."""
    start = prefix.find("{")
    if start < 0:
        return False
    end = prefix.find("}", start + 1)
    return end > start + 1


def tagged(prefix: str) -> str:
    """``prefix`` as a hash tag: every ``<prefix>:...`` name falls in one slot."""
    return prefix if has_hash_tag(prefix) else "{" + prefix + "}"


def slot_of(prefix: str) -> int:
    """The hash slot of every key and channel under ``prefix`` (a hash-tagged one)."""
    return int(key_slot(f"{prefix}:nodes".encode()))


def _with_address(url: str, host: str, port: int) -> str:
    """``url`` (its scheme, credentials and options) pointed at ``host:port``."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    address = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{credentials}{address}:{port}"))


def _owner(slots: list[Any], slot: int, seed: str) -> tuple[str, int] | None:
    """The primary's (host, port) for ``slot`` in a ``CLUSTER SLOTS`` reply."""
    for entry in slots:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        if start <= slot <= end:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            if host in ("", "?"):
                host = urlsplit(seed).hostname or "127.0.0.1"  # endpoint not announced
            return host, int(primary[1])
    return None


def locate(redis_url: str, prefix: str) -> Located | None:
    """Where ``--redis-url`` (one URL or a list) and ``--redis-prefix`` put a deployment.

    A standalone Redis is kept as given. A Redis Cluster node (or a list of them) is
    replaced by the primary that owns the hash-tagged prefix's slot. ``None``: the one
    URL given cannot be reached yet (the node starts and retries, as without a cluster).
    Raises :class:`ConfigError` for what no retry fixes, and :class:`ClusterUnreachable`
    when none of several seeds answered.
    """
    seeds = split_urls(redis_url)
    errors: list[str] = []
    for seed in seeds:
        try:
            client = Redis.from_url(
                seed, socket_timeout=SEED_TIMEOUT, socket_connect_timeout=SEED_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigError(f"redis_url {redacted(seed)!r}: {exc}") from None
        try:
            with client:
                info = client.info("cluster")
                if info.get("cluster_enabled") not in (1, "1"):
                    if len(seeds) > 1:
                        raise ConfigError(
                            f"redis_url lists several URLs, which is for a Redis Cluster, "
                            f"but {redacted(seed)} is a standalone Redis: give it alone"
                        )
                    return Located(seed, prefix, cluster=False)
                if seed.startswith("unix://"):
                    raise ConfigError("a Redis Cluster is reached by redis:// or rediss:// URLs")
                db = urlsplit(seed).path.strip("/")
                if db not in ("", "0"):
                    raise ConfigError(
                        f"{redacted(seed)} is a Redis Cluster node: it has database 0 only "
                        f"(the URL asks for /{db})"
                    )
                key_prefix = tagged(prefix)
                slot = slot_of(key_prefix)
                slots = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                owner = _owner(slots, slot, seed)
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError):
                raise ConfigError(f"Redis at {redacted(seed)}: {exc}") from None
            errors.append(f"{redacted(seed)}: {exc}")
            continue
        if owner is None:
            raise ConfigError(
                f"Redis at {redacted(seed)} is a Redis Cluster node, but no primary serves "
                f"slot {slot} (of the prefix {key_prefix!r}): is the cluster created "
                "(redis-cli --cluster create) and are all slots covered?"
            )
        return Located(_with_address(seed, *owner), key_prefix, cluster=True)
    if len(seeds) == 1:
        return None
    raise ClusterUnreachable("none of the Redis Cluster nodes answered: " + "; ".join(errors))


async def check_node(redis: Any, url: str, prefix: str, info: dict[str, Any]) -> None:
    """Refuse, at start, a Redis Cluster node that siogate was not pointed at by
    :func:`locate` (keys under ``prefix`` would be answered with MOVED forever)."""
    if info.get("cluster_enabled") not in (1, "1"):
        return
    if not has_hash_tag(prefix):
        raise ConfigError(
            f"Redis at {redacted(url)} is a Redis Cluster node, but the prefix {prefix!r} is "
            "not a hash tag (siogate serve makes it one; see docs/cluster.md, Redis Cluster)"
        )
    try:
        await redis.exists(f"{prefix}:nodes")
    except ResponseError as exc:
        # MOVED or ASK: another primary owns the slot now (a failover or a reshard).
        raise ConfigError(
            f"Redis at {redacted(url)} does not serve the slot of {prefix!r}: {exc}"
        ) from None
