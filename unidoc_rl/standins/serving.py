"""Real HTTP servers on loopback for tests, benchmarks and the demo: an ASGI app under uvicorn in a thread."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import httpx
import uvicorn

from unidoc_rl.common.http_server import server_config


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a server started in another process, or a refused connection)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, url: str, timeout_s: float, path: str = "/health") -> None:
    """Waits until `url + path` answers 200; kills the process and raises if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the service at {url} did not start")


class ThreadedUvicorn:
    """Serve an ASGI app with uvicorn in a daemon thread (port 0 picks a free port)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, **config_options):
        options = {"log_level": "warning", "timeout_graceful_shutdown": 1, "backlog": 2048, **config_options}
        self._server = uvicorn.Server(server_config(app, host, port, **options))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn-in-thread", daemon=True)
        self.host = host
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> int:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start on {self.host}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedUvicorn:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
