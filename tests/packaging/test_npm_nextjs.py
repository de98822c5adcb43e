"""The TypeScript SDK's ``npm pack`` tarball in a fresh Next.js app, built with ``next build``.

1. ``npm pack`` runs in a copy of ``clients/js`` (its ``prepack`` builds ``dist/`` there,
   never in the checkout), as a publisher would.
2. The Next.js example's ``app/`` and ``lib/`` go into a tmp dir with a plain
   ``next.config.ts`` (none of the example's monorepo settings) and a ``package.json``
   naming next, react, react-dom, socket.io-client and the type packages at the exact
   versions of the example's lock; ``npm install <tarball>`` adds the SDK from the tarball
   and fetches the rest from the registry.
3. ``next build`` compiles and type-checks the route handlers that import ``siogate``, and
   ``next start`` serves ``/api/token``, whose token (signed by the installed SDK) PyJWT
   accepts.

About 40 s on a shared 2-core machine with a warm npm cache (16 s install, 14 s build),
so it runs with the other ``packaging`` tests rather than under a marker of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import jwt
import pytest
from dists import ROOT, clean_env

from conftest import JWT_SECRET, free_port
from siogate import __version__

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

SDK = ROOT / "clients" / "js"
EXAMPLE = ROOT / "examples" / "nextjs"
# The example's direct dependencies, pinned to the versions its lock resolved.
APP_DEPENDENCIES = ["next", "react", "react-dom", "socket.io-client"]
APP_DEV_DEPENDENCIES = ["typescript", "@types/node", "@types/react", "@types/react-dom"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed to pack the TypeScript SDK (scripts/test installs it)")
    return path


def npm_env() -> dict[str, str]:
    return clean_env(NEXT_TELEMETRY_DISABLED="1", npm_config_update_notifier="false")


def run(cmd: list[str], cwd: Path, timeout: float) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=npm_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout}", False)
    return proc.stdout


def pack(tmp: Path) -> Path:
    if not (SDK / "node_modules" / "typescript").is_dir():
        run([tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], SDK, 300)
    copy = tmp / "sdk"
    copy.mkdir()
    for name in ("src", "scripts"):
        shutil.copytree(SDK / name, copy / name)
    for path in [*SDK.glob("*.json"), SDK / "README.md", SDK / "LICENSE"]:
        shutil.copy2(path, copy / path.name)
    (copy / "node_modules").symlink_to(SDK / "node_modules")
    run([tool("npm"), "pack", "--pack-destination", str(tmp)], copy, 300)
    (tarball,) = tmp.glob("siogate-*.tgz")
    return tarball


def pinned_versions() -> dict[str, str]:
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())["packages"]
    return {
        name: lock[f"node_modules/{name}"]["version"]
        for name in APP_DEPENDENCIES + APP_DEV_DEPENDENCIES
    }


def make_app(tmp: Path) -> Path:
    app = tmp / "app"
    app.mkdir()
    for name in ("app", "lib"):
        shutil.copytree(EXAMPLE / name, app / name)
    shutil.copy2(EXAMPLE / "tsconfig.json", app / "tsconfig.json")
    (app / "next.config.ts").write_text(
        'import type { NextConfig } from "next";\n\n'
        "const nextConfig: NextConfig = { poweredByHeader: false };\n\n"
        "export default nextConfig;\n"
    )
    versions = pinned_versions()
    package = {
        "name": "fresh-next-app",
        "version": "0.0.0",
        "private": True,
        "scripts": {"build": "next build", "start": "next start"},
        "dependencies": {name: versions[name] for name in APP_DEPENDENCIES},
        "devDependencies": {name: versions[name] for name in APP_DEV_DEPENDENCIES},
    }
    (app / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    return app


def test_packed_sdk_builds_and_runs_in_a_fresh_nextjs_app(tmp_path: Path) -> None:
    tarball = pack(tmp_path)
    assert tarball.name == f"siogate-{__version__}.tgz"
    with tarfile.open(tarball) as tar:
        packed = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        license_text = tar.extractfile("package/LICENSE").read()  # type: ignore[union-attr]
        names = tar.getnames()
    assert packed["version"] == __version__
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert "package/dist/esm/index.js" in names and "package/dist/cjs/index.js" in names

    app = make_app(tmp_path)
    npm = tool("npm")
    started = time.monotonic()
    run(
        [
            npm,
            "install",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            str(tarball),
        ],
        app,
        600,
    )
    installed = app / "node_modules" / "siogate"
    assert not installed.is_symlink(), "the SDK must come from the tarball, not a link"
    assert json.loads((installed / "package.json").read_text())["version"] == __version__
    manifest = json.loads((app / "package.json").read_text())
    assert manifest["dependencies"]["siogate"].endswith(tarball.name)
    install_s = time.monotonic() - started

    started = time.monotonic()
    output = run([npm, "run", "build"], app, 600)
    build_s = time.monotonic() - started
    assert (app / ".next" / "BUILD_ID").is_file(), output
    for route in ("api/token", "api/publish", "api/siogate/webhook"):
        assert f"/{route}" in output, f"{route} missing from the build:\n{output}"

    port = free_port()
    env = npm_env() | {
        "SIOGATE_JWT_SECRET": JWT_SECRET,
        "SIOGATE_URL": "http://127.0.0.1:9",
        "SIOGATE_API_KEY": "unused-here-0123456789abcdef0123456789",
        "SIOGATE_WEBHOOK_SECRET": "unused-here-0123456789abcdef0123456789",
    }
    next_bin = app / "node_modules" / "next" / "dist" / "bin" / "next"
    log_path = tmp_path / "next-start.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["node", str(next_bin), "start", "-H", "127.0.0.1", "-p", str(port)],
            cwd=app,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and answer is None and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/token", timeout=10)
            except httpx.TransportError:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 200, log_path.read_text()
        claims = jwt.decode(answer.json()["token"], JWT_SECRET, algorithms=["HS256"])
        assert claims["rooms"] == ["demo"] and claims["sub"].startswith("guest-")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    print(f"npm install {install_s:.0f}s, next build {build_s:.0f}s")
