"""Real test hosts: systemd-nspawn containers booted on overlays of the base image.

Every host shares the controller's network namespace, so each gets its own
ports (see ports.py); sshd listens on 127.0.0.1:<ssh_port>. Host keys are
generated per host and written to a known_hosts file shared by the pool, so
clients can use strict host key checking.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from .common import HarnessError, run, tail
from .image import BaseImage
from .ports import PortSlot, allocate_slot

SSH_USER = "ubuntu"
LOOPBACK = "127.0.0.1"
BOOT_TIMEOUT = 60.0


class SSHCommandError(subprocess.CalledProcessError):
    """A command run over SSH on a test host exited non-zero."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '')[-2000:]}"


class KnownHosts:
    """Thread-safe known_hosts file with one ``[127.0.0.1]:PORT`` entry per host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[int, str] = {}
        self._lock = threading.Lock()
        self._write()

    def set(self, port: int, public_key: str) -> None:
        """Record the host key (``ssh-ed25519 AAAA...``) served on ``port``."""
        key_type, key_b64 = public_key.split()[:2]
        with self._lock:
            self._entries[port] = f"[{LOOPBACK}]:{port} {key_type} {key_b64}"
            self._write()

    def remove(self, port: int) -> None:
        """Forget the entry for ``port``."""
        with self._lock:
            self._entries.pop(port, None)
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for _, line in sorted(self._entries.items())))
        tmp.replace(self.path)


@dataclass(eq=False)
class TestHost:
    """One booted (or bootable) test host; see the module doc."""

    __test__ = False  # not a pytest test class

    name: str
    ssh_port: int
    backend_port: int
    frontend_port: int
    redis_port: int
    root: Path
    image: BaseImage = field(repr=False)
    host_dir: Path = field(repr=False)
    known_hosts: KnownHosts = field(repr=False)
    slot: PortSlot | None = field(default=None, repr=False)
    boot_seconds: float | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """Console and nspawn output of every boot of this host."""
        return self.host_dir / "nspawn.log"

    @property
    def ssh_key(self) -> Path:
        """Private key accepted by the host's ``ubuntu`` user."""
        return self.image.ssh_key

    @property
    def known_hosts_file(self) -> Path:
        """known_hosts holding this host's real key."""
        return self.known_hosts.path

    @property
    def running(self) -> bool:
        """True while the host's systemd-nspawn process runs."""
        return self._proc is not None and self._proc.poll() is None

    def ssh_argv(self, known_hosts: Path | None = None) -> list[str]:
        """ssh client argv (without the remote command) with strict host key checking."""
        kh = known_hosts or self.known_hosts_file
        opts = {
            "IdentitiesOnly": "yes", "BatchMode": "yes", "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(kh), "GlobalKnownHostsFile": "/dev/null",
            "ConnectTimeout": "5", "LogLevel": "ERROR",
        }
        argv = ["ssh", "-F", "/dev/null", "-i", str(self.ssh_key), "-p", str(self.ssh_port)]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, f"{SSH_USER}@{LOOPBACK}"]

    def ssh(
        self,
        cmd: str,
        check: bool = True,
        timeout: float = 300.0,
        input_text: str | None = None,
        known_hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a shell string) as ``ubuntu`` on the host over SSH."""
        argv = [*self.ssh_argv(known_hosts), cmd]
        # Never the terminal's stdin. Pass `stdin` or `input`, not both: gevent's
        # subprocess (pyinfra imports gevent) refuses both even when stdin is None.
        feed = {"stdin": subprocess.DEVNULL} if input_text is None else {"input": input_text}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, **feed)
        if check and proc.returncode != 0:
            raise SSHCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Mount the overlay, configure the host, start it and wait for SSH."""
        if self.running:
            return
        started = time.monotonic()
        self._mount()
        public_key = self._configure()
        self.known_hosts.set(self.ssh_port, public_key)
        if self._port_open():
            raise HarnessError(f"{self.name}: port {self.ssh_port} answers before boot")
        self._start()
        self._wait_for_ssh(started + timeout)
        self.boot_seconds = time.monotonic() - started

    def poweroff(self, timeout: float = 60.0) -> None:
        """Shut down gracefully (``sudo systemctl poweroff``); kill after ``timeout``."""
        if not self.running:
            self._proc = None
            return
        try:
            answered = self.ssh("sudo systemctl poweroff", check=False, timeout=15).returncode
        except subprocess.TimeoutExpired:
            answered = -1
        # rc 0, or 255 when sshd went down first; anything else: no shutdown started
        self._stop(timeout if answered in (0, 255) else min(timeout, 5.0))

    def kill(self) -> None:
        """Stop the host at once, like a power cut: SIGKILL its init (whole PID namespace)."""
        if self.running:
            assert self._proc is not None
            _kill_container(self._proc.pid)
            self._proc.wait(30)
        self._proc = None
        (self.host_dir / "nspawn.pid").unlink(missing_ok=True)

    def reboot_cycle(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Power off, then boot again on the same overlay (state persists)."""
        self.poweroff()
        self.boot(timeout)

    def destroy(self) -> None:
        """Stop the host, unmount its overlay, remove its dirs and free its ports."""
        try:
            self.poweroff(timeout=30)
        finally:
            self._umount()
            _remove_tree(self.host_dir)
            self.known_hosts.remove(self.ssh_port)
            if self.slot is not None:
                self.slot.release()

    def _mount(self) -> None:
        if os.path.ismount(self.root):
            return
        upper, work = self.host_dir / "upper", self.host_dir / "work"
        for path in (upper, work, self.root):
            path.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.image.path},upperdir={upper},workdir={work}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, self.root])

    def _umount(self) -> None:
        for _ in range(10):
            if not os.path.ismount(self.root):
                return
            if run(["umount", self.root], check=False).returncode == 0:
                return
            time.sleep(0.5)
        run(["umount", "--lazy", self.root])

    def _write(self, rel: str, content: str, mode: int = 0o644) -> None:
        path = self.root / rel
        path.write_text(content)
        path.chmod(mode)

    def _configure(self) -> str:
        """Write per-host files into the overlay; return the host's public key."""
        self._write("etc/hostname", f"{self.name}\n")
        self._write("etc/hosts", f"{LOOPBACK} localhost {self.name}\n"
                    "::1 ip6-localhost ip6-loopback\n")
        self._write("etc/ssh/sshd_config.d/20-tpe-port.conf", f"Port {self.ssh_port}\n")
        machine_id = self.root / "etc/machine-id"
        if not machine_id.read_text().strip():
            self._write("etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        key = self.root / "etc/ssh/ssh_host_ed25519_key"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}",
                 "-f", key])
        return key.with_suffix(".pub").read_text()

    def _start(self) -> None:
        cmd = ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no",
               "--keep-unit", "-M", self.name, "--console=read-only",
               "--resolv-conf=copy-host"]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== boot {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        (self.host_dir / "nspawn.pid").write_text(f"{self._proc.pid}\n")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.ssh_port), timeout=1):
                return True
        except OSError:
            return False

    def _wait_for_ssh(self, deadline: float) -> None:
        last_error = "sshd never listened"
        while time.monotonic() < deadline:
            if not self.running:
                raise HarnessError(f"{self.name}: systemd-nspawn exited before SSH answered"
                                   f"\n{tail(self.log_path)}")
            if self._port_open():
                try:
                    proc = self.ssh("true", check=False, timeout=15)
                except subprocess.TimeoutExpired:
                    last_error = "ssh timed out"
                    continue
                if proc.returncode == 0:
                    return
                last_error = proc.stderr.strip()
            time.sleep(0.2)
        raise HarnessError(f"{self.name}: no SSH on port {self.ssh_port} after boot "
                           f"({last_error})\n{tail(self.log_path)}")

    def _stop(self, timeout: float) -> None:
        """Wait for nspawn to exit; SIGTERM (container poweroff), then SIGKILL."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.terminate()  # nspawn asks the container to power off
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None
        (self.host_dir / "nspawn.pid").unlink(missing_ok=True)


_LIVE_POOLS: weakref.WeakSet[HostPool] = weakref.WeakSet()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_nspawn(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except FileNotFoundError:
        return False
    return argv0.endswith(b"systemd-nspawn")


def _kill_container(nspawn_pid: int) -> None:
    """SIGKILL the container's init (child of nspawn): every process in it dies.

    Killing only systemd-nspawn would leave the container running, reparented.
    """
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text()
    except FileNotFoundError:
        return
    for child in children.split():
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _reap_host_dir(host_dir: Path) -> None:
    """Stop a leftover host of a dead run (its nspawn pid) and unmount it."""
    pid = _read_pid(host_dir / "nspawn.pid")
    if pid and _is_nspawn(pid):
        _kill_container(pid)
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    merged = host_dir / "merged"
    if os.path.ismount(merged):
        run(["umount", "--lazy", merged], check=False)


def reap_stale_runs(runs_dir: Path) -> None:
    """Clean up run dirs whose owning test process is gone (e.g. killed with -9)."""
    for run_dir in runs_dir.glob("*"):
        owner = _read_pid(run_dir / "owner.pid")
        if owner is None or _pid_alive(owner):
            continue
        for host_dir in (d for d in run_dir.iterdir() if d.is_dir()):
            _reap_host_dir(host_dir)
        _remove_tree(run_dir)


def _remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a (still) mounted filesystem."""
    run(["rm", "-rf", "--one-file-system", path], check=False)


def new_run_dir(cache: Path) -> Path:
    """A fresh per-run dir under ``$CACHE/runs`` (stale ones are reaped first)."""
    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    reap_stale_runs(runs)
    run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    (run_dir / "owner.pid").write_text(f"{os.getpid()}\n")
    return run_dir


class HostPool:
    """Creates hosts from one base image and destroys them all at the end."""

    def __init__(self, image: BaseImage, run_dir: Path | None = None,
                 prefix: str = "app") -> None:
        self.image = image
        self.run_dir = run_dir or new_run_dir(image.cache)
        self.known_hosts = KnownHosts(self.run_dir / "known_hosts")
        self.prefix = prefix
        self.hosts: list[TestHost] = []
        self._created = 0
        self._lock = threading.Lock()
        _LIVE_POOLS.add(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy_all()

    def new_host(self) -> TestHost:
        """Allocate ports and dirs for one more host (not booted)."""
        with self._lock:
            slot = allocate_slot(self.image.cache / "ports")
            self._created += 1
            name = f"{self.prefix}{self._created}"
            host_dir = self.run_dir / name
            host = TestHost(name=name, ssh_port=slot.ssh, backend_port=slot.backend,
                            frontend_port=slot.frontend, redis_port=slot.redis,
                            root=host_dir / "merged", image=self.image, host_dir=host_dir,
                            known_hosts=self.known_hosts, slot=slot)
            host_dir.mkdir()
            self.hosts.append(host)
        return host

    def make_hosts(self, n: int, timeout: float = BOOT_TIMEOUT, attempts: int = 2
                   ) -> list[TestHost]:
        """Boot ``n`` new hosts in parallel; on any failure destroy them all and boot new ones
        (a boot can fail on a loaded machine: systemd-user-sessions timing out leaves
        /run/nologin and sshd refuses logins), up to ``attempts`` times, then raise."""
        for _ in range(attempts):
            batch = [self.new_host() for _ in range(n)]
            with ThreadPoolExecutor(max_workers=max(n, 1)) as pool:
                futures = [pool.submit(host.boot, timeout) for host in batch]
            errors = [str(f.exception()) for f in futures if f.exception() is not None]
            if not errors:
                return batch
            self.destroy(batch)
        raise HarnessError(f"{len(errors)} of {n} hosts failed to boot ({attempts} attempts):\n"
                           + "\n---\n".join(errors))

    def destroy_all(self) -> None:
        """Destroy every host of the pool (in parallel) and remove the run dir."""
        self.destroy(list(self.hosts))
        _remove_tree(self.run_dir)
        _LIVE_POOLS.discard(self)

    def destroy(self, hosts: list[TestHost]) -> None:
        """Destroy ``hosts`` (in parallel) and forget them."""
        with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
            list(pool.map(_destroy_quietly, hosts))
        with self._lock:
            self.hosts = [h for h in self.hosts if h not in hosts]


def _destroy_quietly(host: TestHost) -> None:
    try:
        host.destroy()
    except Exception as exc:  # noqa: BLE001 - teardown must go on for the other hosts
        print(f"tpe-ops harness: destroying {host.name} failed: {exc}")


@atexit.register
def destroy_live_pools() -> None:
    """Destroy hosts still alive at interpreter exit (e.g. after an interrupt)."""
    for pool in list(_LIVE_POOLS):
        pool.destroy_all()


def install_signal_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so fixtures and atexit clean up."""
    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _interrupt)


def inventory_data(host: TestHost, extra_data: dict[str, object] | None = None
                   ) -> dict[str, object]:
    """pyinfra host data for ``host``: SSH with strict host keys, per-host ports."""
    return {
        "ssh_hostname": LOOPBACK,
        "ssh_port": host.ssh_port,
        "ssh_user": SSH_USER,
        "ssh_key": str(host.ssh_key),
        "ssh_known_hosts_file": str(host.known_hosts_file),
        "ssh_strict_host_key_checking": "yes",
        "app_backend_port": host.backend_port,
        "app_frontend_port": host.frontend_port,
        "redis_port": host.redis_port,
        "node_install_method": "distro",
        "node_major_version": 18,
        **(extra_data or {}),
    }


def write_inventory(
    hosts: list[TestHost],
    path: Path,
    extra_data: dict[str, object] | None = None,
    group: str = "app_servers",
    host_data: dict[str, dict[str, object]] | None = None,
) -> Path:
    """Write a pyinfra inventory file ``<group> = [(name, data), ...]`` (in the order of
    `hosts`; `host_data` adds data to single hosts by name); return its path."""
    if not group.isidentifier():
        raise ValueError(f"inventory group must be a Python identifier: {group!r}")
    lines = [f"# Generated by tests/harness for {len(hosts)} test host(s).", f"{group} = ["]
    for host in hosts:
        data = {**(extra_data or {}), **(host_data or {}).get(host.name, {})}
        lines.append(f"    ({host.name!r}, {inventory_data(host, data)!r}),")
    lines.append("]")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
