"""Errors that end a command with a clear message, a hint and a non-zero exit code."""

from __future__ import annotations


class OpsError(Exception):
    """An error the user can fix: what is wrong, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(OpsError):
    """Malformed inventory or group data."""


class SecretError(OpsError):
    """A secret is missing or stored somewhere unsafe."""


class HostError(OpsError):
    """A host could not be reached or refused an operation."""


class AbortedError(OpsError):
    """The user declined a confirmation."""

    exit_code = 3
