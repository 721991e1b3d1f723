"""Fixtures for tests against real hosts: the example app as a git repository, inventories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.hosts import write_inventory
from tests.helpers import PROJECT_ROOT

EXAMPLE_APP = PROJECT_ROOT / "examples" / "tpe-app"
IGNORE = shutil.ignore_patterns("node_modules", ".next", "*.log")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=tpe-tests", "-c", "user.email=t@localhost",
         *args], check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture(scope="session")
def app_repo(tmp_path_factory) -> Path:
    """The bundled example app committed into its own repository (branch main)."""
    repo = tmp_path_factory.mktemp("app-repo")
    shutil.copytree(EXAMPLE_APP, repo, dirs_exist_ok=True, ignore=IGNORE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "good: the example app")
    return repo


@pytest.fixture(scope="session")
def make_inventory(tmp_path_factory, app_repo, postgres_db):
    """Write an inventory for hosts, with the example app and the controller's PostgreSQL."""
    def make(hosts, name: str = "inventory", **extra) -> Path:
        data = {
            "deploy_environment": "test",
            "app_repo": str(app_repo),
            "app_source": "upload",
            "db_host": postgres_db.host,
            "db_port": postgres_db.port,
            "db_name": postgres_db.name,
            "db_user": postgres_db.user,
            "secrets_file": str(tmp_path_factory.getbasetemp() / "no-secrets.env"),
            "health_stabilisation_seconds": 3,
            **extra,
        }
        return write_inventory(hosts, tmp_path_factory.mktemp(name) / f"{name}.py", data)
    return make


@pytest.fixture(scope="session")
def secret_env(postgres_db) -> dict[str, str]:
    return {"TPE_DB_PASSWORD": postgres_db.password}
