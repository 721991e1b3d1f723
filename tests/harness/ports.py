"""Per-host port slots that do not collide between hosts or between test runs.

Slot ``i`` (0..99) gives ssh 2200+i, backend 5100+i, frontend 3100+i and
redis 6400+i. A slot is held with an flock on ``$CACHE/ports/slot-NN.lock``
for the host's lifetime (released when the process dies), and every port of
the slot must be free on 127.0.0.1 when it is taken.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .common import HarnessError

SLOTS = 100
BASES = {"ssh": 2200, "backend": 5100, "frontend": 3100, "redis": 6400}


@dataclass
class PortSlot:
    """Four ports reserved for one host; ``release()`` frees them."""

    index: int
    ssh: int
    backend: int
    frontend: int
    redis: int
    _fd: int

    def release(self) -> None:
        """Drop the slot lock (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def allocate_slot(lock_dir: Path) -> PortSlot:
    """Reserve the first slot whose lock is free and whose ports are all unused."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(SLOTS):
        fd = _try_lock(lock_dir / f"slot-{index:02d}.lock")
        if fd is None:
            continue
        ports = {name: base + index for name, base in BASES.items()}
        if all(port_free(p) for p in ports.values()):
            return PortSlot(index=index, _fd=fd, **ports)
        os.close(fd)
    raise HarnessError(f"no free port slot among {SLOTS} (see {lock_dir})")
