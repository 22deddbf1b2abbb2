"""Headers a browser enforces, on every response: a Content-Security-Policy, `nosniff`, a
`Referrer-Policy`, and a `Cache-Control` chosen by the kind of response.

The policy allows only this service's own scripts, styles, media and connections, and no
inline script or `<style>` element (every script of the pages is a file under service/static);
no page of ours may be framed (`frame-ancestors 'none'`, clickjacking). Three allowances, each
for a reason:
- `style-src-attr 'unsafe-inline'`: the vendored abcjs writes `style` attributes on the notation
  it draws (`setAttribute("style", ...)`). A style attribute runs no code; `<style>` elements
  and style sheets from elsewhere stay refused,
- but for one: the `<style>` element abcjs puts in every score it draws, allowed by the hash of
  its exact text (`ABCJS_STYLE`); a new abcjs that changes it fails tests/test_browser.py.
- `img-src data:`: Swagger UI's icons are data: URLs in its style sheet.

Cache-Control, by kind:
- job records, event streams, health and metrics change from one request to the next: `no-store`;
- a job's files (melodies, zips) are the same bytes for the life of the job but belong to whoever
  holds its id: `private` (a shared cache must not hand them to another user), `max-age` of a day;
- the vendored builds under /assets/vendor/ change only with a release of the package:
  `public, max-age` of a year, `immutable`;
- our own scripts and styles, and the pages: `no-cache` (kept, but asked again each time, so a
  new release is seen at once).
"""
import base64
import hashlib

from flask import Flask, request

ABCJS_STYLE = (".abcjs-dragging-in-progress text, .abcjs-dragging-in-progress tspan {-webkit-touch-callout: none; "
               "-webkit-user-select: none; -khtml-user-select: none; -moz-user-select: none; "
               "-ms-user-select: none; user-select: none;}")
ABCJS_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(ABCJS_STYLE.encode()).digest()).decode()

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    f"style-src 'self' '{ABCJS_STYLE_HASH}'",
    "style-src-attr 'unsafe-inline'",
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

NO_STORE = "no-store"
PRIVATE_FILE = "private, max-age=86400"
VENDORED = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def cache_control(path: str, status: int) -> str:
    """The Cache-Control for a response to `path` with `status`."""
    if status >= 400:
        return NO_STORE
    if path.startswith("/assets/vendor/") or path.startswith("/api/v1/docs/assets/"):
        return VENDORED
    if path.startswith("/api/v1/docs"):                # the API docs page and its start script
        return REVALIDATE
    if path.startswith("/api/v1/melodies/"):
        return PRIVATE_FILE
    if path.startswith(("/api/", "/healthz", "/readyz", "/metrics")):
        return NO_STORE
    return REVALIDATE


def init_app(app: Flask) -> None:
    """Set the headers on every response the app sends (Cache-Control replacing whatever a view or
    Flask's send_file chose, so that the rule above is the only one)."""
    @app.after_request
    def browser_headers(response):
        headers = response.headers
        headers["Content-Security-Policy"] = CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        headers["X-Frame-Options"] = "DENY"       # frame-ancestors, for browsers without CSP level 2
        headers["Cache-Control"] = cache_control(request.path, response.status_code)
        return response
