"""`logs` against the served host: the files PM2 names, streamed over SSH, secrets redacted,
--follow until SIGINT."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from tests.helpers import run_cli, run_json
from tests.hosts.conftest import DEPLOY_TO, start_cli

pytestmark = pytest.mark.hosts
LOGS = f"{DEPLOY_TO}/shared/logs"
OUT, ERR = f"{LOGS}/tpe-backend-out.log", f"{LOGS}/tpe-backend-error.log"


@pytest.fixture(scope="module")
def served(served_host):
    return served_host


def append(host, path: str, lines: list[str]) -> None:
    """Lines appended as the app appends (same file, same inode), through stdin."""
    host.ssh(f"cat >> {path}", input_text="".join(f"{line}\n" for line in lines))


def drop_lines(host, path: str, marker: str) -> None:
    """Remove our lines from a log in place (PM2 keeps writing to the same inode)."""
    host.ssh(f"grep -v -- {marker} {path} > /tmp/kept.log || true; cat /tmp/kept.log > {path}; "
             "rm -f /tmp/kept.log")


def shown(host, stdout: str, label: str) -> list[str]:
    prefix = f"[{host.name}] {label} | "
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


def test_last_n_lines_of_the_backend_out_and_error_logs(served):
    host, inventory, env = served
    append(host, OUT, [f"tpetest out line {i}" for i in range(5)])
    append(host, ERR, [f"tpetest err line {i}" for i in range(5)])
    done = run_cli("logs", "tpe-backend", "-i", inventory, "--lines", "3", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert shown(host, done.stdout, "tpe-backend/out") == ["tpetest out line 2",
                                                           "tpetest out line 3",
                                                           "tpetest out line 4"]
    assert shown(host, done.stdout, "tpe-backend/err") == ["tpetest err line 2",
                                                           "tpetest err line 3",
                                                           "tpetest err line 4"]


def test_err_only_and_the_files_pm2_names(served):
    host, inventory, env = served
    done = run_cli("logs", "tpe-backend", "-i", inventory, "--err", "--lines", "2", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not shown(host, done.stdout, "tpe-backend/out")
    assert shown(host, done.stdout, "tpe-backend/err") == host.ssh(
        f"tail -n 2 {ERR}").stdout.splitlines()
    code, payload, _ = run_json("logs", "all", "-i", inventory, "--lines", "1", env=env)
    assert code == 0
    files = {(f["app"], f["stream"]): f["path"] for f in payload["hosts"][host.name]["files"]}
    assert files == {("tpe-backend", "out"): OUT, ("tpe-backend", "err"): ERR,
                     ("tpe-frontend", "out"): f"{LOGS}/tpe-frontend-out.log",
                     ("tpe-frontend", "err"): f"{LOGS}/tpe-frontend-error.log"}


def test_unknown_app_is_bad_input_listing_the_apps(served):
    _, inventory, env = served
    done = run_cli("logs", "tpe-backnd", "-i", inventory, env=env)
    assert done.returncode == 2
    assert "tpe-backnd" in done.stderr and "tpe-backend, tpe-frontend, all" in done.stderr


def test_a_secret_in_the_log_is_redacted(served, postgres_db):
    host, inventory, env = served
    marker = f"tpetest-secret-{uuid.uuid4().hex[:8]}"
    append(host, ERR, [f"{marker} connect failed with password {postgres_db.password} (x)"])
    try:
        done = run_cli("logs", "tpe-backend", "-i", inventory, "--err", "--lines", "5",
                       env=env)
        code, payload, stderr = run_json("logs", "tpe-backend", "-i", inventory, "--err",
                                         env=env)
    finally:
        drop_lines(host, ERR, marker)
    assert done.returncode == 0 and code == 0
    assert f"{marker} connect failed with password *** (x)" in shown(
        host, done.stdout, "tpe-backend/err")
    assert f"{marker} connect failed with password *** (x)" in [
        line["line"] for line in payload["hosts"][host.name]["lines"]]
    for text in (done.stdout, done.stderr, json.dumps(payload), stderr):
        assert postgres_db.password not in text


def tails_on(host) -> str:
    return host.ssh("pgrep -af '[t]ail -v' || true").stdout.strip()


def test_follow_streams_new_lines_until_sigint(served, tmp_path):
    host, inventory, env = served
    proc = start_cli(tmp_path, "follow", "logs", "tpe-backend", "-i", inventory, "--lines",
                     "0", "--follow", env=env)
    line = f"tpetest follow {uuid.uuid4().hex[:8]}"
    try:
        deadline = time.monotonic() + 60
        while not tails_on(host):  # following: tail runs on the host
            assert proc.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "follow.err").read_text())
            time.sleep(0.2)
        append(host, OUT, [line])
        while f"tpe-backend/out | {line}" not in (tmp_path / "follow.out").read_text():
            assert time.monotonic() < deadline, "the new line never showed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    err = (tmp_path / "follow.err").read_text()
    assert code == 0 and "Traceback" not in err, err
    assert "tpe-backend/out: 1 line from" in (tmp_path / "follow.out").read_text()
    deadline = time.monotonic() + 10
    while tails_on(host) and time.monotonic() < deadline:  # the session's tail ends with it
        time.sleep(0.2)
    assert not tails_on(host)
