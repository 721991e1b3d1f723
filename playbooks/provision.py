"""`provision`: converge hosts to the declared state (runbook section 1)."""

from __future__ import annotations

from operations.provision import provision_host
from playbooks.common import Options, confirm_production, secrets_for_hosts
from tpe_ops.inventory import LoadedInventory
from tpe_ops.runner import Printer, RunResult, run_deploy


def provision(loaded: LoadedInventory, options: Options, printer: Printer | None) -> RunResult:
    secrets = secrets_for_hosts(loaded)
    confirm_production(loaded, options, "provision")
    return run_deploy(loaded, provision_host, secrets, dry=options.dry, printer=printer)
