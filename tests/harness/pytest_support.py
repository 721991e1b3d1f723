"""Pytest glue shared by conftest.py and the tests: fail-in-CI / skip-elsewhere."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import NoReturn

import pytest

from .common import in_ci
from .hosts import TestHost

MakeHosts = Callable[[int], list[TestHost]]


def harness_unavailable(reason: str) -> NoReturn:
    """Fail under CI (host tests must run there), skip elsewhere."""
    if in_ci():
        pytest.fail(f"test-host harness cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"test-host harness unavailable: {reason}")


def postgres_unavailable_reason() -> str | None:
    """Why the controller's PostgreSQL cannot be used, or None."""
    missing = [t for t in ("pg_ctlcluster", "pg_createcluster", "pg_isready", "psql",
                           "runuser") if shutil.which(t) is None]
    if missing:
        return f"missing {missing}: run .ci/install-test-deps.sh"
    if os.geteuid() != 0:
        return "the controller's PostgreSQL is managed as root (pg_ctlcluster, runuser)"
    return None
