"""The PM2 logs of an app, for `logs` (runbook section 7): which files (from PM2 itself), the
tail command, and streaming its output from a host (SSH through Fabric/paramiko, or a local
process for @local) line by line.

PM2 knows where each process logs (`pm_out_log_path` / `pm_err_log_path` in `pm2 jlist`; cluster
instances without merge_logs log to `-N` files): nothing here guesses a path.
"""

from __future__ import annotations

import codecs
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric import Connection
from pyinfra.api import FactBase
from pyinfra.connectors.sshuserclient.client import get_missing_host_key_policy

from operations.pm2 import Pm2Processes
from operations.privileges import as_user
from tpe_ops.settings import pm2_apps

q = shlex.quote
STREAMS = ("out", "err")
# Where `pm2 jlist` (operations.pm2.parse_jlist) says each stream of a process goes.
STREAM_FIELDS = {"out": "pm_out_log_path", "err": "pm_err_log_path"}
POLL_SECONDS = 0.05


# --- which files ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LogFile:
    app: str
    stream: str  # out | err
    path: str
    label: str  # what prefixes its lines: app/stream, or app#pm_id/stream per instance file


def select_files(processes: list[dict[str, Any]], apps: list[str],
                 streams: tuple[str, ...]) -> list[LogFile]:
    """The log files of `apps` (in that order), each stream in `streams`, each path once."""
    files: list[LogFile] = []
    for app in apps:
        procs = [p for p in processes if p["name"] == app]
        for stream in streams:
            paths: dict[str, Any] = {}
            for proc in procs:
                if proc.get(STREAM_FIELDS[stream]):
                    paths.setdefault(proc[STREAM_FIELDS[stream]], proc["pm_id"])
            for path, pm_id in paths.items():
                name = app if len(paths) == 1 else f"{app}#{pm_id}"
                files.append(LogFile(app, stream, path, f"{name}/{stream}"))
    return files


SEPARATOR = "==> tpe-ops:"


class LogTail(FactBase):
    """The last `lines` lines of each file: {path: [lines]} (a missing file: no lines)."""

    def command(self, paths: list[str], lines: int) -> str:
        script = [f"echo {q(SEPARATOR + path)}; tail -n {int(lines)} -- {q(path)} 2>/dev/null"
                  for path in paths]
        return "; ".join([*script, "true"])

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict[str, list[str]]:
        tails: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output:
            if line.startswith(SEPARATOR):
                current = tails.setdefault(line[len(SEPARATOR):], [])
            elif current is not None:
                current.append(line)
        return tails


def read_error_tails(host, lines: int) -> dict[str, list[str]]:
    """{app: the last `lines` lines of its error log(s)} for every PM2 app of the inventory,
    from the files PM2 names (the daily checklist and `diagnose` read them)."""
    app = as_user(host, host.data.app_user)
    apps = [a.name for a in pm2_apps(host.data)]
    files = select_files(host.get_fact(Pm2Processes, **app), apps, ("err",))
    tails = host.get_fact(LogTail, paths=sorted({f.path for f in files}), lines=lines, **app)
    return {name: [line for f in files if f.app == name for line in tails.get(f.path, [])]
            for name in apps}


# --- the command ---------------------------------------------------------------------------

def tail_command(paths: list[str], lines: int, follow: bool, sudo_user: str | None = None
                 ) -> str:
    """`tail -v` (a `==> path <==` header names the file of the lines after it). Following,
    tail runs in the background until our end of the session closes: `cat` sees end of input,
    then stops tail, so no tail outlives the command, even on a quiet log."""
    files = " ".join(q(p) for p in paths)
    if follow:
        script = (f"tail -v -n {int(lines)} -F -- {files} & t=$!; cat >/dev/null; "
                  'kill "$t" 2>/dev/null; exit 0')
    else:
        script = f"tail -v -n {int(lines)} -- {files}"
    if sudo_user:
        return f"sudo -n -u {q(sudo_user)} -- sh -c {q(script)}"
    return script


class LineSplitter:
    """Bytes in, whole text lines out (a line is never cut, so redaction sees all of it)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""

    def feed(self, data: bytes) -> None:
        self.pending += self.decoder.decode(data)
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.emit(line.rstrip("\r"))

    def close(self) -> None:
        self.pending += self.decoder.decode(b"", final=True)
        if self.pending:
            self.emit(self.pending.rstrip("\r"))
        self.pending = ""


class TailParser:
    """Lines of `tail -v` output -> (LogFile, line). Headers switch the current file; the
    blank line tail puts before a header is dropped (with every other blank line)."""

    def __init__(self, files: list[LogFile], emit: Callable[[LogFile, str], None]) -> None:
        self.headers = {f"==> {f.path} <==": f for f in files}
        self.emit = emit
        self.current: LogFile | None = None
        self.counts = {f: 0 for f in files}

    def line(self, text: str) -> None:
        if text in self.headers:
            self.current = self.headers[text]
        elif text.strip() and self.current is not None:
            self.counts[self.current] += 1
            self.emit(self.current, text)


# --- streaming -----------------------------------------------------------------------------

def ssh_connection(data: Any, name: str, timeout: float = 10) -> Connection:
    """A Fabric connection with the inventory's SSH settings (as pyinfra connects): address,
    port, user, key, and host keys checked against ssh_known_hosts_file with pyinfra's
    policy for ssh_strict_host_key_checking (its default: accept-new)."""
    connect_kwargs: dict[str, Any] = dict(data.get("ssh_paramiko_connect_kwargs") or {})
    if data.get("ssh_key"):
        connect_kwargs.update(key_filename=str(Path(data.get("ssh_key")).expanduser()),
                              allow_agent=False, look_for_keys=False)
        if data.get("ssh_key_password"):
            connect_kwargs["passphrase"] = data.get("ssh_key_password")
    conn = Connection(host=data.get("ssh_hostname") or name, user=data.get("ssh_user"),
                      port=data.get("ssh_port"), connect_timeout=int(timeout),
                      connect_kwargs=connect_kwargs)
    known_hosts = Path(data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts").expanduser()
    if known_hosts.is_file():
        conn.client.load_host_keys(str(known_hosts))
    policy = data.get("ssh_strict_host_key_checking") or "accept-new"
    conn.client.set_missing_host_key_policy(get_missing_host_key_policy(policy))
    return conn


Feed = Callable[[bytes], None]


def stream_ssh(conn: Connection, command: str, out: Feed, err: Feed,
               stop: threading.Event) -> int | None:
    """Run `command` on the host, feeding its output as it comes, until it ends (its exit
    status) or `stop` is set (None: our end closed the session)."""
    conn.open()
    channel = conn.transport.open_session()
    try:
        channel.exec_command(command)
        while not stop.is_set():
            done = channel.exit_status_ready()  # before draining: no output comes after it
            busy = False
            if channel.recv_ready():
                out(channel.recv(65536))
                busy = True
            if channel.recv_stderr_ready():
                err(channel.recv_stderr(65536))
                busy = True
            if done and not busy:
                return channel.recv_exit_status()
            if not busy:
                stop.wait(POLL_SECONDS)
        return None
    finally:
        channel.close()
        conn.close()


def _pump(pipe, feed: Feed) -> None:
    for chunk in iter(pipe.readline, b""):
        feed(chunk)


def stream_local(command: str, out: Feed, err: Feed, stop: threading.Event) -> int | None:
    """The same on this machine (@local): a shell process, stopped by closing its input."""
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    readers = [threading.Thread(target=_pump, args=(pipe, feed), daemon=True)
               for pipe, feed in ((proc.stdout, out), (proc.stderr, err))]
    for reader in readers:
        reader.start()
    stopped = False
    while proc.poll() is None:
        if stop.wait(POLL_SECONDS):
            stopped = True
            proc.stdin.close()  # `cat` ends, tail is stopped
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            break
    for reader in readers:
        reader.join(5)
    return None if stopped else proc.returncode
