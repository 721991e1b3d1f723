"""A local PostgreSQL server as a stand-in for RDS (the embedded local target).

The role's password never goes on a command line: the controller sends a SCRAM-SHA-256
verifier, and checks the stored one against the secret to stay idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_source
import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import apt

from operations.privileges import as_root, as_user
from operations.system import service

SCRAM_ITERATIONS = 4096


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The string PostgreSQL stores for a SCRAM-SHA-256 password."""
    salt = salt or random_source.token_bytes(16)
    stored, server = _scram_keys(password, salt, SCRAM_ITERATIONS)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored)}:{b64(server)}"


def verifier_matches(verifier: str | None, password: str) -> bool:
    try:
        _, rest = verifier.split("$", 1)  # type: ignore[union-attr]
        params, keys = rest.split("$")
        iterations, salt = params.split(":")
        stored, server = keys.split(":")
    except (AttributeError, ValueError):
        return False
    expected = _scram_keys(password, base64.b64decode(salt), int(iterations))
    return expected == (base64.b64decode(stored), base64.b64decode(server))


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresRoleVerifier(FactBase):
    """The stored password verifier of a role ('' if it has none, None if no such role)."""

    def command(self, role: str) -> str:
        query = (
            "SELECT 'role:' || coalesce(rolpassword, '') FROM pg_authid "
            f"WHERE rolname = {_sql_literal(role)}"
        )
        return f"psql -XtAc {shlex.quote(query)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            if line.startswith("role:"):
                return line[len("role:"):]
        return None


class PostgresDatabaseOwner(FactBase):
    def command(self, database: str) -> str:
        query = (
            "SELECT 'db:' || pg_get_userbyid(datdba) FROM pg_database "
            f"WHERE datname = {_sql_literal(database)}"
        )
        return f"psql -XtAc {shlex.quote(query)} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        for line in output:
            if line.startswith("db:"):
                return line[len("db:"):]
        return None


@operation()
def role(role_name: str, password: str):
    """A login role whose password is `password` (compared through its SCRAM verifier)."""
    current = host.get_fact(PostgresRoleVerifier, role=role_name)
    if current is not None and verifier_matches(current, password):
        host.noop(f"role {role_name} exists with the configured password")
        return
    verb = "CREATE" if current is None else "ALTER"
    verifier = _sql_literal(scram_verifier(password))
    sql = f'{verb} ROLE "{role_name}" LOGIN PASSWORD {verifier}'
    yield f"psql -Xv ON_ERROR_STOP=1 -c {shlex.quote(sql)}"


@operation()
def database(database_name: str, owner: str):
    if host.get_fact(PostgresDatabaseOwner, database=database_name) == owner:
        host.noop(f"database {database_name} exists, owned by {owner}")
        return
    db = database_name
    alter = f'ALTER DATABASE "{db}" OWNER TO "{owner}"'
    create = f"createdb -O {shlex.quote(owner)} {shlex.quote(db)}"
    yield f"{create} 2>/dev/null || psql -Xc {shlex.quote(alter)}"


@deploy("Local PostgreSQL (stand-in for RDS)")
def local_postgres(password: str) -> None:
    data = host.data
    root = as_root(host)
    apt.packages(
        name="Install postgresql", packages=["postgresql"], no_recommends=True, **root
    )
    service(name="Enable and start postgresql", unit="postgresql", **root)
    pg = as_user(host, "postgres")
    role(data.db_user, password, name=f"Role {data.db_user}", **pg)
    database(data.db_name, data.db_user, name=f"Database {data.db_name}", **pg)
