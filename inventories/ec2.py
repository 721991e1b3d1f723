"""The app servers found on EC2 by tag (a dynamic inventory): `deploy.py health -i ec2`.

Configured by the environment (TPE_EC2_REGION, TPE_EC2_TAGS, TPE_EC2_ENVIRONMENT,
TPE_EC2_ADDRESS, TPE_EC2_CACHE_TTL, TPE_EC2_REFRESH, TPE_EC2_ALLOW_STALE, ...): see
tpe_ops/ec2_discovery.py and README.md. Hosts are named by address in a stable order (rolling
deploys go in inventory order) and checked against the same known-hosts file as production.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _addresses import ssh_data  # noqa: E402

from tpe_ops.ec2_discovery import inventory_hosts  # noqa: E402

_hosts, _environment = inventory_hosts()

app_servers = (_hosts, {**ssh_data(), "deploy_environment": _environment})
