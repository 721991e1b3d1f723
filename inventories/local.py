"""The embedded default target: this machine, through pyinfra's @local connector.

A new user runs the main job with no servers. The local target provisions its own Redis and a
local PostgreSQL as a stand-in for RDS, deploys the bundled example app from this repository,
and generates its own local-only secrets (~/.config/tpe-ops/local-secrets.env, mode 0600).
"""

import getpass
import shutil
import subprocess
from pathlib import Path

_user = getpass.getuser()
_home = Path.home()
_repo = Path(__file__).resolve().parents[1]


def _installed_node_major() -> int:
    """Keep the Node.js this machine already has; else Debian's (18)."""
    if not shutil.which("node"):
        return 18
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    return int(version.lstrip("v").split(".")[0] or 18)


app_servers = [
    (
        "@local",
        {
            "deploy_environment": "local",
            "app_user": _user,
            "app_deploy_to": str(_home / ".local/share/tpe-ops/The-Power100-Experience"),
            "app_repo": str(_repo),
            "app_repo_subdir": "examples/tpe-app",
            "app_branch": "HEAD",
            "app_source": "upload",
            "app_node_env": "production",
            "node_install_method": "distro",
            "node_major_version": _installed_node_major(),
            "db_provision_local": True,
            "db_user": "tpe_local",
            "db_name": "tpedb_local",
            "secrets_file": str(_home / ".config/tpe-ops/local-secrets.env"),
            "secrets_generate_missing": True,
        },
    ),
]
