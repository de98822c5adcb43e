"""Which files go into siogate-client, and from where (a hatchling build hook).

In the repository the SDK's modules are the ones in ../../src/siogate, the files the
siogate wheel ships: no copy of them lives here. An sdist cannot reach outside itself, so
the sdist gets real copies under src/siogate, and a wheel built from that sdist takes them
from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# siogate.client and every module it imports, all stdlib-only but for httpx; nothing of the
# gateway (tests/packaging checks that the SDK imports with only httpx installed). No
# siogate/__init__.py: with this distribution alone, siogate is a namespace package.
FILES = (
    "client",
    "_version.py",
    "errors.py",
    "types.py",
    "py.typed",
    "auth/minting.py",
    "webhooks/signing.py",
)


class SdkFilesHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        # An unpacked sdist has PKG-INFO; the repository's clients/python has not.
        from_sdist = (root / "PKG-INFO").is_file()
        source = root / "src" / "siogate" if from_sdist else root.parent.parent / "src" / "siogate"
        prefix = "src/siogate" if self.target_name == "sdist" else "siogate"
        for name in FILES:
            path = source / name
            if not path.exists():
                raise FileNotFoundError(f"siogate-client needs {path}")
            build_data["force_include"][str(path)] = f"{prefix}/{name}"
