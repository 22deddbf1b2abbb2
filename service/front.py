"""What stands between a client's socket and the Flask app: how the API holds when clients are
slow, stall, or are many.

`tunesmith serve` and the containers run the app under gunicorn's gevent worker (service/cli.py:
api_command). Each connection is a greenlet, so connections that stall or idle, and open event
streams, cost a socket and a little memory each, never a thread that other requests wait for; a
process takes up to `--worker-connections` of them. Two timeouts close the connections that would
otherwise stay forever:

- the head: gunicorn's gevent worker reads a request's line and headers within its keep-alive time
  (`--keep-alive`, TUNESMITH_HEADER_TIMEOUT), or closes the connection;
- the body: `BodyDeadline` below reads it whole before the app runs, waiting at most
  TUNESMITH_BODY_TIMEOUT for each next piece (the rule of nginx's client_body_timeout), and answers
  408 and closes the connection when a client stalls.

Behind a proxy (docker-compose.yml's nginx, deploy/nginx.conf) every request comes from the proxy's
address: TUNESMITH_PROXIES=1 takes the client's from the X-Forwarded-For the proxy adds, since
the per-client limits count by it (service/admission.py).
"""
import socket
import tempfile

from flask import json
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import ClosingIterator

CHUNK = 64 * 1024
SPOOL_BYTES = 1024 * 1024        # a body beyond this waits in a temporary file, not in memory


def init_app(app) -> None:
    app.wsgi_app = BodyDeadline(app.wsgi_app, app.config["TUNESMITH_BODY_TIMEOUT"], app.config["MAX_CONTENT_LENGTH"])
    if app.config["TUNESMITH_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TUNESMITH_PROXIES"])


class BodyDeadline:
    """WSGI middleware: the request body read whole, each read within `seconds`, before `app` sees
    it (from a spooled file in place of the socket). Bodies longer than `limit` are left to Flask,
    which refuses them (413) without reading. Only under gunicorn, whose environ carries the socket."""

    def __init__(self, app, seconds: float, limit: int):
        self.app, self.seconds, self.limit = app, seconds, limit

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = int(environ.get("CONTENT_LENGTH") or 0) if not chunked else None
        if sock is None or length == 0 or (length or 0) > self.limit:
            return self.app(environ, start_response)
        previous = sock.gettimeout()
        sock.settimeout(self.seconds)
        try:
            body = _spool(environ["wsgi.input"], self.limit + 1 if chunked else length)
        except TimeoutError:
            sock.shutdown(socket.SHUT_RD)     # gunicorn reads no further request here: it closes
            return _timed_out(self.seconds, start_response)
        finally:
            sock.settimeout(previous)
        environ["wsgi.input"] = body
        return ClosingIterator(self.app(environ, start_response), body.close)


def _spool(stream, size: int):
    """Up to `size` bytes of `stream` (fewer when it ends first), in a file positioned at its start."""
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    while size > 0 and (chunk := stream.read(min(CHUNK, size))):
        body.write(chunk)
        size -= len(chunk)
    body.seek(0)
    return body


def _timed_out(seconds: float, start_response) -> list[bytes]:
    message = json.dumps({"error": f"the request body stalled: no bytes for {seconds:g} s"}).encode()
    start_response("408 Request Timeout", [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(message)))])
    return [message]
