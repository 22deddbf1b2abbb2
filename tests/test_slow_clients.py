"""service/front.py under `tunesmith serve` as a machine runs it (no extra flags): hundreds of
connections that stall half-way through a request leave /healthz and the API answering, a stalled
head is closed (TUNESMITH_HEADER_TIMEOUT), and a stalled body is answered 408 and closed
(TUNESMITH_BODY_TIMEOUT, made short here). Behind a proxy the client's address is the one the proxy
saw (TUNESMITH_PROXIES)."""
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests

from conftest import forget_keys, service_environment
from support import serving, wait_until

pytestmark = pytest.mark.slow
STALLED = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, redis_base_url):
    home = tmp_path_factory.mktemp("slow-home")
    env = {**os.environ, **service_environment(home, tiny_checkpoint, redis_base_url), "TUNESMITH_BODY_TIMEOUT": "2"}
    try:
        with serving(home, env) as base:
            yield base
    finally:
        forget_keys(env)


def connect(base: str, send: bytes) -> socket.socket:
    address = urlsplit(base)
    sock = socket.create_connection((address.hostname, address.port), timeout=30)
    sock.sendall(send)
    return sock


def closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing the connection, or None while it is open."""
    sock.setblocking(False)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
        return received
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return received


def test_stalled_connections_leave_the_api_answering_and_stalled_heads_are_closed(server):
    half_lines = [connect(server, b"GET /healthz HT") for _ in range(STALLED)]
    half_heads = [connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(50)]
    try:
        assert requests.get(f"{server}/healthz", timeout=30).json() == {"status": "ok"}
        models = requests.get(f"{server}/api/v1/models", timeout=30)
        assert models.status_code == 200 and models.json()["default"] == "default"
        wait_until(lambda: all(closed_by_server(s) is not None for s in half_lines + half_heads), 60,
                   "the server to close the stalled connections")
    finally:
        for sock in half_lines + half_heads:
            sock.close()
    assert requests.get(f"{server}/healthz", timeout=30).status_code == 200


def test_a_stalled_body_is_answered_408_and_closed_and_a_whole_one_is_served(server):
    head = (b"POST /api/v1/melodies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 30\r\n\r\n")
    stalled = connect(server, head + b'{"ba')
    try:
        answer = wait_until(lambda: closed_by_server(stalled), 30, "the server to close the stalled body")
    finally:
        stalled.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"stalled" in answer
    body = b'{"bars": 2, "seed": 3}'.ljust(30)
    whole = connect(server, head + body)
    try:
        whole.settimeout(30)
        assert whole.recv(64).startswith(b"HTTP/1.1 202 ")
    finally:
        whole.close()
    chunked = requests.post(f"{server}/api/v1/melodies", data=iter([b'{"bars": 2,', b' "seed": 4}']), timeout=30,
                            headers={"Content-Type": "application/json"})       # no length: chunked
    assert chunked.status_code == 202, chunked.text


def test_behind_a_proxy_the_client_is_the_address_it_forwarded(app, monkeypatch):
    from service import create_app
    from service.api import client_id
    monkeypatch.setenv("TUNESMITH_PROXIES", "1")
    proxied = create_app()
    seen = []
    proxied.before_request(lambda: seen.append(client_id()))
    headers = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}     # the last is the one our proxy added
    proxied.test_client().get("/healthz", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    app.before_request(lambda: seen.append(client_id()))
    app.test_client().get("/healthz", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert seen == ["address:203.0.113.9", "address:10.0.0.2"]          # without TUNESMITH_PROXIES: the peer
