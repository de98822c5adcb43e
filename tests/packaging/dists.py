"""Building the project's distributions into a tmp dir and installing them in fresh venvs.

Each venv is made with ``python -m venv`` and gets only what pip resolves for the file it
installs, from the index, pinned by ``requirements/serve.lock`` where that names a package.
Commands run in them with an environment stripped of ``PYTHONPATH`` (the test session puts
the source tree there), so that they import what was installed and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVE_LOCK = ROOT / "requirements" / "serve.lock"


def clean_env(**extra: str) -> dict[str, str]:
    """The session's environment without the variables that would leak the source tree in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("SIOGATE_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str | Path], *, timeout: float = 300, **kw: object) -> str:
    """Run ``cmd``, return its stdout; a failure shows both streams."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kw.pop("env", clean_env()),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def build(project: Path, out: Path) -> dict[str, Path]:
    """``python -m build`` with the locked backend (``--no-isolation``): the sdist, then the
    wheel built from that sdist (so a file the sdist lacks breaks the wheel)."""
    run([sys.executable, "-m", "build", "--no-isolation", "-o", out, project])
    files = sorted(out.iterdir())
    (wheel,) = [f for f in files if f.suffix == ".whl"]
    (sdist,) = [f for f in files if f.name.endswith(".tar.gz")]
    return {"wheel": wheel, "sdist": sdist}


@dataclass
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def install(self, *targets: str | Path) -> None:
        run([self.python, "-m", "pip", "install", "-q", "-c", SERVE_LOCK, *targets])

    def distributions(self) -> set[str]:
        """Lower-cased names of the distributions installed in this venv."""
        out = run([self.python, "-m", "pip", "list", "--format=freeze"])
        return {line.split("==")[0].lower() for line in out.splitlines() if "==" in line}


def make_venv(path: Path) -> Venv:
    run([sys.executable, "-m", "venv", path])
    return Venv(path)


@dataclass
class Served:
    """A ``siogate serve`` started from an installed console script."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def serve(cmd: list[str | Path], port: int, log_path: Path, cwd: Path) -> Served:
    """Start ``cmd`` (a serve command line) and wait until ``/healthz`` answers 200."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=cwd
        )
    served = Served(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd} exited {proc.returncode}:\n{served.log()}")
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    served.stop()
    raise AssertionError(f"{cmd} never answered /healthz:\n{served.log()}")
