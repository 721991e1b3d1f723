"""Secrets: from the environment or a 0600 file outside the repo, and redacted everywhere."""

import logging
import os

import pytest

from tpe_ops.errors import SecretError
from tpe_ops.secrets import PROJECT_ROOT, RedactingFilter, load_secrets, redact


def test_missing_secret_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TPE_TEST_SECRET_X", raising=False)
    with pytest.raises(SecretError) as error:
        load_secrets(["TPE_TEST_SECRET_X"], str(tmp_path / "none.env"), False)
    assert "TPE_TEST_SECRET_X" in str(error.value) and "export" in error.value.hint


def test_environment_wins_over_file_and_values_are_redacted(tmp_path, monkeypatch):
    path = tmp_path / "s.env"
    path.write_text("A_SECRET=from-file-value\nB_SECRET='quoted-value'\n")
    os.chmod(path, 0o600)
    monkeypatch.setenv("A_SECRET", "from-env-value")
    found = load_secrets(["A_SECRET", "B_SECRET"], str(path), False)
    assert found == {"A_SECRET": "from-env-value", "B_SECRET": "quoted-value"}
    assert redact("x from-env-value y quoted-value") == "x *** y ***"


def test_group_readable_file_is_refused(tmp_path):
    path = tmp_path / "s.env"
    path.write_text("A=b\n")
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secrets(["A"], str(path), False)


def test_file_inside_repo_is_refused():
    with pytest.raises(SecretError, match="inside the repository"):
        load_secrets(["A"], str(PROJECT_ROOT / "secrets.env"), False)


def test_generate_missing_writes_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("GEN_SECRET", raising=False)
    path = tmp_path / "dir" / "local.env"
    first = load_secrets(["GEN_SECRET"], str(path), True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_secrets(["GEN_SECRET"], str(path), True) == first  # stable once generated


def test_log_records_are_redacted():
    redact.register("hunter2-super-secret")
    record = logging.LogRecord(
        "pyinfra", logging.ERROR, "", 0, "pw=%s", ("hunter2-super-secret",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "pw=***"
