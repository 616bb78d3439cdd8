"""`tariff preview --serve` without a browser: pages from memory, the event stream, error pages, recovery."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.preview_command import build_preview
from publishers.site.preview_server import Build, PreviewServer
from publishers.site.render import EVENTS_PATH
from tests.test_site_dom import parse_html

REPO = Path(__file__).resolve().parent.parent
AT = datetime(2026, 10, 25, 6, 0, tzinfo=UTC)
WAIT = 30.0  # seconds for a file change to reach the stream (inotify is fast; CI machines may not be)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    target = tmp_path / "pricing"
    shutil.copytree(REPO / "pricing", target)
    return target


@pytest.fixture
def server(config: Path) -> Iterator[PreviewServer]:
    preview = PreviewServer(config, lambda: build_preview(config, AT, None, None), debounce_ms=50)
    preview.start()
    try:
        yield preview
    finally:
        preview.close()


def get(server: PreviewServer, path: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


class EventStream:
    """A client of the reload stream: `next()` returns the next `data:` value."""

    def __init__(self, server: PreviewServer) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
        self.conn.request("GET", EVENTS_PATH)
        self.response = self.conn.getresponse()
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def next(self) -> str:
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("stream closed")
            if line.startswith(b"data: "):
                return line[6:].strip().decode()

    def close(self) -> None:
        self.conn.close()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_serves_the_site_from_memory(server: PreviewServer) -> None:
    status, content_type, body = get(server, "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert "pricing-in.html" in body
    status, _, body = get(server, "/pricing-in.html")
    root = parse_html(body)
    assert status == 200 and root.find("h1").text() == "Build TradingView strategies with AI"
    assert len(root.find_all("script")) == 2  # the cycle toggle and the reload script
    assert EVENTS_PATH in body
    status, content_type, body = get(server, "/pricing-in.json")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(body)["promotions"][0]["id"] == "diwali-2026"
    assert get(server, "/nope.html")[0] == 404
    assert get(server, "/../pricing/tariff.yaml")[0] == 404  # nothing is read from disk


def test_reloads_on_change_shows_errors_and_recovers(server: PreviewServer, config: Path) -> None:
    stream = EventStream(server)
    try:
        first = stream.next()
        edit(config / "content" / "pricing.yaml", "headline: Build TradingView", "headline: Ship TradingView")
        second = stream.next()
        assert second != first
        assert parse_html(get(server, "/pricing-in.html")[2]).find("h1").text().startswith("Ship TradingView")

        edit(config / "plans" / "pro.yaml", "trial_days: 14", "trial_days: <script>alert(1)</script>")
        assert stream.next() != second
        status, _, body = get(server, "/pricing-in.html")
        assert status == 500
        root = parse_html(body)
        where = root.find("strong", cls="where").text()
        assert where.startswith("plans/pro.yaml:") and int(where.split(":")[1]) > 1
        assert "<script>alert(1)" not in body  # the value is quoted in the message, escaped
        assert get(server, "/")[0] == 500  # every path shows the error until it is fixed
        assert EVENTS_PATH in body  # and keeps listening, to recover by itself

        edit(config / "plans" / "pro.yaml", "trial_days: <script>alert(1)</script>", "trial_days: 21")
        stream.next()
        status, _, body = get(server, "/pricing-in.html")
        assert status == 200
        assert (
            parse_html(body).find("article", data_plan="pro").find("p", cls="trial").text()
            == "21-day free trial"
        )
    finally:
        stream.close()


def test_close_ends_streams_and_threads(config: Path) -> None:
    preview = PreviewServer(config, lambda: Build(files={"index.html": "<p>hi</p>"}), debounce_ms=50)
    preview.start()
    stream = EventStream(preview)
    assert stream.next() == "1"
    started = time.monotonic()
    preview.close()
    with pytest.raises((EOFError, ConnectionError)):
        stream.next()
    assert time.monotonic() - started < 10
    stream.close()


def test_a_crashing_build_becomes_an_error_page(config: Path) -> None:
    def broken() -> Build:
        raise RuntimeError("renderer bug <b>")

    preview = PreviewServer(config, broken)
    first = preview.start()
    try:
        assert not first.ok and "renderer bug" in first.message
        status, _, body = get(preview, "/")
        assert status == 500 and "renderer bug &lt;b&gt;" in body
    finally:
        preview.close()
