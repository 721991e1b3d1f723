"""PostgreSQL 15 on the controller (127.0.0.1:5432), standing in for RDS.

Each test run gets its own role and database with a random password. The
password never appears on a command line or in output: the role is created
with a SCRAM verifier computed here, SQL goes to psql on stdin, and clients
read the password from a 0600 passfile (``PGPASSFILE``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import HarnessError, run

LOOPBACK = "127.0.0.1"
DB_PREFIX = "tpedb_test"
ROLE_PREFIX = "tpe_test"
STATEMENTS_CONF = "90-tpe-tests-pg-stat-statements.conf"


@dataclass(frozen=True)
class Cluster:
    """A Debian postgresql-common cluster (``pg_lsclusters``)."""

    version: str = "15"
    name: str = "main"
    port: int = 5432

    @property
    def conf_dir(self) -> Path:
        """Directory of postgresql.conf (conf.d/ is included from it)."""
        return Path("/etc/postgresql") / self.version / self.name


DEFAULT_CLUSTER = Cluster()


def cluster_status(cluster: Cluster = DEFAULT_CLUSTER) -> str | None:
    """'online' / 'down' for an existing cluster, None if it does not exist."""
    out = run(["pg_lsclusters", "--no-header"], check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields[:2] == [cluster.version, cluster.name]:
            return fields[3]
    return None


def wait_ready(cluster: Cluster = DEFAULT_CLUSTER, timeout: float = 30.0) -> None:
    """Wait until the cluster accepts TCP connections on 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cmd = ["pg_isready", "-q", "-h", LOOPBACK, "-p", str(cluster.port)]
        if run(cmd, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise HarnessError(f"PostgreSQL {cluster.version}/{cluster.name} not ready "
                       f"on {LOOPBACK}:{cluster.port}")


def ensure_cluster(cluster: Cluster = DEFAULT_CLUSTER) -> Cluster:
    """Create the cluster if missing, start it if down, wait until it is ready."""
    status = cluster_status(cluster)
    if status is None:
        run(["pg_createcluster", "--port", str(cluster.port), cluster.version, cluster.name])
    if status != "online":
        run(["pg_ctlcluster", cluster.version, cluster.name, "start"])
    wait_ready(cluster)
    return cluster


def drop_cluster(cluster: Cluster) -> None:
    """Stop and delete a cluster (for scratch clusters only)."""
    run(["pg_dropcluster", "--stop", cluster.version, cluster.name])


def psql(sql: str, db: str = "postgres", cluster: Cluster = DEFAULT_CLUSTER) -> str:
    """Run ``sql`` as the postgres OS user (peer auth, SQL on stdin); return stdout."""
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t",
           "-v", "ON_ERROR_STOP=1", "-p", str(cluster.port), "-d", db]
    proc = run(cmd, input_text=sql, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"psql failed in {db}: {_redact(proc.stderr.strip())}")
    return proc.stdout


def _redact(text: str) -> str:
    return re.sub(r"(PASSWORD\s+)'[^']*'", r"\1'***'", text, flags=re.IGNORECASE)


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier for ``password`` (as ``pg_authid`` stores it)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


@dataclass
class PostgresDB:
    """A per-run database and its owner role; ``password`` is never printed."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)
    cluster: Cluster = field(default=DEFAULT_CLUSTER, repr=False)

    def psql(self, sql: str) -> str:
        """Run ``sql`` in this database as the postgres superuser."""
        return psql(sql, db=self.name, cluster=self.cluster)

    def write_pgpass(self, path: Path) -> Path:
        """Write a libpq passfile (mode 0600) for this database; return its path."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{self.host}:{self.port}:{self.name}:{self.user}:{self.password}\n")
        path.chmod(0o600)
        return path

    def libpq_env(self, passfile: Path) -> dict[str, str]:
        """PG* variables for one client process (password via ``passfile``)."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": self.name,
                "PGUSER": self.user, "PGPASSFILE": str(passfile)}

    def enable_pg_stat_statements(self) -> None:
        """Preload pg_stat_statements (restarting the cluster if needed) and create it here."""
        enable_pg_stat_statements(self.cluster)
        self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements;")

    def drop(self) -> None:
        """Drop the database (closing its connections) and the role."""
        drop_database(self.name, self.user, self.cluster)


def drop_database(name: str, user: str, cluster: Cluster = DEFAULT_CLUSTER) -> None:
    """Drop a test database and its role if they exist."""
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);\n'
         f'DROP ROLE IF EXISTS "{user}";\n', cluster=cluster)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_databases(cluster: Cluster = DEFAULT_CLUSTER) -> None:
    """Drop test databases/roles left by runs whose process is gone."""
    names = psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{DB_PREFIX}\\_%';",
                 cluster=cluster).split()
    for name in names:
        match = re.fullmatch(rf"{DB_PREFIX}_(\d+)_([0-9a-f]+)", name)
        if match and not _pid_alive(int(match[1])):
            drop_database(name, f"{ROLE_PREFIX}_{match[1]}_{match[2]}", cluster)


def create_test_database(cluster: Cluster = DEFAULT_CLUSTER) -> PostgresDB:
    """Ensure the cluster runs; create a fresh role + database with a random password."""
    ensure_cluster(cluster)
    reap_stale_databases(cluster)
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    name, user = f"{DB_PREFIX}_{suffix}", f"{ROLE_PREFIX}_{suffix}"
    password = secrets.token_urlsafe(24)
    # CREATEDB as RDS's master user has it: `db verify-backup` restores into a scratch database.
    psql(f"CREATE ROLE \"{user}\" LOGIN CREATEDB PASSWORD '{scram_verifier(password)}';",
         cluster=cluster)
    psql(f'CREATE DATABASE "{name}" OWNER "{user}";', cluster=cluster)
    return PostgresDB(host=LOOPBACK, port=cluster.port, name=name, user=user,
                      password=password, cluster=cluster)


def enable_pg_stat_statements(cluster: Cluster = DEFAULT_CLUSTER) -> bool:
    """Add pg_stat_statements to shared_preload_libraries (conf.d file) and restart.

    Returns True if the cluster had to be restarted (it drops open connections).
    """
    current = psql("SHOW shared_preload_libraries;", cluster=cluster).strip()
    libs = [lib.strip() for lib in current.split(",") if lib.strip()]
    if "pg_stat_statements" in libs:
        return False
    conf = cluster.conf_dir / "conf.d" / STATEMENTS_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    value = ", ".join([*libs, "pg_stat_statements"])
    conf.write_text(f"# Written by the TPE Ops test harness.\n"
                    f"shared_preload_libraries = '{value}'\n"
                    f"pg_stat_statements.track = all\n")
    run(["pg_ctlcluster", cluster.version, cluster.name, "restart"])
    wait_ready(cluster)
    return True
