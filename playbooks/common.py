"""What every playbook does before it changes anything: secrets, confirmation."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tpe_ops.errors import AbortedError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.secrets import load_secrets


@dataclass
class Options:
    inventory: str | None = None
    limit: str | None = None
    dry: bool = False
    yes: bool = False
    json: bool = False
    unverified_ok: bool = False  # deploy: production commit not verified on staging
    unhealthy_ok: bool = False  # deploy: hosts unhealthy before the deploy


def secrets_for_hosts(loaded: LoadedInventory) -> dict[str, dict[str, str]]:
    """Each host's secrets, loaded up front: a missing one stops the run before any change."""
    return {
        host.name: load_secrets(
            sorted(set(host.data.app_backend_secrets.values())),
            host.data.secrets_file,
            host.data.secrets_generate_missing,
        )
        for host in loaded.hosts
    }


def confirm_production(loaded: LoadedInventory, options: Options, action: str) -> None:
    """An inventory marked production asks before changing anything, unless --yes."""
    if options.dry or options.yes or not loaded.is_production:
        return
    names = ", ".join(h.name for h in loaded.hosts)
    question = f"{action} on PRODUCTION ({names}). Type 'yes' to continue: "
    if not sys.stdin.isatty():
        raise AbortedError(
            f"{loaded.path.name} is a production inventory and no terminal is attached to confirm",
            "pass --yes to confirm",
        )
    if input(question).strip().lower() != "yes":
        raise AbortedError("not confirmed: nothing was changed")
