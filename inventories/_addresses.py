"""Host addresses for the EC2 inventories: from the environment or a data file, never the repo."""

import os
from pathlib import Path


def addresses(environment: str) -> list[str]:
    """Comma-separated TPE_<ENV>_HOSTS, else one address a line in ~/.config/tpe-ops/<env>.hosts."""
    variable = f"TPE_{environment.upper()}_HOSTS"
    data_file = Path(os.environ.get("TPE_HOSTS_DIR", "~/.config/tpe-ops")).expanduser()
    data_file = data_file / f"{environment}.hosts"
    if os.environ.get(variable):
        return [a.strip() for a in os.environ[variable].split(",") if a.strip()]
    if data_file.is_file():
        lines = (line.split("#")[0].strip() for line in data_file.read_text().splitlines())
        return [line for line in lines if line]
    raise RuntimeError(
        f"no {environment} hosts: set {variable}=10.0.0.5,10.0.0.6 or list them in {data_file}"
    )


def ssh_data() -> dict:
    """Strict host-key checking against our own known-hosts file (no StrictHostKeyChecking off)."""
    return {
        "ssh_user": "ubuntu",
        "ssh_known_hosts_file": str(Path("~/.config/tpe-ops/known_hosts").expanduser()),
        "ssh_strict_host_key_checking": "yes",
    }
