"""The container's HEALTHCHECK: exit 0 when siogate's ``GET /healthz`` answers 200, else 1.

Stdlib only: the slim image has no curl or wget. It asks the port in ``SIOGATE_PORT``
(default 8000) on ``SIOGATE_HOST``, or on 127.0.0.1 when that is unset or a wildcard
(``0.0.0.0``, ``::``); a URL given as the first argument replaces both. Proxy variables
are ignored: the check is about this container, not a route through a proxy.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0  # seconds; below the Dockerfile's --timeout, so a hung server fails here


def health_url() -> str:
    host = os.environ.get("SIOGATE_HOST", "").strip()
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    port = os.environ.get("SIOGATE_PORT", "").strip() or "8000"
    return f"http://{host}:{port}/healthz"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else health_url()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"siogate unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"siogate unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
