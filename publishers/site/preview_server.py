"""The live preview: rendered pages served from memory on localhost, rebuilt when the config changes.

A watcher thread (watchfiles) rebuilds on any change under the config directory and bumps a version;
pages keep a server-sent-events stream open and reload when the version moves. A config error is served
as an error page on every path, and the next good build replaces it, so the browser recovers by itself.
Nothing is read from disk per request: only names the last build produced can be served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import watchfiles

from publishers.site.render import EVENTS_PATH, INDEX_FILE, render_error_page

HEARTBEAT_SECONDS = 15.0  # keeps proxies and the browser from closing an idle event stream
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json; charset=utf-8"}
IGNORED_DIRS = (*watchfiles.DefaultFilter.ignore_dirs, ".tariff")  # the embedded database lives there


@dataclass(frozen=True, slots=True)
class Build:
    """The result of one rebuild: the site's files, or the error page that replaces every one of them."""

    files: dict[str, str] = field(default_factory=dict)
    error_html: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error_html is None


class PreviewState:
    """The current build and its version, shared by request threads and the watcher."""

    def __init__(self, build: Callable[[], Build]) -> None:
        self._build = build
        self._changed = threading.Condition()
        self._current = Build()
        self._version = 0
        self._closed = False

    def rebuild(self) -> Build:
        try:
            result = self._build()
        except Exception as exc:  # a bug in rendering must not kill the server: show it instead
            message = f"internal error while rendering: {type(exc).__name__}: {exc}"
            result = Build(error_html=render_error_page([message], live_reload=True), message=message)
        with self._changed:
            self._current = result
            self._version += 1
            self._changed.notify_all()
        return result

    @property
    def current(self) -> Build:
        with self._changed:
            return self._current

    @property
    def version(self) -> int:
        with self._changed:
            return self._version

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed

    def wait(self, seen: int, timeout: float) -> int:
        """The version once it differs from `seen`, or after `timeout` seconds, or on close."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen or self._closed, timeout)
            return self._version

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def _handler(state: PreviewState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "TariffPreview"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the command prints rebuilds, not every request

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            if path == EVENTS_PATH:
                self._events()
                return
            name = path.lstrip("/") or INDEX_FILE
            build = state.current
            if build.error_html is not None:
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, build.error_html, CONTENT_TYPES[".html"])
                return
            body = build.files.get(name)
            if body is None:
                self._send(HTTPStatus.NOT_FOUND, "not found\n", "text/plain; charset=utf-8")
                return
            self._send(HTTPStatus.OK, body, CONTENT_TYPES.get(Path(name).suffix, "text/plain; charset=utf-8"))

        def _send(self, status: HTTPStatus, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def _events(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seen = state.version
            try:
                self.wfile.write(f"retry: 1000\ndata: {seen}\n\n".encode())
                self.wfile.flush()
                while not state.closed:
                    version = state.wait(seen, HEARTBEAT_SECONDS)
                    if state.closed:
                        break
                    message = f"data: {version}\n\n" if version != seen else ": heartbeat\n\n"
                    seen = version
                    self.wfile.write(message.encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the tab was closed or reloaded

    return Handler


class PreviewServer:
    """`start()` builds once, serves on host:port and watches `root`; `close()` stops all of it."""

    def __init__(
        self,
        root: Path,
        build: Callable[[], Build],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_rebuild: Callable[[Build, set[str]], None] | None = None,
        debounce_ms: int = 300,
    ) -> None:
        self.root = root
        self.state = PreviewState(build)
        self.host = host
        self.port = port
        self.on_rebuild = on_rebuild
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Build:
        first = self.state.rebuild()
        httpd = ThreadingHTTPServer((self.host, self.port), _handler(self.state))
        httpd.daemon_threads = True  # open event streams must not keep the process alive
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._spawn("tariff-preview-http", httpd.serve_forever)
        self._spawn("tariff-preview-watch", self._watch)
        return first

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self) -> None:
        watch_filter = watchfiles.DefaultFilter(ignore_dirs=IGNORED_DIRS)
        for changes in watchfiles.watch(
            self.root,
            watch_filter=watch_filter,
            debounce=self.debounce_ms,
            stop_event=self._stop,
            raise_interrupt=False,
        ):
            result = self.state.rebuild()
            if self.on_rebuild is not None:
                self.on_rebuild(result, {path for _change, path in changes})

    def close(self) -> None:
        self._stop.set()
        self.state.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
