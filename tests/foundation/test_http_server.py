"""Every HTTP service keeps an idle connection open past the client's keep-alive expiry (no reuse race).

With uvicorn's default 5 s, a connection idle for 6 s is closed by the server; a client whose own expiry is 5 s
(httpx) can reuse it just as the server closes it and gets "Server disconnected without sending a response".
Each test holds a real connection idle for 6 s and sends a second request on it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from unidoc_rl.common.http_server import KEEP_ALIVE_S
from unidoc_rl.standins.sample_corpus import index_sample_corpus
from unidoc_rl.standins.serving import ThreadedUvicorn, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
IDLE_S = 6.0
"""Past both uvicorn's default keep-alive and httpx's keep-alive expiry (5 s each)."""


def _get(connection: socket.socket, path: str) -> bytes:
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(65536)
        if not chunk:
            return head
        head += chunk
    header, _, body = head.partition(b"\r\n\r\n")
    fields = {name.lower(): value for name, value in (line.split(b":", 1) for line in header.split(b"\r\n")[1:])}
    length = int(fields.get(b"content-length", b"0"))
    while len(body) < length:
        body += connection.recv(65536)
    return header


def assert_idle_connection_is_reused(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        assert _get(connection, path).startswith(b"HTTP/1.1 200")
        time.sleep(IDLE_S)
        assert _get(connection, path).startswith(b"HTTP/1.1 200"), f"the server closed a connection idle {IDLE_S} s"


def _serve(command: list[str], port: int, path: str):
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{command} did not serve {path}: {process.communicate()[1][-2000:]}")
        time.sleep(0.2)


def test_keep_alive_exceeds_the_clients_expiry():
    assert KEEP_ALIVE_S > httpx.Limits().keepalive_expiry + IDLE_S


def test_loopback_servers_keep_an_idle_connection_open():
    app = FastAPI()
    app.get("/ping")(lambda: {"ok": True})
    with ThreadedUvicorn(app) as server:
        assert_idle_connection_is_reused(server.port, "/ping")


@pytest.mark.parametrize("service", ["search", "judge"])
def test_service_clis_keep_an_idle_connection_open(service, tmp_path):
    port = free_port()
    if service == "search":
        corpus = index_sample_corpus(tmp_path / "corpus", names=["northwind_annual_report_2023.pdf"])
        command = [sys.executable, "search_engine/search_engine_api.py", "--dataset_dir", str(corpus)]
    else:
        command = [sys.executable, "-m", "unidoc_rl.judge.evaluator_api", "--llm-base-url", "http://127.0.0.1:9/v1"]
    process = _serve([*command, "--port", str(port)], port, "/health")
    try:
        assert_idle_connection_is_reused(port, "/health")
    finally:
        process.terminate()
        process.wait(timeout=30)
