"""The status page's files, as `GET /api/ui` and `GET /api/ui/{asset}` answer them.

The page is three static files shipped in the package (`shared/ops/page/`): no build step, no CDN, nothing
fetched from elsewhere, so it works offline and in locked-down networks. They hold no data and no secret,
which is why the routes are anonymous at the host; the data comes from the `/api/ops/*` JSON, which is not.
Only the names in `ASSETS` are served (a name is never joined to a path), and every answer carries a
strict Content-Security-Policy: script and style only from this origin, none inline, so a stored field
that reaches the page as markup could not run even if the page's own code put it there. index.html names its
assets as `/api/ui/app.js` and `/api/ui/app.css` (the host's default route prefix, which host.json keeps);
app.js finds the JSON beside the page's own address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

PAGE_DIR = Path(__file__).with_name("page")
INDEX = "index.html"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's address may carry ?code= until app.js removes it
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class PageFile:
    """One answer of the page routes: status, body and headers (the security headers on every one)."""

    status: int
    body: bytes
    mimetype: str  # always sent as UTF-8
    headers: dict[str, str] = field(default_factory=lambda: dict(SECURITY_HEADERS))


@cache
def _read(name: str) -> bytes:
    return (PAGE_DIR / name).read_bytes()


def index() -> PageFile:
    """GET /api/ui: the page itself, the same bytes for everyone (it carries no key and no data)."""
    return PageFile(200, _read(INDEX), "text/html")


def asset(name: str) -> PageFile:
    """GET /api/ui/{asset}: a file of the allowlist, else a 404 (no path is ever built from the name)."""
    if name not in ASSETS:
        return PageFile(404, b"not found\n", "text/plain")
    return PageFile(200, _read(name), ASSETS[name])
