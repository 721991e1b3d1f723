"""Staging EC2 app servers. Addresses: TPE_STAGING_HOSTS or a data file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _addresses import addresses, ssh_data  # noqa: E402

app_servers = (addresses("staging"), {**ssh_data(), "deploy_environment": "staging"})
