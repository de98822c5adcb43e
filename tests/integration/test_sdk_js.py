"""The TypeScript SDK (``clients/js``) against a real gateway.

The SDK's own tests are Node's test runner files in ``clients/js/test``: they
drive real ``socket.io-client`` sockets and a ``node:http`` webhook receiver.
This module starts the gateway they need, runs ``node --test`` with its URL,
key and secrets in the environment, and fails with Node's output if any fails.
A second test packs the package and installs the tarball the way a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, free_port

pytestmark = pytest.mark.node

SDK_DIR = ROOT / "clients" / "js"
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"

# Run by node -e against the installed tarball, with the JWT secret as a JSON string.
SIGN_AND_PRINT = (
    "const token = await signToken({sub: 'packed', rooms: ['r'], ttl: 60}, %s); console.log(token);"
)

# Type-checked as an ES module (.mts) and as CommonJS (.cts) against the installed tarball.
TYPED_CONSUMER = """\
import {
  Siogate, SiogateError, signToken, verifyWebhook, WebhookVerificationError,
  type SocketInfo, type WebhookErrorCode,
} from "siogate";

const s: Siogate = new Siogate({ url: "http://127.0.0.1:8000", apiKey: "k", timeout: 5000 });
export async function use(): Promise<void> {
  await s.emit("news", { a: 1 }, { rooms: ["news"], except: ["user:bob"] });
  const maybe: string[] | undefined = undefined;
  await s.emit("news", 1, { rooms: maybe, timeout: undefined });
  await s.emit({ event: "multi", args: [1, 2], namespace: "/" });
  await s.join({ room: "r", sockets: ["id"] });
  const count: number = (await s.batch([{ event: "a" }])).count;
  const names: string[] = (await s.rooms()).rooms.map((r) => r.name);
  const users: (string | null)[] = (await s.sockets("r")).sockets.map((x: SocketInfo) => x.user);
  const token: string = await signToken({ sub: "a", rooms: ["r"], ttl: 60 }, "k");
  const ok: void = await verifyWebhook(new Uint8Array(), null, null, "k", { tolerance: 60 });
  const why: WebhookErrorCode | undefined = await verifyWebhook("{}", "x", "1", "k").then(
    () => undefined,
    (e: unknown) => (e instanceof WebhookVerificationError ? e.code : undefined),
  );
  console.log(count, names, users, token, ok, why);
  // @ts-expect-error: join takes sockets or rooms, not both
  await s.join({ room: "r", sockets: ["id"], rooms: ["x"] });
}
export const isApiError = (e: unknown): boolean => e instanceof SiogateError && e.status > 0;
"""


def npm() -> str:
    path = shutil.which("npm")
    if path is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the TypeScript SDK tests")
    return path


def run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` and return its output; fail the test with that output if it fails."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout}", False)
    return proc.stdout


@pytest.fixture(scope="module")
def sdk() -> Path:
    """``clients/js`` with its dev dependencies and a build no older than its sources.

    ``scripts/test`` installs and builds before pytest runs; this only catches
    up after a source edit, so a stale ``dist/`` is never what gets tested.
    """
    if not (SDK_DIR / "node_modules" / "typescript").is_dir():
        run([npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"], SDK_DIR, 300)
    built = SDK_DIR / "dist" / "cjs" / "package.json"
    sources = [*SDK_DIR.glob("src/*.ts"), *SDK_DIR.glob("tsconfig*.json"), SDK_DIR / "package.json"]
    if not built.exists() or max(p.stat().st_mtime for p in sources) > built.stat().st_mtime:
        run([npm(), "run", "build"], SDK_DIR, 300)
    return SDK_DIR


def test_node_suite(sdk: Path, start_gateway: Callable[..., Gateway]) -> None:
    webhook_port = free_port()
    gw = start_gateway(
        "--namespace",
        "/",
        "--namespace",
        "/admin",
        "--webhook-url",
        f"http://127.0.0.1:{webhook_port}/siogate",
        "--webhook-secret",
        WEBHOOK_SECRET,
        # history.test.mjs
        "--history-size",
        "100",
    )
    env = {
        "SIOGATE_URL": gw.url,
        "SIOGATE_API_KEY": API_KEY,
        "SIOGATE_JWT_SECRET": JWT_SECRET,
        "SIOGATE_WEBHOOK_PORT": str(webhook_port),
        "SIOGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    files = sorted(str(p.relative_to(sdk)) for p in sdk.glob("test/*.test.mjs"))
    assert files, "no clients/js/test/*.test.mjs"
    output = run(["node", "--test", "--test-reporter=spec", *files], sdk, 110, env)
    # A runner that found no test files exits 0 as well.
    passed = re.search(r"^ℹ pass (\d+)$", output, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) > 0, output
    assert re.search(r"^ℹ fail 0$", output, re.MULTILINE), output


def test_packed_tarball_installs_and_loads(sdk: Path, tmp_path: Path) -> None:
    # 1. The tarball, from the build the fixture checked (--ignore-scripts skips
    #    prepack, which would only build the same thing again).
    run([npm(), "pack", "--ignore-scripts", "--pack-destination", str(tmp_path)], sdk, 120)
    [tarball] = tmp_path.glob("siogate-*.tgz")
    with tarfile.open(tarball) as tar:
        names = sorted(tar.getnames())
        code = {}
        for name in names:
            member = tar.extractfile(name)
            if member is not None and name.endswith(".js"):
                code[name] = member.read().decode()
    assert "package/dist/esm/index.js" in names
    assert "package/dist/cjs/index.js" in names
    assert "package/dist/cjs/package.json" in names
    assert "package/dist/esm/index.d.ts" in names
    assert not [
        n for n in names if n.startswith(("package/src/", "package/test/", "package/node_modules/"))
    ]
    # Edge and Workers bundles must not meet a static import of a Node module or
    # of any package: every literal specifier in the built code is relative.
    specifiers = {
        (name, spec)
        for name, text in code.items()
        for spec in re.findall(r"""(?:from |import\(|require\()\s*["']([^"']+)["']""", text)
    }
    assert specifiers, "no imports found: the pattern is broken"
    assert {(name, spec) for name, spec in specifiers if not spec.startswith("./")} == set()

    # 2. Installed into a fresh project, offline: it has no dependencies to fetch.
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true}\n')
    run([npm(), "install", "--offline", "--no-audit", "--no-fund", str(tarball)], app, 120)
    installed = json.loads((app / "node_modules" / "siogate" / "package.json").read_text())
    assert installed.get("dependencies", {}) == {}

    # 3. import (ESM) and require (CJS) both load it and sign a token PyJWT accepts.
    sign = SIGN_AND_PRINT % json.dumps(JWT_SECRET)
    esm = f"import {{ signToken }} from 'siogate'; {sign}"
    cjs = f"const {{ signToken }} = require('siogate'); (async () => {{ {sign} }})();"
    for args in (["--input-type=module", "-e", esm], ["--input-type=commonjs", "-e", cjs]):
        token = run(["node", *args], app, 30).strip()
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
        assert claims["sub"] == "packed"
        assert claims["rooms"] == ["r"]
        assert claims["exp"] - claims["iat"] == 60

    # 4. Its declarations type-check from ESM and CJS consumers (exports "types").
    consumer = TYPED_CONSUMER
    (app / "esm.mts").write_text(consumer)
    (app / "cjs.cts").write_text(consumer)
    options = {
        "strict": True,
        "exactOptionalPropertyTypes": True,
        "noEmit": True,
        "module": "nodenext",
        "target": "es2022",
        "lib": ["es2022", "dom"],
        "types": [],
    }
    tsconfig = {"compilerOptions": options, "files": ["esm.mts", "cjs.cts"]}
    (app / "tsconfig.json").write_text(json.dumps(tsconfig))
    run(["node", str(sdk / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "."], app, 120)
