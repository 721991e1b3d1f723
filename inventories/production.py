"""Production EC2 app servers (runbook section 1).

Addresses: TPE_PRODUCTION_HOSTS or a data file (see _addresses.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _addresses import addresses, ssh_data  # noqa: E402

app_servers = (addresses("production"), {**ssh_data(), "deploy_environment": "production"})
