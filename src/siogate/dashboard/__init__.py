"""The built-in dashboard: one HTML page, its stylesheet and its script, shipped in the
package and served by the HTTP API (``GET /dashboard``; see docs/dashboard.md).

The files are read once, at import. Every response carries headers that keep the page
out of frames and caches and let it load nothing but its own files and ``/v1/stats``:
the Content-Security-Policy has no ``unsafe-inline``, so the HTML holds no script or
style of its own.
"""

from __future__ import annotations

from importlib import resources

from ..transport.http import Response

__all__ = ["ASSETS", "PAGE_PATH", "REALM", "asset", "page", "unauthorized"]

PAGE_PATH = "/dashboard"
REALM = "siogate"

_FILES = resources.files(__name__)
_PAGE = (_FILES / "index.html").read_bytes()
# path -> (body, content type)
ASSETS: dict[str, tuple[bytes, str]] = {
    f"{PAGE_PATH}/dashboard.js": (
        (_FILES / "dashboard.js").read_bytes(),
        "text/javascript; charset=utf-8",
    ),
    f"{PAGE_PATH}/dashboard.css": (
        (_FILES / "dashboard.css").read_bytes(),
        "text/css; charset=utf-8",
    ),
    f"{PAGE_PATH}/favicon.svg": ((_FILES / "favicon.svg").read_bytes(), "image/svg+xml"),
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
]


def page() -> Response:
    return Response(200, _PAGE, "text/html; charset=utf-8", list(SECURITY_HEADERS))


def asset(path: str) -> Response | None:
    found = ASSETS.get(path)
    if found is None:
        return None
    body, content_type = found
    return Response(200, body, content_type, list(SECURITY_HEADERS))


def challenge() -> tuple[str, str]:
    """The header that makes a browser ask for a user name and password."""
    return ("www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"')


def unauthorized(body: bytes) -> Response:
    return Response(401, body, "application/json", [*SECURITY_HEADERS, challenge()])
