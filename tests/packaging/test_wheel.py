"""``pip install siogate`` from the wheel and the sdist that ``python -m build`` makes.

One build per module, into a tmp dir; each file is checked by ``twine check --strict`` and
installed in a fresh venv, whose console script must start a gateway that answers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dists import ROOT, Venv, build, make_venv, run, serve

from conftest import API_KEY, JWT_SECRET, free_port
from siogate import __version__

# Fresh venvs fetch from the index: a cold cache can take minutes, not the default 120 s.
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(ROOT, tmp_path_factory.mktemp("dist"))


def test_one_version_everywhere(dists: dict[str, Path]) -> None:
    # The one place is src/siogate/_version.py; pyproject reads it (dynamic), and the npm
    # package of the TypeScript SDK must carry the same number.
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert dists["wheel"].name == f"siogate-{__version__}-py3-none-any.whl"
    assert dists["sdist"].name == f"siogate-{__version__}.tar.gz"
    package_json = json.loads((ROOT / "clients" / "js" / "package.json").read_text())
    assert package_json["version"] == __version__
    lock = json.loads((ROOT / "clients" / "js" / "package-lock.json").read_text())
    assert lock["version"] == lock["packages"][""]["version"] == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_set_version_writes_every_copy(tmp_path: Path) -> None:
    # scripts/set-version on a copy of the files it edits, laid out as in the checkout.
    files = [
        "scripts/set-version",
        "src/siogate/_version.py",
        "clients/js/package.json",
        "clients/js/package-lock.json",
        "CHANGELOG.md",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    script = tmp_path / "scripts" / "set-version"
    proc = subprocess.run([sys.executable, script, "9.8.7"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "add a '## 9.8.7' section to CHANGELOG.md" in proc.stderr
    assert (tmp_path / "src/siogate/_version.py").read_text() == '__version__ = "9.8.7"\n'
    package = json.loads((tmp_path / "clients/js/package.json").read_text())
    lock = json.loads((tmp_path / "clients/js/package-lock.json").read_text())
    assert package["version"] == lock["version"] == lock["packages"][""]["version"] == "9.8.7"
    # Nothing else in package.json moved.
    original = json.loads((ROOT / "clients/js/package.json").read_text())
    assert {**package, "version": original["version"]} == original
    refused = subprocess.run([sys.executable, script, "v1"], capture_output=True, text=True)
    assert refused.returncode == 2


def test_twine_check_passes(dists: dict[str, Path]) -> None:
    out = run([sys.executable, "-m", "twine", "check", "--strict", *dists.values()])
    assert out.count("PASSED") == 2, out


def test_wheel_holds_the_package_and_no_tests(dists: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    # Every file of the package, data included (py.typed, the dashboard's page and assets).
    package = {
        str(p.relative_to(ROOT / "src"))
        for p in (ROOT / "src" / "siogate").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {"siogate/py.typed", "siogate/dashboard/index.html"} <= package
    assert package <= set(names), sorted(package - set(names))
    assert "siogate/client/__init__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "bench/", "clients/"))]
    with tarfile.open(dists["sdist"]) as sdist:
        top = {Path(n).parts[1] for n in sdist.getnames() if len(Path(n).parts) > 1}
    assert {"src", "tests", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"} <= top
    assert not top & {"bench", "clients", ".ci", "examples"}


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def installed(
    request: pytest.FixtureRequest, dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Venv]:
    venv = make_venv(tmp_path_factory.mktemp(f"venv-{request.param}") / "venv")
    venv.install(dists[request.param])
    yield venv


def test_installed_command_runs(installed: Venv, tmp_path: Path) -> None:
    where = run([installed.python, "-c", "import siogate; print(siogate.__file__)"], cwd=tmp_path)
    assert where.startswith(str(installed.path)), where
    assert f"siogate, version {__version__}" in run([installed.bin("siogate"), "--version"])
    help_text = run([installed.bin("siogate"), "--help"])
    for command in ("serve", "emit", "listen", "token"):
        assert command in help_text

    port = free_port()
    served = serve(
        [
            installed.bin("siogate"),
            "serve",
            "--port",
            port,
            "--api-key",
            API_KEY,
            "--jwt-secret",
            JWT_SECRET,
        ],
        port,
        tmp_path / "serve.log",
        cwd=tmp_path,
    )
    try:
        assert httpx.get(f"{served.url}/healthz").status_code == 200
        headers = {"Authorization": f"Bearer {API_KEY}"}
        emitted = httpx.post(f"{served.url}/v1/emit", json={"event": "e"}, headers=headers)
        assert emitted.status_code == 200, emitted.text
        assert httpx.post(f"{served.url}/v1/emit", json={"event": "e"}).status_code == 401
        # The dashboard's files are package data: they must have been installed too.
        for path in ("/dashboard", "/dashboard/dashboard.js"):
            page = httpx.get(f"{served.url}{path}", auth=("", API_KEY))
            assert page.status_code == 200 and len(page.content) > 500, (path, page)
    finally:
        served.stop()
