"""The viewer over HTTP (standard library server, one thread per request), bound to loopback by default.

It answers only its own routes; there is no generic file serving. Page images are read through the page store
(pattern-checked ids, paths confined to the pages folder), everything else is rendered from the run's logs.
Requests whose Host header is not a loopback name are refused while bound to loopback (a web page elsewhere
cannot reach the viewer through DNS rebinding).
"""

from __future__ import annotations

import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from unidoc_rl.common.http_server import is_loopback
from unidoc_rl.viewer import render
from unidoc_rl.viewer.app import NotFound, Viewer
from unidoc_rl.viewer.links import ServerLinks
from unidoc_rl.viewer.query import ListQuery, QueryError

logger = logging.getLogger("unidoc_rl.viewer")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
}
ROUTES = (
    ("episode", re.compile(r"^/episode/(\d+)/(\d+)$")),
    ("page", re.compile(r"^/page/([^/]+)\.png$")),
    ("thumb", re.compile(r"^/thumb/([^/]+)\.png$")),
    ("crop", re.compile(r"^/crop/(\d+)/(\d+)/(\d+)/(\d+)\.png$")),
    ("asset", re.compile(r"^/static/([A-Za-z0-9_.-]+)$")),
)


def host_of(header: str) -> str:
    """The host part of a Host header (`name`, `name:port`, `[v6]:port`)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ViewerHandler(BaseHTTPRequestHandler):
    viewer: Viewer
    loopback_only: bool
    links = ServerLinks()
    server_version = "unidoc-viewer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        try:
            self._route()
        except Exception as error:  # a bad log line or image must not take the server down
            logger.exception("error serving %s", self.path)
            self._html(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {error}")

    def _route(self) -> None:
        if self.loopback_only and not is_loopback(host_of(self.headers.get("Host", ""))):
            self._html(HTTPStatus.MISDIRECTED_REQUEST, "this viewer answers only requests addressed to loopback")
            return
        url = urlsplit(self.path)
        path = url.path
        if path == "/":
            try:
                query = ListQuery.from_params(parse_qs(url.query))
            except QueryError as error:
                self._html(HTTPStatus.BAD_REQUEST, str(error))
                return
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.viewer.episodes_html(query, self.links).encode())
            return
        if path == "/run":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.viewer.run_html(self.links).encode())
            return
        for name, pattern in ROUTES:
            match = pattern.match(path)
            if match:
                try:
                    self._serve(name, [unquote(group) for group in match.groups()])
                except NotFound as error:
                    self._html(HTTPStatus.NOT_FOUND, str(error))
                return
        self._html(HTTPStatus.NOT_FOUND, f"no page at {path}")

    def _serve(self, name: str, args: list[str]) -> None:
        viewer = self.viewer
        if name == "episode":
            html = viewer.episode_html(int(args[0]), int(args[1]), self.links)
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", html.encode())
        elif name == "page":
            self._send(HTTPStatus.OK, "image/png", viewer.page_png(args[0]), cache=True)
        elif name == "thumb":
            self._send(HTTPStatus.OK, "image/png", viewer.thumbnail_png(args[0]), cache=True)
        elif name == "crop":
            self._send(HTTPStatus.OK, "image/png", viewer.crop_png(*(int(a) for a in args)), cache=True)
        elif name == "asset":
            self._send(HTTPStatus.OK, "text/css; charset=utf-8", viewer.asset(args[0]), cache=True)

    def do_POST(self) -> None:  # noqa: N802
        self._html(HTTPStatus.METHOD_NOT_ALLOWED, "the viewer is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _html(self, status: HTTPStatus, message: str) -> None:
        page = render.error_page(int(status), message, self.links, self.viewer.run_name)
        self._send(status, "text/html; charset=utf-8", page.encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=600" if cache else "no-store")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def make_server(viewer: Viewer, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    handler = type("BoundViewerHandler", (ViewerHandler,), {"viewer": viewer, "loopback_only": is_loopback(host)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(viewer: Viewer, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns it and its base URL (tests, notebooks)."""
    server = make_server(viewer, host, port)
    threading.Thread(target=server.serve_forever, name="unidoc-viewer", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"
