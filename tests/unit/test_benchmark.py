"""`benchmark` measurement on a real local HTTP server (loopback only, bounded)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from playbooks.benchmark import BenchOptions, endpoint_report, measure_url
from tpe_ops.judgement import Thresholds


class Slow(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        time.sleep(0.02)
        self.send_response(503 if self.path == "/down" else 200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_sequential_and_fixed_rate(server):
    sample = measure_url(server + "/ok", BenchOptions(requests=10), timeout=5)
    assert len(sample) == 10 and all(code == 200 and ms >= 20 for code, ms in sample)
    started = time.perf_counter()
    fixed = measure_url(server + "/ok", BenchOptions(requests=10, rate=50), timeout=5)
    assert len(fixed) == 10 and time.perf_counter() - started >= 0.18  # 10 at 50/s
    report = endpoint_report(server + "/ok", fixed, Thresholds(), baseline=5)
    assert report["success_rate_pct"] == 100 and report["p95_ms"] >= 20
    assert report["comparison"]["crosses_rollback"] is True  # 20+ ms vs a 5 ms baseline


def test_failures_count_against_success_rate(server):
    sample = measure_url(server + "/down", BenchOptions(requests=4, concurrency=2), timeout=5)
    report = endpoint_report(server + "/down", sample, Thresholds(), baseline=None)
    assert report["success_rate_pct"] == 0 and report["p95_ms"] is None
