"""Who runs a command: the connected user, root, or the app user (through sudo or su)."""

from __future__ import annotations

import getpass
from typing import Any

from pyinfra.api.host import Host


def connected_user(host: Host) -> str:
    if host.name.startswith("@local"):
        return getpass.getuser()
    return host.data.get("ssh_user") or getpass.getuser()


def as_user(host: Host, user: str) -> dict[str, Any]:
    """Global arguments that run an operation as `user` (none if we already are)."""
    me = connected_user(host)
    if me == user:
        return {}
    if me == "root":  # root needs no sudo binary to become anyone
        return {"_su_user": user}
    return {"_sudo": True, "_sudo_user": user}


def as_root(host: Host) -> dict[str, Any]:
    return {} if connected_user(host) == "root" else {"_sudo": True}


def home_of(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"
