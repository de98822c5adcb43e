"""What ``siogate.client`` imports stays inside what ``siogate-client`` ships.

The light distribution (``clients/python``) installs the files that its build hook lists,
without ``siogate/__init__.py`` and without the gateway's dependencies. Every import in
those files must therefore name a shipped module (``siogate``, ``siogate.auth`` and
``siogate.webhooks`` are namespace packages there, with no names of their own), the
standard library, or httpx. tests/packaging proves the same on an installed wheel; this
catches a stray ``from siogate.auth import ...`` in a second, without building anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
HOOK = ROOT / "clients" / "python" / "hatch_build.py"
THIRD_PARTY = {"httpx"}


def shipped_files() -> list[Path]:
    tree = ast.parse(HOOK.read_text())
    (names,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "FILES" for t in node.targets)
    ]
    files: list[Path] = []
    for name in names:
        path = SRC / "siogate" / name
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_sdk_imports_only_what_siogate_client_ships() -> None:
    files = shipped_files()
    modules = {module_name(p) for p in files if p.suffix == ".py"}
    assert {"siogate.client", "siogate.client._core", "siogate.auth.minting"} <= modules
    namespaces = {name.rsplit(".", 1)[0] for name in modules} - modules
    problems = []
    for path in files:
        if path.suffix != ".py":
            continue
        here = module_name(path)
        package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [(base, alias.name) for alias in node.names]
            else:
                continue
            for target, name in targets:
                top = target.split(".")[0]
                if top == "__future__" or top in sys.stdlib_module_names or top in THIRD_PARTY:
                    continue
                if top != "siogate":
                    problems.append(f"{here}: imports {target} (not stdlib or httpx)")
                elif target in modules:
                    continue
                elif target in namespaces and name and f"{target}.{name}" in modules:
                    continue  # `from siogate.client import _core`: a shipped submodule
                else:
                    shown = f"{target}.{name}" if name else target
                    problems.append(f"{here}: imports {shown}, which siogate-client lacks")
    assert problems == []
