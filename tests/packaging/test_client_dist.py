"""``siogate-client``: the Python SDK as a light distribution (``clients/python``).

Its wheel is built into a tmp dir and installed in a fresh venv, which then holds httpx
and its own dependencies and none of the gateway's. From that venv, ``siogate.client``
mints a token that a real gateway accepts, emits (sync and asyncio) to a python-socketio
client connected with that token, and verifies a webhook signed by the gateway's code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from dists import ROOT, Venv, build, clean_env, make_venv, run

from conftest import API_KEY, JWT_SECRET, Gateway
from siogate import __version__
from siogate.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers

# Fresh venvs fetch from the index: a cold cache can take minutes, not the default 120 s.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

# The gateway's runtime dependencies: a backend that only publishes must not get them.
SERVER_ONLY = {"httptools", "uvloop", "websockets", "redis", "hiredis", "click", "pyjwt", "bcrypt"}

# What siogate.client imports besides itself, all stdlib-only.
EXPECTED_MODULES = {
    "_version.py",
    "errors.py",
    "types.py",
    "py.typed",
    "auth/minting.py",
    "webhooks/signing.py",
}

SDK_SCRIPT = """
import asyncio, json, sys
from siogate.client import AsyncClient, Client, WebhookVerificationError, verify_webhook

url, key, secret, room, body, signature, timestamp = sys.argv[1:]
client = Client(url, key, jwt_secret=secret)
if room == "-":
    print(client.token("alice", rooms=["packaged"]))
    try:
        verify_webhook(body.encode(), signature, timestamp, "webhook-secret")
        print("verified")
        verify_webhook(body.encode() + b" ", signature, timestamp, "webhook-secret")
    except WebhookVerificationError as exc:
        print(exc.code)
    sys.exit()
client.emit("from-sync", data={"n": 1}, rooms=[room])

async def main():
    async with AsyncClient(url, key) as aclient:
        await aclient.emit("from-async", data={"n": 2}, rooms=[room])

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(ROOT / "clients" / "python", tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    venv = make_venv(tmp_path_factory.mktemp("venv-client") / "venv")
    venv.install(dists["wheel"])
    yield venv


def test_dists_are_the_sdk_and_its_version(dists: dict[str, Path]) -> None:
    wheel, sdist = dists["wheel"], dists["sdist"]
    assert wheel.name == f"siogate_client-{__version__}-py3-none-any.whl"
    assert sdist.name == f"siogate_client-{__version__}.tar.gz"
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every SDK module, from the one source tree; no package __init__ for siogate itself.
    sdk = {f"siogate/client/{p.name}" for p in (ROOT / "src/siogate/client").glob("*.py")}
    assert sdk <= names
    assert "siogate/__init__.py" not in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert f"siogate_client-{__version__}.dist-info/licenses/LICENSE" in names
    # The sdist holds real files (the wheel above was built from it), none of the gateway.
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        license_text = tar.extractfile(members["LICENSE"]).read()  # type: ignore[union-attr]
    assert all(m.isfile() for m in members.values())
    assert f"src/{sorted(sdk)[0]}" in members
    assert not [
        n
        for n in members
        if n.startswith("src/")
        and "siogate/client" not in n
        and n not in {f"src/siogate/{f}" for f in EXPECTED_MODULES}
    ]
    assert license_text == (ROOT / "LICENSE").read_bytes()
    # Each package directory has its own copy of the repository's LICENSE, kept equal.
    for package_dir in ("clients/python", "clients/js"):
        assert (ROOT / package_dir / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    out = run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
    assert out.count("PASSED") == 2, out


def test_installs_httpx_and_nothing_of_the_gateway(venv: Venv) -> None:
    installed = venv.distributions()
    assert {"siogate-client", "httpx"} <= installed
    assert not installed & (SERVER_ONLY | {"siogate"})
    # The server side is not there to import, and the SDK does not need it.
    code = (
        "import importlib.util as u, siogate.client as c;"
        "print(c.__file__); print(u.find_spec('siogate.cli'), u.find_spec('jwt'))"
    )
    where, missing = run([venv.python, "-c", code], cwd=venv.path).splitlines()
    assert where.startswith(str(venv.path))
    assert missing == "None None"


def test_types_reach_a_type_checker(venv: Venv, tmp_path: Path) -> None:
    # siogate is a namespace package in this venv; its py.typed must still be found, so
    # mypy (from the test venv, pointed at this one) reports a wrong argument type and not
    # a missing marker or stub.
    (tmp_path / "use.py").write_text(
        "from siogate.client import Client\nClient('http://127.0.0.1:1', 'key').emit(1)\n"
    )
    mypy = Path(sys.executable).parent / "mypy"
    checked = subprocess.run(
        [mypy, "--strict", "--no-incremental", "--python-executable", venv.python, "use.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert 'incompatible type "int"; expected "str"' in checked.stdout, checked.stdout
    assert "Found 1 error" in checked.stdout, checked.stdout


async def test_sdk_from_the_light_install_reaches_a_socket(venv: Venv, start_gateway: Any) -> None:
    gw: Gateway = start_gateway()
    body = json.dumps({"type": "event", "event": "x"})
    headers = signed_headers(body.encode(), "webhook-secret", time.time())

    def sdk(room: str, body: str = "-", sig: str = "-", ts: str = "-") -> list[str]:
        args = [gw.url, API_KEY, JWT_SECRET, room, body, sig, ts]
        return run([venv.python, "-c", SDK_SCRIPT, *args], cwd=venv.path).splitlines()

    token, verified, refused = await asyncio.to_thread(
        sdk, "-", body, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]
    )
    # The gateway's signature verifies; the same with one byte more in the body does not.
    assert (verified, refused) == ("verified", "signature_mismatch")

    received: list[tuple[str, Any]] = []
    both = asyncio.Event()
    sio = socketio.AsyncClient(reconnection=False)

    @sio.on("*")
    async def on_any(event: str, data: Any) -> None:
        received.append((event, data))
        if len(received) == 2:
            both.set()

    await sio.connect(gw.url, auth={"token": token}, transports=["websocket"])
    try:
        # The token's rooms claim put the socket in "packaged": the minted token is right.
        await asyncio.to_thread(sdk, "packaged")
        await asyncio.wait_for(both.wait(), 10)
    finally:
        await sio.disconnect()
    assert received == [("from-sync", {"n": 1}), ("from-async", {"n": 2})]
