"""The container files: Dockerfile, its healthcheck script, compose.yaml, deploy/haproxy.cfg.

No Docker engine runs on the test machines, so the image itself is not built here
(docs/deployment.md says how). What can be proved without one is: the healthcheck command
that the Dockerfile declares, run as declared (with the image's environment) against a real
gateway; the build stage's RUN lines on this machine's Python (the lock is complete);
the Dockerfile's shape (slim base, locked install, non-root user); compose.yaml
through ``docker compose config`` or ``docker-compose config`` where either exists; and the
HAProxy file through ``haproxy -c``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dists import ROOT, clean_env

# Fresh venvs fetch from the index: a cold cache can take minutes, not the default 120 s.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every ``name`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.MULTILINE)]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def healthcheck_command(port: int | None, *extra: str) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK CMD, with the image's environment, on this machine."""
    (healthcheck,) = instructions("HEALTHCHECK")
    cmd = json.loads(healthcheck.split(" CMD ", 1)[1])
    copied = {a.split()[-1]: a.split()[0] for a in instructions("COPY") if len(a.split()) == 2}
    script = copied[cmd[1]]
    assert cmd[0] == "python" and script == "deploy/healthcheck.py", cmd
    env = clean_env(**{k: v for k, v in image_env().items() if k.startswith("SIOGATE_")})
    if port is not None:
        env["SIOGATE_PORT"] = str(port)  # the test gateway's port, in place of 8000
    return subprocess.run(
        [sys.executable, str(ROOT / script), *cmd[2:], *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_healthcheck_follows_the_gateway(start_gateway: Any) -> None:
    gw = start_gateway()
    # The image listens on 0.0.0.0; the check asks 127.0.0.1 on SIOGATE_PORT.
    assert image_env()["SIOGATE_HOST"] == "0.0.0.0"
    ok = healthcheck_command(gw.port)
    assert ok.returncode == 0, ok.stderr
    # Any answer but 200 is unhealthy (here a 401 from an API route without the key).
    refused = healthcheck_command(None, f"{gw.url}/v1/rooms")
    assert refused.returncode == 1 and "answered 401" in refused.stderr
    gw.stop()
    down = healthcheck_command(gw.port)
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_healthcheck_gives_up_on_a_server_that_never_answers() -> None:
    # A listening socket that is never read: the connection opens, no answer comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        hung = healthcheck_command(silent.getsockname()[1])
        took = time.monotonic() - started
    assert hung.returncode == 1, hung.stderr
    timeout = float(re.search(r"--timeout=(\d+)s", instructions("HEALTHCHECK")[0])[1])  # type: ignore[index]
    assert took < timeout, f"the check took {took:.1f}s, Docker gives it {timeout}s"


def test_dockerfile_is_slim_locked_and_unprivileged() -> None:
    bases = [args.split()[0] for args in instructions("FROM")]
    assert bases and all(b == "${PYTHON_IMAGE}" for b in bases)
    (python_image,) = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", python_image)
    runs = " ".join(instructions("RUN"))
    assert "-r requirements/serve.lock" in runs and "pip check" in runs
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert instructions("CMD") == ['["siogate", "serve"]']
    # Every file the build copies from the context gets past .dockerignore.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for args in instructions("COPY"):
        if args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_dockerfile_build_stage_installs_from_the_lock(tmp_path: Path) -> None:
    # The build stage's RUN lines, in order, on a copy of what its COPY lines take from the
    # context: the lock must hold every dependency (they install with --no-deps, then pip
    # check), and the venv they make must run the gateway's command. Only the base image
    # differs: this machine's CPython instead of python:3.11-slim.
    stages = re.split(r"^FROM .*$", re.sub(r"\\\n\s*", " ", DOCKERFILE), flags=re.MULTILINE)
    build_stage = stages[1]
    context = tmp_path / "src"
    venv = tmp_path / "opt-siogate"
    for line in build_stage.splitlines():
        words = line.split()
        if not words or words[0] not in ("COPY", "RUN"):
            continue
        if words[0] == "COPY":
            for source in words[1:-1]:
                target = context / source
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / source, target)
            continue
        command = line.split(None, 1)[1].replace("/opt/siogate", str(venv))
        command = re.sub(r"^python ", f"{sys.executable} ", command)
        context.mkdir(exist_ok=True)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=context,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    version = subprocess.run(
        [venv / "bin" / "siogate", "--version"], capture_output=True, text=True, env=clean_env()
    )
    assert version.returncode == 0 and "siogate, version" in version.stdout, version.stderr


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_valid() -> None:
    compose = compose_command()
    if compose is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed: compose.yaml not "
            "checked (scripts/test installs Debian's docker-compose when run as root)"
        )
    cmd = [*compose, "-f", str(ROOT / "compose.yaml"), "config", "-q"]
    creds = {"SIOGATE_API_KEY": "k" * 40, "SIOGATE_JWT_SECRET": "s" * 40}
    valid = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(**creds))
    assert valid.returncode == 0, valid.stderr
    # Without credentials it refuses to start a cluster at all, and says which is missing.
    missing = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    assert missing.returncode != 0 and "SIOGATE_API_KEY" in missing.stderr


def test_haproxy_config_is_valid() -> None:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        pytest.skip("haproxy is not installed (scripts/test installs Debian's haproxy)")
    config = ROOT / "deploy" / "haproxy.cfg"
    assert (
        "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg"
        in (ROOT / "compose.yaml").read_text()
    )
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # Both compose nodes are behind it, checked on /healthz.
    text = config.read_text()
    assert "server node1 node1:8000" in text and "server node2 node2:8000" in text
    assert "option httpchk GET /healthz" in text
