"""A bounded request loop against apps on 127.0.0.0/8, to count failed requests during a deploy.

    with RequestLoop([backend_health, frontend_page, static_asset], rate=20) as loop:
        ...deploy...
    assert loop.failures == 0, loop.summary()

One thread per URL sends GET requests at ``rate`` per second (each on a new connection, so
refused connections count), until the block ends or ``max_seconds`` have passed. A request
fails on a connection error, a timeout or a status outside 2xx. Only loopback targets are
accepted: tests never send traffic anywhere else.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

STATIC_ASSET = re.compile(r"""["'](/_next/static/[^"'?#\s]+\.(?:js|css))["']""")


def check_loopback(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL on 127.0.0.0/8; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs on 127.0.0.0/8: {url!r}")
    try:
        address = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise ValueError(f"not a loopback address (use 127.x.y.z, not a name): {url!r}") from None
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"refusing a target outside 127.0.0.0/8: {url!r}")
    if parts.port is None:
        raise ValueError(f"give the port explicitly: {url!r}")
    path = parts.path or "/"
    return str(address), parts.port, f"{path}?{parts.query}" if parts.query else path


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a new connection: (status, body). Raises OSError on connection errors."""
    host, port, path = check_loopback(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def static_asset_url(frontend_url: str, timeout: float = 10.0) -> str:
    """The URL of a Next.js static asset (/_next/static/...) that the page at
    ``frontend_url`` references."""
    status, body = get(frontend_url, timeout)
    if status != 200:
        raise AssertionError(f"{frontend_url} answered {status}")
    match = STATIC_ASSET.search(body.decode("utf-8", "replace"))
    if not match:
        raise AssertionError(f"no /_next/static/ asset referenced by {frontend_url}")
    host, port, _ = check_loopback(frontend_url)
    return f"http://{host}:{port}{match.group(1)}"


@dataclass
class UrlStats:
    url: str
    ok: int = 0
    failed: int = 0
    max_seconds: float = 0.0
    problems: Counter = field(default_factory=Counter)  # "503", "ConnectionRefusedError", ...
    first_failure: float | None = None  # seconds since the loop started
    last_failure: float | None = None


class RequestLoop:
    """Context manager: GET each URL at ``rate`` requests per second until the block ends
    (at most ``max_seconds``); then ``requests``, ``failures`` and ``summary()``."""

    def __init__(self, urls: list[str], rate: float = 20.0, max_seconds: float = 300.0,
                 timeout: float = 5.0) -> None:
        if not urls:
            raise ValueError("no URLs")
        if not 0 < rate <= 200:
            raise ValueError("rate must be in (0, 200] requests per second per URL")
        if not 0 < max_seconds <= 1800:
            raise ValueError("max_seconds must be in (0, 1800]")
        for url in urls:
            check_loopback(url)
        self.urls = list(urls)
        self.rate = rate
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.stats = {url: UrlStats(url) for url in urls}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.seconds = 0.0
        self.hit_time_limit = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        for url in self.urls:
            thread = threading.Thread(target=self._loop, args=(url,), daemon=True,
                                      name=f"request-loop {url}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.seconds = time.monotonic() - self._started

    def _loop(self, url: str) -> None:
        interval = 1.0 / self.rate
        deadline = self._started + self.max_seconds
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                self.hit_time_limit = True
                return
            self._one(url)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one(self, url: str) -> None:
        began = time.monotonic()
        problem = None
        try:
            status, _ = get(url, self.timeout)
            if not 200 <= status < 300:
                problem = str(status)
        except (OSError, http.client.HTTPException) as error:
            problem = type(error).__name__
        took = time.monotonic() - began
        with self._lock:
            stats = self.stats[url]
            stats.max_seconds = max(stats.max_seconds, took)
            if problem is None:
                stats.ok += 1
                return
            stats.failed += 1
            stats.problems[problem] += 1
            at = round(began - self._started, 2)
            stats.first_failure = at if stats.first_failure is None else stats.first_failure
            stats.last_failure = at

    @property
    def requests(self) -> int:
        return sum(s.ok + s.failed for s in self.stats.values())

    @property
    def failures(self) -> int:
        return sum(s.failed for s in self.stats.values())

    def summary(self) -> str:
        lines = [f"{self.requests} requests in {self.seconds:.1f} s, {self.failures} failed"
                 + (" (stopped at the time limit)" if self.hit_time_limit else "")]
        for s in self.stats.values():
            line = f"  {s.url}: {s.ok} ok, {s.failed} failed, slowest {s.max_seconds:.2f} s"
            if s.failed:
                line += (f", {dict(s.problems)} between {s.first_failure} s and "
                         f"{s.last_failure} s")
            lines.append(line)
        return "\n".join(lines)
