"""``siogate serve --workers N``: N worker processes on one port, kept alive by a primary.

The primary process does no gateway work. It:

1. reserves the port: with ``SO_REUSEPORT`` (Linux, the BSDs, macOS) it binds a socket
   to it without listening, so that nobody else takes it, and each worker listens on the
   same port with its own ``SO_REUSEPORT`` socket: the kernel spreads new connections
   over the workers. Where the OS has no ``SO_REUSEPORT`` it listens itself and every
   worker accepts on that one inherited socket.
2. without ``--redis-url``, runs the relay the workers coordinate through
   (:class:`~siogate.broker.local.LocalRelay`, a Unix socket in a private directory);
   with it, the workers are nodes on Redis like any other.
3. starts the workers (``python -m siogate.supervisor``), hands each its settings on its
   stdin and waits for its ``ready`` line on its stdout. Each worker is a node with its
   own node id and a private listener on an ephemeral port, which it advertises so that
   long-polling requests that land on another worker are forwarded to it.
4. restarts a worker that exits, after a pause that doubles from RESTART_MIN up to
   RESTART_MAX (reset once a worker has lived STABLE_AFTER seconds);
5. on SIGTERM or SIGINT sends SIGTERM to every worker (each stops as a lone ``serve``
   does: stop accepting, close its sockets, flush), kills any still running after
   STOP_TIMEOUT seconds, and exits 0.

A worker whose stdin reaches end of file (the primary died, even by ``kill -9``) stops
on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .app import build, install_event_loop, redis_broker
from .broker import Broker, BrokerUnavailable
from .broker.local import LocalBroker, LocalRelay, Service
from .broker.recovering_local import RecoveringLocalBroker
from .broker.relay_log import RelayLog
from .config import Settings
from .idempotency import (
    Claim,
    GuardedPublish,
    IdempotencyStore,
    MemoryIdempotencyStore,
    Publish,
    StoredResponse,
    StoreUnavailable,
    apply_in_steps,
)
from .presence_tracker import Notify, PresenceCounts, PresenceTracker
from .types import Namespace, UserId

logger = logging.getLogger("siogate.supervisor")

# Seconds between a worker's exit and its restart: doubled after each quick exit.
RESTART_MIN = 0.1
RESTART_MAX = 5.0
# A worker that ran this many seconds counts as healthy: its next restart is quick again.
STABLE_AFTER = 10.0
# Seconds a worker has to say it is ready before it counts as failed.
START_TIMEOUT = 30.0
# Seconds workers have to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 10.0
# Seconds between a worker's presence polls when it has no change to send (how soon a
# dead worker's users are reported offline, without Redis).
PRESENCE_POLL = 1.0
# Exit status of the primary when the workers could not start (as serve's EXIT_STARTUP).
EXIT_STARTUP = 3

READY = b"ready "


def reuse_port_available() -> bool:
    """Whether workers can each listen on the port (else they share one socket)."""
    return hasattr(socket, "SO_REUSEPORT")


def _bind(settings: Settings, *, listen: bool, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to the serve address (the first one ``host`` resolves to)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        settings.host or None,
        settings.port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclasses.dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    node: str | None = None
    started: float = 0.0


class Supervisor:
    """Starts, watches and stops the workers of one ``serve --workers``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reuse_port = reuse_port_available()
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self.port = settings.port
        self._socket: socket.socket | None = None
        self._dir: str | None = None
        self._relay: LocalRelay | None = None
        self._stopping = asyncio.Event()
        self._keepers: list[asyncio.Task[None]] = []

    async def run(self, on_listening: Callable[[int], None] | None = None) -> int:
        if self.reuse_port:
            # A plain bind first: it fails where anything holds the port, even another
            # SO_REUSEPORT group of this user (a second serve --workers), which the
            # reserving bind below would silently join.
            probe = _bind(self.settings, listen=False, reuse_port=False)
            self.port = probe.getsockname()[1]
            probe.close()
            settings = dataclasses.replace(self.settings, port=self.port)
            self._socket = _bind(settings, listen=False, reuse_port=True)
        else:
            self._socket = _bind(self.settings, listen=True, reuse_port=False)
            self.port = self._socket.getsockname()[1]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)
        try:
            if self.settings.redis_url is None:
                self._dir = tempfile.mkdtemp(prefix="siogate-workers-")
                store = MemoryIdempotencyStore(self.settings.idempotency_ttl)
                counts = PresenceCounts()
                log = relay_log(self.settings)
                self._relay = LocalRelay(
                    os.path.join(self._dir, "relay.sock"),
                    primary_service(store, counts, log),
                    # A gone worker's users are counted out; a live one reports them.
                    on_leave=lambda node: counts.orphans.extend(counts.drop(node)),
                    log=log,
                )
                await self._relay.start()
            started = await asyncio.gather(*(self._spawn(w) for w in self.workers))
            if self._stopping.is_set():
                # Stopped while starting (the workers may have had the signal too).
                return 0
            if not all(started):
                logger.error("a worker did not start; stopping the others")
                return EXIT_STARTUP
            logger.info(
                "siogate listening on http://%s:%d with %d workers (%s)",
                self.settings.host,
                self.port,
                len(self.workers),
                "SO_REUSEPORT" if self.reuse_port else "one shared socket",
            )
            if on_listening is not None:
                on_listening(self.port)
            self._keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
            await self._stopping.wait()
            logger.info("shutting down %d workers", len(self.workers))
            return 0
        finally:
            await self._stop_all()

    # Workers

    def _worker_config(self, worker: _Worker) -> dict[str, Any]:
        settings = dataclasses.replace(self.settings, port=self.port)
        return {
            "settings": dataclasses.asdict(settings),
            "index": worker.index,
            "relay": self._relay.path if self._relay is not None else None,
            "fd": None if self.reuse_port else self._socket_fd(),
        }

    def _socket_fd(self) -> int:
        assert self._socket is not None
        return self._socket.fileno()

    async def _spawn(self, worker: _Worker) -> bool:
        """Start ``worker``'s process; True once it said it is ready."""
        fds = () if self.reuse_port else (self._socket_fd(),)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "siogate.supervisor",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
        )
        worker.process, worker.node, worker.started = process, None, time.monotonic()
        assert process.stdin is not None and process.stdout is not None
        # The settings hold the credentials: a pipe, not argv or the environment.
        process.stdin.write(json.dumps(self._worker_config(worker)).encode() + b"\n")
        with contextlib.suppress(OSError):
            await process.stdin.drain()
        # stdin stays open: its end of file tells the worker that the primary is gone.
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if not line.startswith(READY):
            logger.error("worker %d (pid %d) did not start", worker.index, process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return False
        worker.node = line[len(READY) :].strip().decode()
        logger.info("worker %d is node %s (pid %d)", worker.index, worker.node, process.pid)
        return True

    async def _keep(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it exits, until the supervisor stops."""
        delay = RESTART_MIN
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - worker.started >= STABLE_AFTER:
                delay = RESTART_MIN
            logger.warning(
                "worker %d (node %s, pid %d) exited with %s; restarting in %.1f s",
                worker.index,
                worker.node,
                process.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            delay = min(delay * 2, RESTART_MAX)
            if not await self._spawn(worker) and worker.process is not None:
                await worker.process.wait()

    async def _stop_all(self) -> None:
        self._stopping.set()
        for task in self._keepers:
            task.cancel()
        running = [
            w.process
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for process in running:
                if process.returncode is None:
                    logger.warning("worker (pid %d) did not stop in time; killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)
        for process in running:
            if process.stdin is not None:
                process.stdin.close()
        if self._relay is not None:
            await self._relay.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if self._socket is not None:
            self._socket.close()


def supervise(settings: Settings, on_listening: Callable[[int], None] | None = None) -> int:
    """Run ``settings.workers`` workers until SIGTERM; the exit status."""
    install_event_loop()
    return asyncio.run(Supervisor(settings).run(on_listening))


# Idempotency keys shared by the workers: one MemoryIdempotencyStore in the primary,
# asked through the relay (without Redis, a retry on another worker is still a replay).


def _claim_json(claim: Claim) -> dict[str, Any]:
    response = claim.response
    return {
        "state": claim.state,
        "token": claim.token,
        "fingerprint": claim.fingerprint,
        "response": None if response is None else dataclasses.asdict(response),
    }


def _claim(value: dict[str, Any]) -> Claim:
    response = value["response"]
    return Claim(
        value["state"],
        None if response is None else StoredResponse(**response),
        token=value["token"],
        fingerprint=value["fingerprint"],
    )


def relay_log(settings: Settings) -> RelayLog | None:
    """The recovery log the primary keeps for the workers (with ``--recovery-window``)."""
    if settings.recovery_window <= 0:
        return None
    return RelayLog(
        window=settings.recovery_window,
        log_age=settings.recovery_log_age,
        max_log=settings.recovery_max_messages,
    )


def primary_service(
    store: MemoryIdempotencyStore, counts: PresenceCounts, log: RelayLog | None = None
) -> Service:
    """The primary's side: a worker's request (JSON) applied to ``store`` (idempotency
    keys), ``counts`` (presence) or ``log`` (recovery)."""

    async def serve(request: bytes) -> bytes:
        call = json.loads(request)
        op = call["op"]
        if op == "rlog":
            if log is None:
                raise ValueError("a recovery log call, and recovery is off")
            return json.dumps(log.serve(call)).encode()
        if op == "presence":
            return json.dumps({"transitions": _presence_call(counts, call)}).encode()
        key = call["key"]
        if op == "claim":
            return json.dumps(_claim_json(await store.claim(key, call["fingerprint"]))).encode()
        claim = _claim(call["claim"])
        if op == "complete":
            await store.complete(key, claim, StoredResponse(**call["response"]))
        else:
            await store.release(key, claim)
        return b"{}"

    return serve


def _presence_call(counts: PresenceCounts, call: dict[str, Any]) -> list[Any]:
    """A worker's presence changes (``leave``: it is stopping, drop all of its counts)
    applied; the transitions it is to report, orphans of gone workers first."""
    node = call["node"]
    changes = [(str(ns), str(user), int(delta)) for ns, user, delta in call["changes"]]
    out, counts.orphans = counts.orphans, []
    out += counts.apply(node, changes)
    if call.get("leave"):
        out += counts.drop(node)
    return [list(t) for t in out]


class SharedPresenceTracker:
    """A worker's side: a :class:`~siogate.presence_tracker.PresenceTracker` whose
    counts are kept in the primary (``serve --workers`` without Redis). Changes go in
    batches, in order; with none to send it asks every :data:`PRESENCE_POLL` seconds,
    so that a dead worker's users are reported offline by a live one."""

    def __init__(self, broker: LocalBroker) -> None:
        self._broker = broker
        self._changes: list[tuple[str, str, int]] = []
        self._wake = asyncio.Event()
        self._notify: Notify | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, notify: Notify) -> None:
        self._notify = notify
        self._task = asyncio.create_task(self._forever())

    def add(self, namespace: Namespace, user: UserId) -> None:
        self._changes.append((namespace, user, 1))
        self._wake.set()

    def remove(self, namespace: Namespace, user: UserId) -> None:
        self._changes.append((namespace, user, -1))
        self._wake.set()

    async def _forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRESENCE_POLL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._send(leave=False)
            except BrokerUnavailable:
                await asyncio.sleep(PRESENCE_POLL)  # kept; sent with the next batch
            except Exception:
                logger.exception("presence: the primary's answer could not be used")
                await asyncio.sleep(PRESENCE_POLL)

    async def _send(self, *, leave: bool) -> None:
        changes, self._changes = self._changes, []
        call: dict[str, Any] = {"op": "presence", "node": self._broker.node_id}
        call.update(changes=changes, leave=leave)
        try:
            reply = json.loads(await self._broker.call(json.dumps(call).encode()))
        except BrokerUnavailable:
            self._changes[:0] = changes
            raise
        for kind, namespace, user in reply["transitions"]:
            if self._notify is not None:
                self._notify(kind, Namespace(namespace), UserId(user))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(BrokerUnavailable):
            await self._send(leave=True)
        self._notify = None


_tracker: type[PresenceTracker] = SharedPresenceTracker


class SharedIdempotencyStore:
    """A worker's side: an :class:`~siogate.idempotency.IdempotencyStore` in the primary."""

    def __init__(self, broker: LocalBroker) -> None:
        self._broker = broker

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = json.loads(
                await self._broker.call(json.dumps(request).encode())
            )
        except BrokerUnavailable as exc:
            raise StoreUnavailable(str(exc)) from None
        return reply

    async def claim(self, key: str, fingerprint: str) -> Claim:
        return _claim(await self._call({"op": "claim", "key": key, "fingerprint": fingerprint}))

    async def complete(self, key: str, claim: Claim, response: StoredResponse) -> None:
        request = {"op": "complete", "key": key, "claim": _claim_json(claim),
                   "response": dataclasses.asdict(response)}  # fmt: skip
        await self._call(request)

    async def release(self, key: str, claim: Claim) -> None:
        await self._call({"op": "release", "key": key, "claim": _claim_json(claim)})

    async def apply_once(
        self,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        publish: Publish,
        guarded: GuardedPublish | None,
    ) -> Claim:
        # Claimed in the primary, published by this worker: in steps (a repeat
        # meanwhile is in_progress).
        return await apply_in_steps(self, key, fingerprint, response, publish)

    async def close(self) -> None:
        pass


_: type[IdempotencyStore] = SharedIdempotencyStore


# The worker side


def _read_config() -> dict[str, Any]:
    """The first line of stdin (read byte-wise: stdin stays the primary's lifeline)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise SystemExit("siogate worker: no settings on stdin")
        data += chunk
    config: dict[str, Any] = json.loads(data)
    return config


def _settings(values: dict[str, Any]) -> Settings:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return Settings(**fields)


def _advertised(settings: Settings, port: int) -> str:
    """The URL of a worker's private listener on ``port`` as the other nodes reach it."""
    if settings.advertise_url is None:
        return settings.local_url(port)
    # With Redis, the host of --advertise-url and the worker's own port.
    parts = urlsplit(settings.advertise_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


async def _serve_worker(config: dict[str, Any]) -> None:
    settings = _settings(config["settings"])
    relay: str | None = config["relay"]
    # Only the other workers reach the private listener; with Redis, other hosts may.
    private_host = "127.0.0.1" if relay is not None else settings.host
    private_settings = dataclasses.replace(settings, host=private_host, port=0)
    private = _bind(private_settings, listen=True, reuse_port=False)
    port = private.getsockname()[1]
    url = f"http://127.0.0.1:{port}" if relay is not None else _advertised(settings, port)
    broker: Broker
    idempotency: IdempotencyStore | None = None
    presence: PresenceTracker | None = None
    if relay is not None:
        if settings.recovery_window > 0:
            # Every command through the primary's log (siogate.broker.relay_log).
            broker = RecoveringLocalBroker(
                relay,
                advertise_url=url,
                window=settings.recovery_window,
                max_missed=settings.recovery_max_missed,
            )
        else:
            broker = LocalBroker(relay, advertise_url=url)
        idempotency = SharedIdempotencyStore(broker)
        if settings.presence_webhooks:
            presence = SharedPresenceTracker(broker)
    else:
        # A node of the cluster like any other (with recovery, through the log).
        broker = redis_broker(settings, url)
    gateway = build(settings, broker=broker, idempotency=idempotency, presence=presence)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def lifeline() -> None:
        try:
            alive = bool(os.read(0, 4096))
        except OSError:
            alive = False
        if not alive:
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, lifeline)
    if config["fd"] is not None:
        shared = socket.socket(fileno=config["fd"])
        await gateway.start(sock=shared, extra=[private])
    else:
        await gateway.start(reuse_port=True, extra=[private])
    os.write(1, READY + broker.node_id.encode() + b"\n")
    # From now on, whatever handlers print goes to the log, not to the primary's pipe.
    os.dup2(2, 1)
    logger.info("worker %d serving as node %s, private %s", config["index"], broker.node_id, url)
    waits = [asyncio.ensure_future(stop.wait())]
    if isinstance(broker, LocalBroker):
        # Cut off from the others, a worker would serve a part of the sockets as if it
        # were the whole: it stops, and the primary starts a fresh one.
        waits.append(asyncio.ensure_future(broker.lost.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await gateway.stop()
    if not stop.is_set():
        logger.error("lost the connection to the primary's relay; exiting to be restarted")
        raise SystemExit(1)


def worker_main() -> None:
    config = _read_config()
    level = str(config["settings"].get("log_level", "info")).upper()
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s %(name)s [worker {config['index']}]: %(message)s",
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    install_event_loop()
    asyncio.run(_serve_worker(config))


if __name__ == "__main__":
    worker_main()
