"""Run a pyinfra deploy in-process (pyinfra's API) and collect per-host, per-step results.

Each call uses a fresh State, so a playbook can run phases (build, switch, verify) and decide
between them. `dry=True` collects facts and reports what would change, changing nothing.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from pyinfra.api import BaseStateCallback, Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.context import ctx_host, ctx_state

from tpe_ops.errors import HostError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.secrets import RedactingFilter, redact


@dataclass
class Step:
    name: str
    status: str  # changed | ok | failed | would-change
    detail: str = ""
    output: list[str] = field(default_factory=list)  # last lines of stdout, redacted
    seconds: float = 0.0


@dataclass
class HostResult:
    name: str
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # command-specific figures for --json

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.status != "failed" for s in self.steps)

    @property
    def changed(self) -> int:
        return sum(s.status in ("changed", "would-change") for s in self.steps)


@dataclass
class RunResult:
    dry: bool
    hosts: dict[str, HostResult]
    seconds: float = 0.0
    headline: str | None = None  # printed first (e.g. a Nagios status line)
    exit_code: int | None = None  # when the command has its own codes (health: 0/1/2/3)
    extra: dict[str, Any] = field(default_factory=dict)  # command-wide figures for --json

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts.values())


Printer = Callable[[str, Step], None]


def quiet_pyinfra() -> None:
    """pyinfra's own chatter off (we print a line per step); errors stay, redacted."""
    logger = logging.getLogger("pyinfra")
    logger.setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers + logger.handlers:
        handler.addFilter(RedactingFilter())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter("    %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _op_name(state: State, op_hash: str) -> str:
    names = state.get_op_meta(op_hash).names
    name = ", ".join(sorted(names)) if names else op_hash
    # Drop the outermost deploy name: every step of a run shares it.
    return name.split(" | ", 1)[1] if " | " in name else name


def _lines(meta, stream: str) -> list[str]:
    try:
        lines = getattr(meta, f"{stream}_lines")
    except RuntimeError:  # not executed: no output
        return []
    return [redact(line.rstrip()) for line in lines[-20:] if line.strip()]


def _step(name: str, meta) -> Step:
    out = _lines(meta, "stdout")
    if not meta.did_succeed():
        problem = _lines(meta, "stderr") or out
        return Step(name, "failed", "; ".join(problem[-3:]), out)
    changed = meta.did_change()
    return Step(name, "changed" if changed else "ok", out[-1] if changed and out else "", out)


class _StepRecorder(BaseStateCallback):
    def __init__(self, results: dict[str, HostResult], printer: Printer | None) -> None:
        self.results = results
        self.printer = printer
        self.recorded: set[tuple[str, str]] = set()
        self.started: dict[str, float] = {}

    def operation_start(self, state, op_hash):
        self.started[op_hash] = time.monotonic()

    def _record(self, host: Host, step: Step) -> None:
        self.results[host.name].steps.append(step)
        if self.printer:
            self.printer(host.name, step)

    def operation_end(self, state, op_hash):
        # Called once every host has finished this operation: results are complete now.
        for host, ops in state.ops.items():
            op_data = ops.get(op_hash)
            if op_data is None or host.name not in self.results:
                continue
            meta = op_data.operation_meta
            if not meta.is_complete() or (host.name, op_hash) in self.recorded:
                continue
            self.recorded.add((host.name, op_hash))
            step = _step(_op_name(state, op_hash), meta)
            step.seconds = round(time.monotonic() - self.started.get(op_hash, time.monotonic()), 3)
            self._record(host, step)

    def sweep(self, state) -> None:
        """Record what operation_end missed: pyinfra raises before calling it when the last
        remaining host fails."""
        for op_hash in state.op_meta:
            self.operation_end(state, op_hash)

    def host_connect_error(self, state, host, error):
        self.results[host.name].error = redact(f"cannot connect: {error}")


def _plan(state: State, host: Host, results: dict[str, HostResult], printer: Printer | None):
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            op_data = state.ops[host].get(op_hash)
            if op_data is None:
                continue
            will_change = op_data.operation_meta.will_change
            step = Step(_op_name(state, op_hash), "would-change" if will_change else "ok")
            results[host.name].steps.append(step)
            if printer:
                printer(host.name, step)


def run_deploy(
    loaded: LoadedInventory,
    deploy_func: Callable[..., Any],
    *args: Any,
    dry: bool = False,
    printer: Printer | None = None,
    **kwargs: Any,
) -> RunResult:
    """Connect to the selected hosts, add the deploy, then run it (or plan it with dry)."""
    started = time.monotonic()
    quiet_pyinfra()
    loaded = loaded.fresh()
    results = {host.name: HostResult(host.name) for host in loaded.hosts}
    config = Config(DIFF=False, FAIL_PERCENT=100, CONNECT_TIMEOUT=10)
    # Facts are read when an operation is added and again when it runs; a real run only
    # needs the second (half the SSH round trips), a dry run only the first.
    state = State(loaded.inventory, config, check_for_changes=dry, initial_limit=loaded.hosts)
    recorder = _StepRecorder(results, printer)
    state.add_callback_handler(recorder)
    try:
        _connect(state)
        _note_unreachable(state, loaded.hosts, results)
        active = [h for h in loaded.hosts if h in state.active_hosts]
        if active:
            add_deploy(state, deploy_func, *args, host=active, **kwargs)
            if dry:
                for host in active:
                    _plan(state, host, results, printer)
            else:
                try:
                    _run(state)
                finally:
                    recorder.sweep(state)
    finally:
        disconnect_all(state)
    return RunResult(dry=dry, hosts=results, seconds=time.monotonic() - started)


def _note_unreachable(state: State, hosts: list[Host], results: dict[str, HostResult]) -> None:
    for host in hosts:
        if host not in state.active_hosts and results[host.name].error is None:
            results[host.name].error = "cannot connect (check address, SSH port, key, known_hosts)"


def _connect(state: State) -> None:
    """Connect to every host; unreachable ones are reported per host, not raised. A host
    already connected earlier in this process keeps its connection, if it still answers."""
    hosts = [h for h in state.inventory if state.is_host_in_limit(h)]
    gevent.joinall([gevent.spawn(_reuse_connection, h) for h in hosts])
    try:
        connect_all(state)
    except PyinfraError as error:
        if "No hosts remaining" not in str(error):
            raise
    for host in state.active_hosts:
        key = _pool_key(host)
        if key is not None and getattr(host.connector, "client", None) is not None:
            _SSH_POOL[key] = host.connector.client


# One SSH connection per host for the life of the process: a deploy runs a dozen phases and
# reads, each with its own pyinfra State, and a handshake per host per phase cost the
# controller more CPU than the commands themselves on a fleet.
_SSH_POOL: dict[tuple, Any] = {}
PROBE_SECONDS = 5.0  # a pooled connection that does not answer a keepalive in time is dropped


def _pool_key(host: Host) -> tuple | None:
    if not isinstance(host.connector, SSHConnector):
        return None
    d = host.data
    return (host.name, *(d.get(k) for k in ("ssh_hostname", "ssh_port", "ssh_user", "ssh_key",
                                            "ssh_known_hosts_file")))


def _reuse_connection(host: Host) -> None:
    key = _pool_key(host)
    client = _SSH_POOL.pop(key, None) if key is not None else None
    if client is None:
        return
    if _answers(client):
        host.connector.client = client
        host.connected = True  # connect_all activates it without a new handshake
    else:
        client.close()


def _answers(client: Any) -> bool:
    """The connection is up and the host answers a keepalive request (OpenSSH refuses it,
    which is an answer) within PROBE_SECONDS: a dead peer that sent no reset is caught here."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return False
    try:
        with gevent.Timeout(PROBE_SECONDS):
            transport.global_request("keepalive@openssh.com", wait=True)
    except gevent.Timeout:
        return False
    return transport.is_active()


@atexit.register
def _close_pool() -> None:
    for client in _SSH_POOL.values():
        client.close()
    _SSH_POOL.clear()


def _run(state: State) -> None:
    try:
        run_ops(state)
    except PyinfraError as error:
        if "No hosts remaining" not in str(error):
            raise


def gather(loaded: LoadedInventory, read: Callable[[Host], Any]) -> dict[str, Any]:
    """Read facts from each selected host (no operations): {host name: read(host)}.

    A host that cannot be reached maps to an Exception describing why.
    """
    quiet_pyinfra()
    loaded = loaded.fresh()
    values: dict[str, Any] = {}
    state = State(loaded.inventory, Config(FAIL_PERCENT=100, CONNECT_TIMEOUT=10),
                  initial_limit=loaded.hosts)
    def read_one(host: Host) -> Any:
        with ctx_state.use(state), ctx_host.use(host):
            try:
                return read(host)
            except PyinfraError as error:  # a fact command failed on that host
                return HostError(f"host {host.name}: {error}")

    try:
        _connect(state)
        active = [h for h in loaded.hosts if h in state.active_hosts]
        # Hosts in parallel (pyinfra's gevent pool), facts of one host in order.
        jobs = {host.name: state.pool.spawn(read_one, host) for host in active}
        gevent.joinall(list(jobs.values()))
        for host in loaded.hosts:
            job = jobs.get(host.name)
            values[host.name] = job.get() if job is not None else ConnectionError(
                "cannot connect (check address, SSH port, key, known_hosts)")
    finally:
        disconnect_all(state)
    return values
