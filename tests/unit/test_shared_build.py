"""One build per release for the fleet: who builds, who copies (release_flow.build_plan), and
the pack/unpack scripts, run here for real in a scratch folder."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

from operations import release as rel
from playbooks.release_flow import (
    MIGRATE_STEP,
    Flow,
    HostPlan,
    build_key,
    build_plan,
    migrated_elsewhere,
    migration_key,
    share_builds,
)
from tpe_ops.runner import Step

DATA = {"app_deploy_to": "/srv/app", "app_build_command": "npm run build",
        "app_migrate_command": "npm run migrate",
        "app_build_outputs": ["web/.next"], "db_host": "db", "db_port": 5432, "db_name": "tpe"}


def host(name: str, **data) -> SimpleNamespace:
    return SimpleNamespace(name=name, data=SimpleNamespace(**{**DATA, **data}))


def flow_of(hosts: list, builds: dict[str, bool] | None = None) -> Flow:
    plans = {h.name: HostPlan(previous=None, release="20261205-abc", commit="abc" * 13 + "a",
                              build=(builds or {}).get(h.name, True), rollback_to=None)
             for h in hosts}
    return Flow("deploy", SimpleNamespace(hosts=hosts), plans, None)


def test_one_host_builds_and_shares_the_others_wait_for_it():
    hosts = [host("h1"), host("h2"), host("h3")]
    flow = flow_of(hosts)
    share_builds(flow, "/tmp/share")
    assert list(flow.builds.values()) == ["/tmp/share/build-0.tar.gz"]
    how = build_plan(flow, hosts)
    assert how == {"h1": ("share", "/tmp/share/build-0.tar.gz"), "h2": ("later", None),
                   "h3": ("later", None)}
    flow.built[build_key(flow, hosts[0])] = "h1"  # fetched: the next batches copy it
    assert build_plan(flow, hosts[1:], waited=True) == {
        "h2": ("copy", "/tmp/share/build-0.tar.gz"), "h3": ("copy", "/tmp/share/build-0.tar.gz")}


def test_hosts_wait_for_a_shared_build_that_failed_build_on_their_own():
    hosts = [host("h1"), host("h2"), host("h3")]
    flow = flow_of(hosts)
    share_builds(flow, "/tmp/share")
    assert build_plan(flow, hosts[1:], waited=True) == {"h2": ("build", None),
                                                        "h3": ("build", None)}


def test_a_later_batch_shares_the_build_of_the_first():
    hosts = [host("h1"), host("h2")]
    flow = flow_of(hosts)
    share_builds(flow, "/tmp/share")  # the whole fleet, before batch 1
    assert build_plan(flow, hosts[:1]) == {"h1": ("share", "/tmp/share/build-0.tar.gz")}
    flow.built[build_key(flow, hosts[0])] = "h1"
    assert build_plan(flow, hosts[1:]) == {"h2": ("copy", "/tmp/share/build-0.tar.gz")}


def test_a_lone_build_or_a_different_setup_is_not_shared():
    hosts = [host("h1"), host("h2", app_deploy_to="/other"), host("h3"), host("h4")]
    flow = flow_of(hosts, builds={"h4": False})  # h4 has the release on disk already
    share_builds(flow, "/tmp/share")
    assert len(flow.builds) == 1  # h1 and h3 build the same; h2 builds elsewhere, alone
    how = build_plan(flow, [h for h in hosts if flow.plans[h.name].build])
    assert how == {"h1": ("share", "/tmp/share/build-0.tar.gz"), "h2": ("build", None),
                   "h3": ("later", None)}
    single = flow_of([host("h1")])
    share_builds(single, "/tmp/share")
    assert single.builds == {} and build_plan(single, single.loaded.hosts) == {
        "h1": ("build", None)}


def test_migrations_run_once_are_reported_for_every_host_of_that_database():
    hosts = [host("h1"), host("h2"), host("h3", db_name="other")]
    flow = flow_of(hosts)
    flow.results["h1"].steps.append(Step(MIGRATE_STEP, "changed",
                                         output=["applied 002_events", "up to date"]))
    flow.migrated[migration_key(flow, hosts[0])] = ("h1", flow.migrations_applied("h1"))
    assert migration_key(flow, hosts[1]) == migration_key(flow, hosts[0])
    assert flow.migrations_applied("h1") == ["002_events"]
    batch2 = Flow("deploy", SimpleNamespace(hosts=hosts[1:]), flow.plans, None,
                  migrated=flow.migrated)  # a later batch: h1's steps are not in it
    assert batch2.migrations_applied("h2") == ["002_events"]
    assert batch2.migrations_applied("h3") == []  # another database: its own run (none)


def test_only_hosts_copying_a_build_skip_migrations_another_host_ran():
    hosts = [host("h1"), host("h2"), host("h3", db_name="other"), host("h4"),
             host("h5", app_migrate_command="")]
    flow = flow_of(hosts)
    flow.migrated[migration_key(flow, hosts[0])] = ("h1", [])
    how = {"h1": ("share", "/a"), "h2": ("copy", "/a"), "h3": ("copy", "/a"),
           "h4": ("build", None), "h5": ("copy", "/a")}
    # h3: another database; h4: builds itself (its own setup); h5: no migrations at all
    assert migrated_elsewhere(flow, hosts, how) == {"h2": "h1"}
    rollback = Flow("rollback", flow.loaded, flow.plans, None, migrated=flow.migrated)
    assert migrated_elsewhere(rollback, hosts, how) == {}


def _release(root: Path, name: str, fingerprint: str) -> Path:
    release = root / name
    (release / "web").mkdir(parents=True)
    (release / ".deps-fingerprint").write_text(fingerprint + "\n")
    return release


def _sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True)


def test_pack_then_unpack_copies_the_build_without_the_cache(tmp_path):
    built = _release(tmp_path, "builder", "fp1")
    (built / "web/.next/server").mkdir(parents=True)
    (built / "web/.next/BUILD_ID").write_text("id-1\n")
    (built / "web/.next/cache").mkdir()
    (built / "web/.next/cache/big").write_text("x" * 1000)
    archive = tmp_path / "build.tar.gz"
    assert _sh(rel.pack_build_command(str(built), ["web/.next"], str(archive))).returncode == 0
    other = _release(tmp_path, "other", "fp1")
    out = _sh(rel.unpack_build_script(str(other), str(archive), "h1", "echo BUILT >&2; false"))
    assert out.returncode == 0, out.stderr
    assert "build: copied from h1" in out.stdout and "BUILT" not in out.stderr
    assert (other / "web/.next/BUILD_ID").read_text() == "id-1\n"
    assert not (other / "web/.next/cache").exists()
    assert not archive.exists()  # removed on the host after use


def test_unpack_builds_here_when_the_dependencies_differ(tmp_path):
    built = _release(tmp_path, "builder", "fp1")
    (built / "web/.next").mkdir()
    (built / "web/.next/BUILD_ID").write_text("id-1\n")
    archive = tmp_path / "build.tar.gz"
    assert _sh(rel.pack_build_command(str(built), ["web/.next"], str(archive))).returncode == 0
    other = _release(tmp_path, "other", "fp2")
    out = _sh(rel.unpack_build_script(str(other), str(archive), "h1",
                                      "mkdir -p web/.next && echo id-2 > web/.next/BUILD_ID"))
    assert out.returncode == 0, out.stderr
    assert "dependencies differ" in out.stdout
    assert (other / "web/.next/BUILD_ID").read_text() == "id-2\n"
    assert (other / ".deps-fingerprint").read_text() == "fp2\n"
