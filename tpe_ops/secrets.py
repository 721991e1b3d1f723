"""Secrets: taken from the environment or a 0600 file outside the repository, never printed.

Every value loaded here is registered with the redactor, which output and logs pass through.
"""

from __future__ import annotations

import logging
import os
import secrets as random_source
import stat
from pathlib import Path

from tpe_ops.errors import SecretError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MASK = "***"


class Redactor:
    """Replaces every known secret value with a mask."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def register(self, value: str) -> None:
        # Very short values would mask ordinary words; secrets are longer than that.
        if len(value) >= 4:
            self._values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


redact = Redactor()


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record (pyinfra's own output included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True


def parse_secrets_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise SecretError(
                f"{path}:{number}: expected KEY=VALUE", "fix that line of the secrets file"
            )
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _check_location(path: Path) -> None:
    if path.resolve().is_relative_to(PROJECT_ROOT):
        raise SecretError(
            f"secrets file {path} is inside the repository",
            "keep it outside the repository, e.g. ~/.config/tpe-ops/secrets.env",
        )
    if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise SecretError(
            f"secrets file {path} is readable by other users", f"run: chmod 600 {path}"
        )


def _append_generated(path: Path, names: list[str]) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    generated = {name: random_source.token_urlsafe(24) for name in names}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        for name, value in generated.items():
            handle.write(f"{name}={value}\n")
    return generated


def load_secrets(names: list[str], secrets_file: str, generate_missing: bool) -> dict[str, str]:
    """Return the named secrets; a missing one is an error before anything changes."""
    path = Path(secrets_file).expanduser()
    _check_location(path)
    from_file = parse_secrets_file(path) if path.exists() else {}
    found = {name: os.environ.get(name) or from_file.get(name) for name in names}
    missing = sorted(name for name, value in found.items() if not value)
    if missing and generate_missing:
        found.update(_append_generated(path, missing))
        missing = []
    if missing:
        raise SecretError(
            f"missing secret(s): {', '.join(missing)}",
            f"export them in the environment or add NAME=value lines to {path} (mode 0600)",
        )
    for value in found.values():
        redact.register(value)
    return {name: value for name, value in found.items() if value}
