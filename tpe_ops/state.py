"""Where the controller keeps what it learns between runs (health samples, benchmark history,
maintenance reports, locks it could not release): $TPE_STATE_DIR, default
~/.local/state/tpe-ops. Never in the repository."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR = Path(os.environ.get("TPE_STATE_DIR", "~/.local/state/tpe-ops")).expanduser()


def host_key(host_name: str) -> str:
    """A host name as a file name (`@local` -> `local`)."""
    return host_name.strip("@").replace("/", "_")
