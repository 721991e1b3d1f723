"""`logs APP|all [--lines N] [--err] [--follow]` (runbook section 7: `pm2 logs --lines 100`),
from every selected host at once, each line prefixed with its host, app and stream.

PM2 says which files (operations.pm2.Pm2Processes); the lines are streamed as tail writes them
(Fabric/paramiko over SSH, a local process for @local) and every line passes through the
redactor, with the inventory's secrets registered before the first line is read. --follow
streams until Ctrl-C, which ends it cleanly (exit 0).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from operations.logs import (
    STREAMS,
    LineSplitter,
    LogFile,
    TailParser,
    select_files,
    ssh_connection,
    stream_local,
    stream_ssh,
    tail_command,
)
from operations.pm2 import Pm2Processes
from operations.privileges import as_user, connected_user
from playbooks.common import Options, secrets_for_hosts
from tpe_ops.errors import ConfigError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import HostResult, Printer, RunResult, Step, gather
from tpe_ops.secrets import redact
from tpe_ops.settings import pm2_apps

ALL = "all"
JOIN_SECONDS = 10


@dataclass
class LogsRequest:
    app: str
    lines: int = 100  # the runbook's `pm2 logs --lines 100`
    err_only: bool = False
    follow: bool = False

    @property
    def streams(self) -> tuple[str, ...]:
        return ("err",) if self.err_only else STREAMS


def app_names(loaded: LoadedInventory) -> list[str]:
    """The PM2 apps of the selected hosts, in inventory order."""
    names: list[str] = []
    for host in loaded.hosts:
        names += [a.name for a in pm2_apps(host.data) if a.name not in names]
    return names


def check_request(loaded: LoadedInventory, request: LogsRequest, options: Options) -> None:
    known = app_names(loaded)
    if request.app != ALL and request.app not in known:
        raise ConfigError(f"logs: no PM2 app '{request.app}' in the inventory",
                          f"choose one of: {', '.join([*known, ALL])}")
    if request.lines < 0:
        raise ConfigError(f"--lines {request.lines}: must be 0 or more",
                          "give the number of past lines to show, e.g. --lines 100")
    if request.follow and options.json:
        raise ConfigError("--json collects the lines into one document: it cannot --follow",
                          "drop --json (each line is prefixed with its host) or --follow")


class Output:
    """Prints (or, for --json, collects) the lines of every host; one writer at a time."""

    def __init__(self, collect: bool, stop: threading.Event) -> None:
        self.collect = collect
        self.stop = stop
        self.lock = threading.Lock()

    def line(self, result: HostResult, log: LogFile, text: str) -> None:
        text = redact(text)
        if self.collect:
            result.data["lines"].append({"app": log.app, "stream": log.stream, "line": text})
            return
        self.write(sys.stdout, f"[{result.name}] {log.label} | {text}")

    def note(self, host_name: str, text: str) -> None:
        """What tail itself says (a file missing, replaced, truncated): stderr."""
        if text.strip():
            self.write(sys.stderr, f"[{host_name}] {redact(text)}")

    def write(self, stream, text: str) -> None:
        with self.lock:
            try:
                print(text, file=stream, flush=True)
            except BrokenPipeError:  # `logs ... | head`: the reader is gone, so stop
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
                self.stop.set()


@dataclass
class HostPlan:
    host: Any
    files: list[LogFile]
    result: HostResult
    stderr: list[str] = field(default_factory=list)
    status: int | None = None
    parser: TailParser | None = None


def _plan(host, processes: Any, apps: list[str], request: LogsRequest) -> HostPlan:
    result = HostResult(host.name, data={"files": [], "lines": []})
    if isinstance(processes, Exception):
        result.error = str(processes)
        return HostPlan(host, [], result)
    wanted = [a.name for a in pm2_apps(host.data) if a.name in apps]
    files = select_files(processes, wanted, request.streams)
    running = {p["name"] for p in processes}
    for app in wanted:
        if app not in running:
            result.steps.append(Step(f"{app}: not in PM2's process list on this host "
                                     "(not started?)", "failed"))
    return HostPlan(host, files, result)


def _command(plan: HostPlan, request: LogsRequest) -> str:
    host = plan.host
    user = host.data.app_user
    sudo_user = None if connected_user(host) == user else user
    return tail_command([f.path for f in plan.files], request.lines, request.follow,
                        sudo_user)


def _stream(plan: HostPlan, request: LogsRequest, output: Output,
            stop: threading.Event) -> None:
    parser = plan.parser = TailParser(
        plan.files, lambda log, text: output.line(plan.result, log, text))
    lines = LineSplitter(parser.line)

    def note(text: str) -> None:
        plan.stderr.append(redact(text))
        output.note(plan.host.name, text)

    errors = LineSplitter(note)
    command = _command(plan, request)
    try:
        if plan.host.name.startswith("@local"):
            plan.status = stream_local(command, lines.feed, errors.feed, stop)
        else:
            conn = ssh_connection(plan.host.data, plan.host.name)
            plan.status = stream_ssh(conn, command, lines.feed, errors.feed, stop)
    except Exception as error:  # noqa: BLE001 - one host failing must not stop the others
        plan.result.error = redact(f"cannot stream: {error}")
    finally:
        lines.close()
        errors.close()


def _wait(threads: list[threading.Thread], stop: threading.Event) -> None:
    """Until every host's stream ends, or Ctrl-C: then stop them all and let them close."""
    def interrupted(signum, frame) -> None:
        if stop.is_set():  # a second Ctrl-C while closing: the default (KeyboardInterrupt)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        while any(t.is_alive() for t in threads) and not stop.is_set():
            stop.wait(0.2)
        deadline = time.monotonic() + JOIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(plan: HostPlan, request: LogsRequest, interrupted: bool) -> None:
    result = plan.result
    counts = plan.parser.counts if plan.parser else {}
    for log in plan.files:
        result.data["files"].append({"app": log.app, "stream": log.stream, "path": log.path,
                                     "lines": counts.get(log, 0)})
        count = counts.get(log, 0)
        result.steps.append(Step(f"{log.label}: {count} line{'' if count == 1 else 's'} "
                                 f"from {log.path}", "ok"))
    if plan.files and not interrupted and plan.status not in (0, None):
        problem = "; ".join(plan.stderr[-3:]) or f"tail exited {plan.status}"
        result.steps.append(Step("read the log files", "failed", problem))


def logs(loaded: LoadedInventory, options: Options, printer: Printer | None,
         request: LogsRequest) -> RunResult:
    started = time.monotonic()
    check_request(loaded, request, options)
    secrets_for_hosts(loaded)  # registered with the redactor before any line is read
    apps = app_names(loaded) if request.app == ALL else [request.app]
    found = gather(loaded, lambda h: h.get_fact(Pm2Processes, **as_user(h, h.data.app_user)))
    plans = [_plan(h, found[h.name], apps, request) for h in loaded.hosts]
    stop = threading.Event()
    output = Output(options.json, stop)
    threads = [threading.Thread(target=_stream, args=(p, request, output, stop), daemon=True)
               for p in plans if p.files]
    for thread in threads:
        thread.start()
    _wait(threads, stop)
    interrupted = stop.is_set()
    for plan in plans:
        _finish(plan, request, interrupted)
        for step in plan.result.steps:
            if printer:
                printer(plan.host.name, step)
    return RunResult(dry=False, hosts={p.host.name: p.result for p in plans},
                     seconds=time.monotonic() - started, exit_code=None,
                     extra={"app": request.app, "lines": request.lines,
                            "streams": list(request.streams), "follow": request.follow})
