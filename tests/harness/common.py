"""Small helpers shared by the harness modules: cache dir, locks, commands."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

DEFAULT_CACHE = "/var/cache/tpe-ops-tests"
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "ssh", "ssh-keygen", "mount", "umount")


class HarnessError(RuntimeError):
    """The harness could not build, boot or reach a test host."""


def cache_dir() -> Path:
    """Return the harness cache dir (``$TPE_TEST_CACHE``), creating it."""
    path = Path(os.environ.get("TPE_TEST_CACHE") or DEFAULT_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (between processes and threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float | None = None,
    input_text: str | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; raise HarnessError with stderr on failure."""
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise HarnessError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"{proc.stderr[-3000:]}{proc.stdout[-2000:]}"
        )
    return proc


def unavailable_reason() -> str | None:
    """Say why real test hosts cannot run on this machine, or None if they can."""
    if os.geteuid() != 0:
        return "real test hosts need root (overlay mounts, systemd-nspawn)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools {missing}: run .ci/install-test-deps.sh"
    if "overlay" not in Path("/proc/filesystems").read_text():
        run(["modprobe", "overlay"], check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem"
    return None


def in_ci(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True when running under CI (``CI=true``): harness problems must fail, not skip."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in {"true", "1", "yes"}


def tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
