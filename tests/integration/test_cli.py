"""The ``siogate`` command line, run as real subprocesses.

Settings are proved on started servers, not by reading the parsed configuration: an API
key is right when the server answers 200 to it and 401 to the others; a ping interval is
what the Engine.IO handshake announces; a namespace allowlist is what ``/v1/emit``
accepts.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import siogate
from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, free_port

SIOGATE = [sys.executable, "-m", "siogate"]
SPEC_FLAGS = [
    "--host",
    "--port",
    "--api-key",
    "--jwt-secret",
    "--allow-anonymous",
    "--webhook-url",
    "--webhook-secret",
    "--cors-origin",
    "--namespace",
    "--max-payload",
    "--ping-interval",
    "--ping-timeout",
    "--handlers",
    "--config",
    "--log-level",
]
# 32+ bytes each, so that PyJWT raises no key-length warning.
TOML_KEY = "toml-api-key-0123456789abcdef0123456789"
ENV_KEY = "env-api-key-0123456789abcdef01234567890"
FLAG_KEY = "flag-api-key-0123456789abcdef0123456789"
SECRET = "cli-jwt-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "cli-webhook-secret-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SIOGATE_* settings leak in from the outside, and dev credentials live in tmp."""
    for name in list(os.environ):
        if name.startswith("SIOGATE_"):
            monkeypatch.delenv(name)
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIOGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def status(gw: Gateway, key: str) -> int:
    """What the API answers to ``key``: 200 (it is the key) or 401."""
    r = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {key}"})
    return r.status_code


def engineio_open(gw: Gateway) -> dict[str, Any]:
    """The Engine.IO OPEN packet of a fresh long-polling session."""
    r = httpx.get(f"{gw.url}/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert r.status_code == 200 and r.text.startswith("0"), r.text
    return json.loads(r.text[1:])


def socketio_connect(gw: Gateway, auth: dict[str, Any] | None, namespace: str = "/") -> str:
    """Open a polling session, send CONNECT with ``auth``; the server's answer packet
    (``40...`` accepted, ``44...`` refused; the namespace prefix is dropped)."""
    sid = engineio_open(gw)["sid"]
    url = f"{gw.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    prefix = "" if namespace == "/" else f"{namespace},"
    connect = "40" + prefix + (json.dumps(auth) if auth is not None else "")
    assert httpx.post(url, content=connect.encode()).text == "ok"
    answer = httpx.get(url, timeout=5).text
    return answer[:2] + answer[2:].removeprefix(prefix)


def cors_origin(gw: Gateway, origin: str) -> str | None:
    """The Access-Control-Allow-Origin a long-polling handshake from ``origin`` gets."""
    r = httpx.get(
        f"{gw.url}/socket.io/",
        params={"EIO": "4", "transport": "polling"},
        headers={"Origin": origin},
    )
    return r.headers.get("access-control-allow-origin")


def flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


# ---------------------------------------------------------------- --version / --help


def test_version() -> None:
    script = Path(sys.executable).parent / "siogate"
    for command in ([str(script), "--version"], [*SIOGATE, "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"siogate, version {siogate.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", siogate.__version__)


def test_serve_help_lists_every_flag_with_its_env_var() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = flat(result.stdout)
    for flag in SPEC_FLAGS:
        assert re.search(rf"(^|\s){re.escape(flag)}(\s|$)", text), f"{flag} missing from help"
        env = "SIOGATE_" + flag.removeprefix("--").replace("-", "_").upper()
        assert env in text, f"{env} missing from help"


def test_top_level_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "emit", "token", "listen"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command


# ---------------------------------------------------------------- env, TOML, precedence


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    return write_toml(
        tmp_path / "siogate.toml",
        f"""
api_key = "{TOML_KEY}"
jwt_secret = "{SECRET}"
ping_interval = 11111
ping_timeout = 9999
namespace = ["/toml"]
cors_origin = ["https://toml.example"]
max_payload = 4096
allow_anonymous = true
""",
    )


def test_toml_file_takes_effect(start_gateway: Callable[..., Gateway], toml_file: Path) -> None:
    gw = start_gateway("--config", str(toml_file), with_defaults=False)
    assert status(gw, TOML_KEY) == 200
    assert status(gw, API_KEY) == 401
    handshake = engineio_open(gw)
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (11111, 9999)
    headers = {"Authorization": f"Bearer {TOML_KEY}"}
    ns = httpx.post(f"{gw.url}/v1/emit", json={"event": "e", "namespace": "/toml"}, headers=headers)
    assert ns.status_code == 200
    other = httpx.post(f"{gw.url}/v1/emit", json={"event": "e", "namespace": "/"}, headers=headers)
    assert other.json()["error"]["code"] == "unknown_namespace"
    big = httpx.post(f"{gw.url}/v1/emit", content=b"x" * 5000, headers=headers)
    assert big.status_code == 413
    assert socketio_connect(gw, None, "/toml").startswith("40{")  # allow_anonymous = true
    assert cors_origin(gw, "https://toml.example") == "https://toml.example"
    assert cors_origin(gw, "https://other.example") is None
    assert socketio_connect(gw, None, "/").startswith("44{")  # not in the allowlist
    assert "DEV MODE" not in gw.log()


def test_toml_siogate_table(start_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "table.toml",
        f'[siogate]\napi_key = "{TOML_KEY}"\njwt_secret = "{SECRET}"\nping_interval = 1234\n',
    )
    gw = start_gateway("--config", str(config), with_defaults=False)
    assert status(gw, TOML_KEY) == 200
    assert engineio_open(gw)["pingInterval"] == 1234


def test_env_vars_take_effect(start_gateway: Callable[..., Gateway]) -> None:
    env = {
        "SIOGATE_API_KEY": ENV_KEY,
        "SIOGATE_JWT_SECRET": SECRET,
        "SIOGATE_NAMESPACE": "/env1, /env2",
        "SIOGATE_PING_INTERVAL": "3333",
        "SIOGATE_MAX_PAYLOAD": "2048",
        "SIOGATE_ALLOW_ANONYMOUS": "true",
        "SIOGATE_CORS_ORIGIN": "https://a.example, https://b.example",
    }
    gw = start_gateway(env=env, with_defaults=False)
    assert status(gw, ENV_KEY) == 200
    headers = {"Authorization": f"Bearer {ENV_KEY}"}
    for ns, expected in [("/env1", 200), ("/env2", 200), ("/", 400), ("/env1,/env2", 400)]:
        r = httpx.post(f"{gw.url}/v1/emit", json={"event": "e", "namespace": ns}, headers=headers)
        assert r.status_code == expected, (ns, r.text)
    assert engineio_open(gw)["pingInterval"] == 3333
    big = httpx.post(f"{gw.url}/v1/emit", content=b"x" * 3000, headers=headers)
    assert big.status_code == 413
    assert socketio_connect(gw, None, "/env2").startswith("40{")
    assert cors_origin(gw, "https://b.example") == "https://b.example"
    assert cors_origin(gw, "https://a.example") == "https://a.example"
    assert cors_origin(gw, "https://a.example, https://b.example") is None
    assert cors_origin(gw, "https://c.example") is None
    token = jwt.encode({"sub": "envy", "exp": int(time.time()) + 60}, SECRET, "HS256")
    assert socketio_connect(gw, {"token": token}, "/env1").startswith("40{")


def test_precedence_flag_over_env_over_toml(
    start_gateway: Callable[..., Gateway], toml_file: Path
) -> None:
    env = {"SIOGATE_API_KEY": ENV_KEY, "SIOGATE_PING_INTERVAL": "22222"}
    # env over TOML
    gw = start_gateway("--config", str(toml_file), env=env, with_defaults=False)
    assert [status(gw, k) for k in (TOML_KEY, ENV_KEY, FLAG_KEY)] == [401, 200, 401]
    assert engineio_open(gw)["pingInterval"] == 22222
    # flag over env over TOML
    gw = start_gateway(
        "--config",
        str(toml_file),
        "--api-key",
        FLAG_KEY,
        "--ping-interval",
        "33333",
        env=env,
        with_defaults=False,
    )
    assert [status(gw, k) for k in (TOML_KEY, ENV_KEY, FLAG_KEY)] == [401, 401, 200]
    handshake = engineio_open(gw)
    assert handshake["pingInterval"] == 33333
    assert handshake["pingTimeout"] == 9999  # TOML, where nothing overrides it


def test_config_file_from_env(start_gateway: Callable[..., Gateway], toml_file: Path) -> None:
    gw = start_gateway(env={"SIOGATE_CONFIG": str(toml_file)}, with_defaults=False)
    assert status(gw, TOML_KEY) == 200


def test_repeated_namespace_flags(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--namespace", "/a", "--namespace", "/b")
    assert gw.emit("e", namespace="/a").status_code == 200
    assert gw.emit("e", namespace="/b").status_code == 200
    assert gw.emit("e", namespace="/c").json()["error"]["code"] == "unknown_namespace"


# ---------------------------------------------------------------- dev mode


def test_dev_mode_banner_and_credentials(
    start_gateway: Callable[..., Gateway], clean_env: Path
) -> None:
    gw = start_gateway(with_defaults=False)
    log = gw.log()
    assert log.count("DEV MODE") == 1, log
    api_key = re.search(r"SIOGATE_API_KEY=(\S+)", log)
    jwt_secret = re.search(r"SIOGATE_JWT_SECRET=(\S+)", log)
    assert api_key and jwt_secret, log
    assert len(api_key.group(1)) >= 32 and len(jwt_secret.group(1)) >= 32
    assert status(gw, api_key.group(1)) == 200
    assert status(gw, "not-the-key") == 401

    saved = clean_env / "siogate" / "dev-credentials.json"
    assert str(saved) in flat(log)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    creds = json.loads(saved.read_text())[gw.url]
    assert creds["api_key"] == api_key.group(1)
    assert creds["jwt_secret"] == jwt_secret.group(1)

    # The other commands pick the saved credentials up: no key on the command line.
    minted = run("token", "--sub", "dev")
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), jwt_secret.group(1), algorithms=["HS256"])
    assert claims["sub"] == "dev"
    assert socketio_connect(gw, {"token": minted.stdout.strip()}).startswith("40{")
    sent = run("emit", "--url", gw.url, "hello", '"dev"')
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"ok": True}


def test_dev_mode_generates_only_what_is_missing(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--api-key", API_KEY, with_defaults=False)
    log = gw.log()
    assert "DEV MODE" in log
    assert "SIOGATE_JWT_SECRET=" in log
    assert "SIOGATE_API_KEY=" not in log and API_KEY not in log
    assert status(gw, API_KEY) == 200


def test_no_banner_with_credentials(gateway: Gateway) -> None:
    assert "DEV MODE" not in gateway.log()
    assert API_KEY not in gateway.log() and JWT_SECRET not in gateway.log()


# ---------------------------------------------------------------- invalid settings


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (["--webhook-url", "http://127.0.0.1:9/hook"], {}, None, "webhook_secret"),
        ([], {"SIOGATE_WEBHOOK_URL": "http://127.0.0.1:9/h"}, None, "webhook_secret"),
        (["--webhook-url", "ftp://x", "--webhook-secret", WEBHOOK_SECRET], {}, None, "webhook_url"),
        ([], {}, "bogus_key = 1\n", "bogus_key"),
        ([], {}, "api_key = \n", "not valid TOML"),
        ([], {}, '[siogate]\nnamespace = ["/ok"]\nport_number = 1\n', "port_number"),
        (["--max-payload", "10"], {}, None, "max_payload"),
        (["--namespace", "chat"], {}, None, "chat"),
        (["--port", "70000"], {}, None, "port"),
        (["--ping-interval", "0"], {}, None, "ping_interval"),
        ([], {"SIOGATE_MAX_PAYLOAD": "eighty"}, None, "eighty"),
        (["--log-level", "loud"], {}, None, "loud"),
        (["--config", "/nonexistent/siogate.toml"], {}, None, "siogate.toml"),
        ([], {"SIOGATE_RECOVERY_WINDOW": "-1"}, None, "recovery_window"),
        (["--history-size", "10", "--workers", "2"], {}, None, "workers above 1 needs recovery"),
        (
            ["--history-size", "10", "--redis-url", "redis://127.0.0.1:9"],
            {},
            None,
            "history_size with redis_url or workers above 1 needs recovery_window",
        ),
        ([], {}, "recovery_max_missed = 0\n", "recovery_max_missed"),
    ],
    ids=[
        "webhook-no-secret",
        "webhook-no-secret-env",
        "webhook-ftp",
        "toml-unknown-key",
        "toml-syntax",
        "toml-table-unknown-key",
        "max-payload-small",
        "namespace-no-slash",
        "port-range",
        "ping-zero",
        "env-not-int",
        "log-level",
        "config-missing",
        "recovery-window-negative-env",
        "history-with-workers",
        "history-with-redis",
        "recovery-max-missed-toml",
    ],
)
def test_invalid_settings_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None, message: str
) -> None:
    if toml is not None:
        args = [*args, "--config", str(write_toml(tmp_path / "bad.toml", toml))]
    port = str(free_port())
    result = run(
        "serve", "--port", port, "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, *args, env=env
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "DEV MODE" not in result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


# ---------------------------------------------------------------- token


def test_token_mints_a_verifiable_jwt() -> None:
    before = int(time.time())
    result = run(
        "token", "--sub", "u", "--room", "r", "--room", "r2", "--ttl", "120", "--jwt-secret", SECRET
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u"
    assert claims["rooms"] == ["r", "r2"]
    assert before + 119 <= claims["exp"] <= int(time.time()) + 120
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET + "x", algorithms=["HS256"])


def test_token_secret_from_env_and_default_ttl() -> None:
    result = run("token", "--sub", "envuser", env={"SIOGATE_JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "envuser"
    assert 3590 <= claims["exp"] - time.time() <= 3600
    assert "rooms" not in claims or claims["rooms"] == []


def test_token_is_accepted_by_the_gateway(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway()
    result = run("token", "--sub", "cli-user", "--room", "cli-room", "--jwt-secret", JWT_SECRET)
    assert result.returncode == 0, result.stderr
    answer = socketio_connect(gw, {"token": result.stdout.strip()})
    assert answer.startswith("40{"), answer
    sockets = gw.api("GET", "/v1/rooms/cli-room/sockets").json()["sockets"]
    assert [s["user"] for s in sockets] == ["cli-user"]


def test_token_without_a_secret_is_a_usage_error() -> None:
    result = run("token", "--sub", "u")
    assert result.returncode == 2
    assert "--jwt-secret" in result.stderr


# ---------------------------------------------------------------- emit + listen


@pytest.fixture
def listener(gateway: Gateway) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``siogate listen`` against ``gateway``; killed at teardown if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*SIOGATE, "listen", "--url", gateway.url, "--jwt-secret", gateway.jwt_secret, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def wait_for_sockets(gw: Gateway, room: str, n: int, proc: subprocess.Popen[str]) -> list[Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        sockets = gw.api("GET", f"/v1/rooms/{room}/sockets").json()["sockets"]
        if len(sockets) >= n:
            return sockets
        time.sleep(0.05)
    raise AssertionError(f"listen did not join {room}")


def cli_emit(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return run("emit", "--url", gw.url, "--api-key", gw.api_key, *args)


def test_emit_and_listen_end_to_end(
    gateway: Gateway, listener: Callable[..., subprocess.Popen[str]]
) -> None:
    proc = listener("--room", "news", "--room", "sports", "--sub", "reader", "--count", "4")
    sockets = wait_for_sockets(gateway, "news", 1, proc)
    assert [s["user"] for s in sockets] == ["reader"]

    sent = [
        ("news", "headline", '{"title": "hello", "n": [1, 2.5, null, true]}'),
        ("elsewhere", "missed", '"not for the listener"'),
        ("sports", "score", '"3-1 😀"'),
        ("news", "bare", None),
        ("user:reader", "direct", "[1, 2]"),
    ]
    for room, event, data in sent:
        result = cli_emit(gateway, "--room", room, event, *([data] if data is not None else []))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"ok": True}
    # The listener's own stream is the sentinel: it exits after --count events.
    cli_emit(gateway, "--room", "news", "fourth", "4")

    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [
        {"event": "headline", "args": [{"title": "hello", "n": [1, 2.5, None, True]}]},
        {"event": "score", "args": ["3-1 😀"]},
        {"event": "bare", "args": []},
        {"event": "direct", "args": [[1, 2]]},
    ]
    assert "connected" in err


def test_emit_except_and_namespace(
    gateway: Gateway, listener: Callable[..., subprocess.Popen[str]]
) -> None:
    proc = listener("--room", "a", "--room", "b", "--count", "1")
    wait_for_sockets(gateway, "a", 1, proc)
    assert cli_emit(gateway, "--room", "a", "--except", "b", "excluded", "1").returncode == 0
    assert cli_emit(gateway, "--namespace", "/other", "other-ns", "1").returncode == 0
    assert cli_emit(gateway, "--room", "a", "arrives", '{"ok": 1}').returncode == 0
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "arrives", "args": [{"ok": 1}]}
    ]


def test_emit_errors(gateway: Gateway) -> None:
    wrong_key = run("emit", "--url", gateway.url, "--api-key", "wrong-key-wrong-key", "e")
    assert wrong_key.returncode not in (0, 2)
    assert "401" in wrong_key.stderr and "unauthorized" in wrong_key.stderr

    reserved = cli_emit(gateway, "disconnect")
    assert reserved.returncode not in (0, 2) and "reserved_event" in reserved.stderr

    bad_json = cli_emit(gateway, "e", "{not json")
    assert bad_json.returncode == 2 and "JSON" in bad_json.stderr

    down = run("emit", "--url", f"http://127.0.0.1:{free_port()}", "--api-key", API_KEY, "e")
    assert down.returncode not in (0, 2) and "cannot reach" in down.stderr
    assert "Traceback" not in wrong_key.stderr + reserved.stderr + down.stderr


def test_listen_with_a_wrong_secret_fails(gateway: Gateway) -> None:
    result = run("listen", "--url", gateway.url, "--jwt-secret", SECRET, "--count", "1", timeout=10)
    assert result.returncode == 1
    assert "refused" in result.stderr and "invalid token" in result.stderr


# ---------------------------------------------------------------- handshake token checks


def test_issuer_audience_and_leeway_settings(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(
        "--jwt-issuer", "https://app.test", "--jwt-audience", "siogate", "--jwt-leeway", "30"
    )
    now = int(time.time())

    def answer(**claims: Any) -> str:
        token = jwt.encode({"sub": "u", "exp": now + 60, **claims}, JWT_SECRET, "HS256")
        return socketio_connect(gw, {"token": token})

    assert answer(iss="https://app.test", aud="siogate").startswith("40{")
    assert answer(iss="https://app.test", aud=["billing", "siogate"]).startswith("40{")
    assert "token issuer not accepted" in answer(aud="siogate")
    assert "token issuer not accepted" in answer(iss="https://evil.test", aud="siogate")
    assert "token audience not accepted" in answer(iss="https://app.test")
    assert "token audience not accepted" in answer(iss="https://app.test", aud="billing")
    # Expired 10 s ago, within the 30 s leeway.
    assert answer(iss="https://app.test", aud="siogate", exp=now - 10).startswith("40{")
    assert "token expired" in answer(iss="https://app.test", aud="siogate", exp=now - 40)

    # `siogate token` mints what this gateway accepts.
    minted = run(
        "token",
        "--sub",
        "u",
        "--jwt-secret",
        JWT_SECRET,
        env={"SIOGATE_JWT_ISSUER": "https://app.test", "SIOGATE_JWT_AUDIENCE": "siogate"},
    )
    assert minted.returncode == 0, minted.stderr
    assert socketio_connect(gw, {"token": minted.stdout.strip()}).startswith("40{")


def test_without_an_audience_setting_tokens_naming_one_are_refused(gateway: Gateway) -> None:
    token = gateway.token(aud="siogate")
    assert "token audience not accepted" in socketio_connect(gateway, {"token": token})


def test_namespaces_claim_scopes_the_token(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--namespace", "/", "--namespace", "/chat", "--namespace", "/admin")
    scoped = gw.token(namespaces=["/chat"])
    assert socketio_connect(gw, {"token": scoped}, "/chat").startswith("40{")
    for ns in ("/", "/admin"):
        refused = socketio_connect(gw, {"token": scoped}, ns)
        assert refused.startswith("44") and "namespace not allowed by token" in refused, refused
    # No claim: any namespace the gateway serves; the claim cannot widen --namespace.
    assert socketio_connect(gw, {"token": gw.token()}, "/admin").startswith("40{")
    wide = gw.token(namespaces=["/chat", "/other"])
    assert "Invalid namespace" in socketio_connect(gw, {"token": wide}, "/other")
    bad = gw.token(namespaces="/chat")
    assert "invalid namespaces claim" in socketio_connect(gw, {"token": bad}, "/chat")

    minted = run("token", "--sub", "u", "--namespace", "/admin", "--jwt-secret", JWT_SECRET)
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), JWT_SECRET, algorithms=["HS256"])
    assert claims["namespaces"] == ["/admin"]
    assert "not allowed by token" in socketio_connect(gw, {"token": minted.stdout.strip()}, "/chat")


# ---------------------------------------------------------------- safe defaults


def serve_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` that must not start: its result, after checking nothing listens."""
    port = str(free_port())
    result = run("serve", "--port", port, *args, env=env)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    return result


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gateway.example.org", ""])
def test_generated_credentials_refused_on_a_public_host(host: str, clean_env: Path) -> None:
    result = serve_fails("--host", host)
    assert result.returncode == 2
    assert "--api-key" in result.stderr and "--dev" in result.stderr, result.stderr
    assert "--jwt-secret" in result.stderr
    assert "DEV MODE" not in result.stderr
    assert not (clean_env / "siogate").exists()
    # Only the missing one is named.
    partial = serve_fails("--host", host, "--jwt-secret", JWT_SECRET)
    assert partial.returncode == 2 and "--api-key" in partial.stderr
    assert "--jwt-secret" not in partial.stderr


def test_public_host_with_both_credentials_needs_no_dev_flag() -> None:
    # Passes the check, then fails to bind: 198.51.100.1 (TEST-NET-2) is on no interface.
    result = serve_fails("--host", "198.51.100.1", "--api-key", API_KEY, "--jwt-secret", JWT_SECRET)
    assert result.returncode == 3 and "cannot listen" in result.stderr, result.stderr


def test_dev_flag_allows_generated_credentials_on_a_public_host(clean_env: Path) -> None:
    # The check passes with --dev; the bind then fails (TEST-NET-2 is on no interface),
    # which also shows that nothing is announced or saved before listening succeeded.
    result = serve_fails("--host", "198.51.100.1", "--dev")
    assert result.returncode == 3 and "cannot listen" in result.stderr, result.stderr
    assert "DEV MODE" not in result.stderr and "saved" not in result.stderr
    assert not (clean_env / "siogate" / "dev-credentials.json").exists()


def test_is_loopback() -> None:
    from siogate.cli import is_loopback

    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "::ffff:10.0.0.1", "example.org", "localhost.x"):
        assert not is_loopback(host), host
    assert is_loopback("::ffff:127.0.0.1")


def test_bind_failure_saves_and_announces_nothing(gateway: Gateway, clean_env: Path) -> None:
    # A dev server (generated credentials) on a port that is taken.
    result = run("serve", "--port", str(gateway.port))
    assert result.returncode == 3 and "cannot listen" in result.stderr, result.stderr
    assert "DEV MODE" not in result.stderr and "saved" not in result.stderr
    assert not (clean_env / "siogate" / "dev-credentials.json").exists()


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--api-key", "short-key-1234", "shorter than 32"),
        ("--jwt-secret", "changeme", "shorter than 32"),
        ("--jwt-secret", "change-me-jwt-secret-0123456789abcdef", "placeholder"),
        ("--api-key", "x" * 40, "placeholder"),
        ("--api-key", "your-api-key-here-0123456789abcdefgh", "placeholder"),
        ("--webhook-secret", "whsec-integration-0123456789", "shorter than 32"),
        ("--webhook-secret", "secret" * 6, "placeholder"),
    ],
)
def test_weak_secrets_are_refused(flag: str, value: str, problem: str) -> None:
    args = {"--api-key": API_KEY, "--jwt-secret": JWT_SECRET}
    args[flag] = value
    if flag == "--webhook-secret":
        args["--webhook-url"] = "http://127.0.0.1:9/hook"
    result = serve_fails(*[part for item in args.items() for part in item])
    assert result.returncode == 2
    assert flag in result.stderr and problem in result.stderr, result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr
    assert value not in result.stderr  # a near-miss real secret is not echoed to logs


def test_weak_secret_from_env_or_toml_is_refused(tmp_path: Path) -> None:
    env = {"SIOGATE_API_KEY": "changeme", "SIOGATE_JWT_SECRET": JWT_SECRET}
    result = serve_fails(env=env)
    assert result.returncode == 2 and "SIOGATE_API_KEY" in result.stderr, result.stderr
    config = write_toml(
        tmp_path / "weak.toml", f'api_key = "{API_KEY}"\njwt_secret = "{"a" * 32}"\n'
    )
    result = serve_fails("--config", str(config))
    assert result.returncode == 2 and "--jwt-secret" in result.stderr, result.stderr
    assert "placeholder" in result.stderr


# ---------------------------------------------------------------- dev-credentials file


def dev_file(state: Path) -> Path:
    return state / "siogate" / "dev-credentials.json"


def banner_value(gw: Gateway, name: str) -> str:
    found = re.search(rf"SIOGATE_{name}=(\S+)", gw.log())
    assert found, gw.log()
    return found.group(1)


def test_existing_credentials_file_is_made_private(
    start_gateway: Callable[..., Gateway], clean_env: Path
) -> None:
    path = dev_file(clean_env)
    path.parent.mkdir(parents=True)
    path.write_text('{"http://127.0.0.1:1": {"api_key": "old", "saved_at": 1}}')
    path.chmod(0o644)
    gw = start_gateway(with_defaults=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    servers = json.loads(path.read_text())
    assert set(servers) == {"http://127.0.0.1:1", gw.url}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_two_dev_servers_keep_their_own_credentials(
    start_gateway: Callable[..., Gateway], clean_env: Path
) -> None:
    first = start_gateway(with_defaults=False)
    second = start_gateway(with_defaults=False)
    servers = json.loads(dev_file(clean_env).read_text())
    for gw in (first, second):
        assert servers[gw.url]["api_key"] == banner_value(gw, "API_KEY")
        assert servers[gw.url]["jwt_secret"] == banner_value(gw, "JWT_SECRET")
    assert banner_value(first, "API_KEY") != banner_value(second, "API_KEY")

    def minted_for(*args: str, env: dict[str, str] | None = None) -> str:
        result = run("token", "--sub", "d", *args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def secret_of(token: str) -> str:
        for gw in (first, second):
            secret = banner_value(gw, "JWT_SECRET")
            try:
                jwt.decode(token, secret, algorithms=["HS256"])
            except jwt.InvalidSignatureError:
                continue
            return gw.url
        raise AssertionError("signed by neither server")

    # --url (or SIOGATE_URL) picks the server; without it, the last one started.
    assert secret_of(minted_for("--url", first.url)) == first.url
    assert secret_of(minted_for("--url", first.url.replace("127.0.0.1", "localhost"))) == first.url
    assert secret_of(minted_for(env={"SIOGATE_URL": second.url})) == second.url
    assert secret_of(minted_for()) == second.url
    for gw in (first, second):
        sent = run("emit", "--url", gw.url, "ping")
        assert sent.returncode == 0, sent.stderr
        assert gw.url in sent.stderr  # says whose saved key it used
    # An unknown URL gets no other server's key.
    unknown = run("emit", "--url", f"http://127.0.0.1:{free_port()}", "ping")
    assert unknown.returncode == 2 and "--api-key" in unknown.stderr

    # A server that stops takes its entry with it; the other one is left.
    second.stop()
    servers = json.loads(dev_file(clean_env).read_text())
    assert list(servers) == [first.url]
    assert secret_of(minted_for()) == first.url


def test_credentials_file_of_an_earlier_version_is_read(clean_env: Path) -> None:
    path = dev_file(clean_env)
    path.parent.mkdir(parents=True)
    old = {"url": "http://127.0.0.1:8123", "api_key": API_KEY, "jwt_secret": SECRET}
    path.write_text(json.dumps(old))
    minted = run("token", "--sub", "x")
    assert minted.returncode == 0, minted.stderr
    jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"])


# ---------------------------------------------------------------- where a bad value came from


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("api_key = \n", "not valid TOML"),
        ("bogus_key = 1\n", "unknown setting(s): bogus_key"),
    ],
)
def test_bad_config_file_names_the_file_and_who_named_it(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = write_toml(tmp_path / "bad.toml", toml)
    by_flag = serve_fails("--config", str(config))
    assert by_flag.returncode == 2
    assert str(config) in by_flag.stderr and expected in by_flag.stderr, by_flag.stderr
    assert "--config" in by_flag.stderr and "SIOGATE_CONFIG" not in by_flag.stderr
    by_env = serve_fails(env={"SIOGATE_CONFIG": str(config)})
    assert by_env.returncode == 2
    assert str(config) in by_env.stderr and expected in by_env.stderr, by_env.stderr
    assert "SIOGATE_CONFIG" in by_env.stderr and "--config" not in by_env.stderr


def test_bad_value_names_its_source(tmp_path: Path) -> None:
    config = write_toml(tmp_path / "typed.toml", 'ping_interval = "soon"\n')
    from_toml = serve_fails("--config", str(config))
    assert from_toml.returncode == 2
    assert "'soon'" in from_toml.stderr and str(config) in from_toml.stderr, from_toml.stderr
    assert "ping_interval" in from_toml.stderr
    assert "env var" not in from_toml.stderr and "SIOGATE_PING_INTERVAL" not in from_toml.stderr

    from_flag = serve_fails("--ping-interval", "soon")
    assert from_flag.returncode == 2 and "--ping-interval" in from_flag.stderr
    assert "SIOGATE_PING_INTERVAL" not in from_flag.stderr, from_flag.stderr

    from_env = serve_fails(env={"SIOGATE_PING_INTERVAL": "soon"})
    assert from_env.returncode == 2 and "SIOGATE_PING_INTERVAL" in from_env.stderr
