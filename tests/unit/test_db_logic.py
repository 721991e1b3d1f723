"""Pure logic of `db`: SQL/shell builders, parsing, judgement, manifests and retention.
(The builders are proven against real PostgreSQL in tests/hosts/test_db.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from operations import db
from playbooks import db as pb
from tpe_ops.errors import ConfigError
from tpe_ops.secrets import PROJECT_ROOT


def test_identifiers_are_quoted_and_scratch_names_fit_postgres():
    assert db.sql_ident("public.contractors") == '"public"."contractors"'
    assert db.sql_ident('we"ird') == '"we""ird"'
    assert db.vacuum_sql([("public", "a"), ("s", 'b"c')]) == (
        'VACUUM (ANALYZE) "public"."a", "s"."b""c"')
    name = pb.scratch_name("Some-Very-Long-Database-Name-" * 4, "20260101T000000Z")
    assert len(name) <= 63 and name.endswith("_verify_20260101t000000z")
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


def test_commands_take_the_password_from_the_env_file_never_from_argv():
    command = db.DbJson().command(shared="/srv/app/shared", sql="1")
    assert ". /srv/app/shared/backend.env" in command
    assert 'PGPASSWORD="$DB_PASSWORD"' in command  # expanded by the shell, not in any argv
    for script in (db.backup_script("/b", "x-1", "schema_migrations"),
                   db.restore_script("/b/x.dump", "a" * 64, "x_verify_1", "schema_migrations")):
        assert "PGPASSWORD" not in script and "DB_PASSWORD" not in script


def test_client_env_gives_the_password_to_the_child_only(monkeypatch):
    monkeypatch.setenv("PGSERVICE", "somewhere-else")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    data = SimpleNamespace(db_host="db.internal", db_port=5432, db_name="tpedb",
                           db_user="tpeadmin", db_access="direct")
    target = pb.Target(host=SimpleNamespace(name="h", data=data), shared_with=[],
                       password="s3cret-password")
    env = pb.client_env(target)
    assert env["PGPASSWORD"] == "s3cret-password" and env["PGHOST"] == "db.internal"
    assert "PGSERVICE" not in env and env["PGAPPNAME"] == "tpe-ops"
    assert "PGPASSWORD" not in os.environ
    assert "s3cret-password" not in repr(target)


def test_psql_json_output_parsing():
    assert db.parse_json_output(["noise", '__json__ {"a": [1, 2]}']) == {
        "value": {"a": [1, 2]}, "error": None}
    assert db.parse_json_output(["__json__ null"])["value"] is None
    failed = db.parse_json_output(['psql: error: connection to server at "10.0.0.5", port '
                                   "5432 failed: FATAL:  password authentication failed"])
    assert failed["value"] is None and "password authentication failed" in failed["error"]
    assert "provision" in db.parse_json_output([db.NO_CLIENT])["error"]


def test_migration_status():
    status = db.migration_status(["001_init", "002_events", "999_future"],
                                 ["001_init", "002_events", "003_notes"])
    assert status == {"applied": ["001_init", "002_events", "999_future"],
                      "pending": ["003_notes"], "unknown": ["999_future"]}
    assert db.migration_status(None, ["001_init"])["pending"] == ["001_init"]


def test_compare_restore():
    manifest = {"row_counts": {"public.a": 5, "public.b": 0}, "migration": "002_events"}
    assert db.compare_restore(manifest, {"row_counts": {"public.a": 5, "public.b": 0},
                                         "migration": "002_events"}) == []
    problems = db.compare_restore(manifest, {"row_counts": {"public.a": 4, "public.c": 1},
                                             "migration": "001_init"})
    assert "public.a: 4 rows restored, 5 in the manifest" in problems
    assert "table public.b missing from the restore" in problems
    assert "table public.c restored but not in the manifest" in problems
    assert any(p.startswith("migration version '001_init'") for p in problems)


@pytest.mark.parametrize(("index", "level", "advice"), [
    ({"scans": 0, "constraint": "p", "unique": True}, "ok", "unused, keep: it enforces a "
                                                            "primary key"),
    ({"scans": 3, "constraint": None, "unique": True}, "ok", "rarely used, keep: it enforces a "
                                                             "unique index"),
    ({"scans": 0, "constraint": None, "unique": False}, "warning", "unused: candidate for "
                                                                   "removal"),
    ({"scans": 7, "constraint": None, "unique": False}, "warning", "rarely used: candidate for "
                                                                   "removal"),
    ({"scans": 50, "constraint": None, "unique": False}, "ok", "used"),
])
def test_index_advice(index, level, advice):
    assert db.index_advice(index, 50) == (level, advice)


def test_size_growth():
    before = {"time": 0, "database_bytes": 1000, "tables": {"a": 600, "b": 400, "gone": 0}}
    after = {"time": 2 * 86400, "database_bytes": 1500, "tables": {"a": 1000, "b": 400, "n": 8}}
    assert db.size_growth(None, after) is None
    growth = db.size_growth(before, after)
    assert growth["bytes"] == 500 and growth["pct"] == 50.0 and growth["days"] == 2
    assert growth["bytes_per_day"] == 250
    assert growth["tables"] == {"a": 400, "n": 8}
    assert growth["new_tables"] == ["n"] and growth["dropped_tables"] == ["gone"]
    assert db.human_bytes(1536) == "1.5 kB" and db.human_bytes(-2048) == "-2.0 kB"
    assert db.human_bytes(1536, signed=True) == "+1.5 kB" and db.human_bytes(0, True) == "0 B"


def test_size_history_keeps_samples_and_reports_growth(tmp_path):
    path = tmp_path / "db" / "x-sizes.jsonl"
    assert pb.record_sizes(path, {"time": 1, "database_bytes": 10, "tables": {"a": 10}}) is None
    growth = pb.record_sizes(path, {"time": 2, "database_bytes": 30, "tables": {"a": 30}})
    assert growth["bytes"] == 20 and len(pb.load_size_history(path)) == 2


@pytest.mark.parametrize(("request_", "message"), [
    (pb.DbRequest("sizes", file="x.dump"), "FILE only applies to verify-backup"),
    (pb.DbRequest("backup", keep=True), "--keep only applies to verify-backup"),
    (pb.DbRequest("vacuum", threshold_ms=5), "--threshold-ms only applies to slow-queries"),
    (pb.DbRequest("slow-queries", top=0), "--top 0: must be at least 1"),
    (pb.DbRequest("explode"), "unknown action"),
])
def test_bad_requests_are_refused(request_, message):
    with pytest.raises(ConfigError, match=message):
        pb.validate_request(request_)


def _data(**extra):
    values = {"db_backup_local_dir": "/var/backups/tpe", "db_name": "tpedb",
              "db_host": "db.internal", "db_port": 5432, **extra}
    return SimpleNamespace(**values)


def test_local_backups_never_inside_the_repository():
    assert pb.local_backup_dir(_data()) == Path("/var/backups/tpe/tpedb@db.internal_5432")
    with pytest.raises(ConfigError, match="inside the repository"):
        pb.local_backup_dir(_data(db_backup_local_dir=str(PROJECT_ROOT / "backups")))


def _backup(directory: Path, stem: str, manifest: dict | None = None) -> Path:
    dump = directory / f"{stem}.dump"
    dump.write_bytes(b"PGDMP")
    if manifest is not None:
        (directory / f"{stem}.json").write_text(json.dumps(manifest))
    return dump


MANIFEST = {"format": db.MANIFEST_FORMAT, "row_counts": {}, "sha256": "0" * 64}


def test_latest_backup_and_manifest(tmp_path):
    with pytest.raises(ConfigError, match="no backup in"):
        pb.latest_backup(tmp_path)
    _backup(tmp_path, "tpedb-20260101T000000Z", MANIFEST)
    newest = _backup(tmp_path, "tpedb-20260102T000000Z", MANIFEST)
    _backup(tmp_path, "tpedb-20260103T000000Z")  # no manifest: not a finished backup
    assert pb.latest_backup(tmp_path) == newest
    assert pb.read_manifest(newest)["format"] == db.MANIFEST_FORMAT
    with pytest.raises(ConfigError, match="no readable manifest"):
        pb.read_manifest(tmp_path / "tpedb-20260103T000000Z.dump")
    with pytest.raises(ConfigError, match="no such backup file"):
        pb.read_manifest(tmp_path / "missing.dump")
    (tmp_path / "tpedb-20260101T000000Z.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="is not a backup manifest"):
        pb.read_manifest(tmp_path / "tpedb-20260101T000000Z.dump")


def test_local_retention_keeps_the_newest(tmp_path):
    stems = [f"tpedb-2026010{d}T000000Z" for d in range(1, 6)]
    for stem in stems:
        _backup(tmp_path, stem, MANIFEST)
    _backup(tmp_path, "other-20250101T000000Z", MANIFEST)  # another database's prefix
    removed = pb.prune_local(tmp_path, "tpedb", 2)
    assert removed == [f"{s}.dump" for s in stems[:3]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"{s}.{e}" for s in stems[3:] for e in ("dump", "json")]
                          + ["other-20250101T000000Z.dump", "other-20250101T000000Z.json"])


def test_host_retention_command_keeps_the_newest_of_its_prefix(tmp_path):
    stems = [f"tpedb-2026010{d}T000000Z" for d in range(1, 6)]
    for stem in [*stems, "other-20250101T000000Z"]:
        _backup(tmp_path, stem, MANIFEST)
    (tmp_path / "tpedb-20260106T000000Z.dump.partial").write_bytes(b"")  # being written
    done = subprocess.run(["sh", "-c", db.prune_backups_command(str(tmp_path), "tpedb", 2)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:3] == [f"removed {s}.dump" for s in stems[:3]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"{s}.{e}" for s in stems[3:] for e in ("dump", "json")]
                          + ["other-20250101T000000Z.dump", "other-20250101T000000Z.json",
                             "tpedb-20260106T000000Z.dump.partial"])
