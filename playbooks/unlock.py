"""`unlock [--force]`: clear the deploy lock (yours; anyone's with --force)."""

from __future__ import annotations

import getpass
import json

from operations import release as rel
from operations.privileges import as_user
from playbooks.common import Options
from tpe_ops.errors import OpsError
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import Printer, RunResult, gather, run_deploy


def _holder(lock: str) -> dict:
    try:
        return json.loads(lock)
    except json.JSONDecodeError:
        return {}


def unlock(loaded: LoadedInventory, options: Options, printer: Printer | None,
           force: bool) -> RunResult:
    states = gather(loaded, lambda h: h.get_fact(
        rel.ReleaseState, deploy_to=h.data.app_deploy_to, **as_user(h, h.data.app_user)))
    for name, state in states.items():
        if isinstance(state, Exception) or not state["lock"] or force:
            continue
        holder = _holder(state["lock"])
        if holder.get("user") != getpass.getuser():
            raise OpsError(
                f"host {name}: the deploy lock belongs to {state['lock']}",
                "make sure that deploy is dead, then: deploy.py unlock --force",
            )

    def clear() -> None:
        from pyinfra import host

        rel.run_script(rel.unlock_command(host.data.app_deploy_to, None),
                       name="Clear the deploy lock", **as_user(host, host.data.app_user))

    return run_deploy(loaded, clear, dry=options.dry, printer=printer)
