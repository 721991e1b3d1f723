"""Tests of the real-host harness itself: hosts boot, SSH is strict, state persists."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import postgres
from tests.harness.common import in_ci
from tests.harness.hosts import HostPool, TestHost, write_inventory
from tests.harness.image import PREFETCH, BaseImage, _pem_blocks, extra_cas, image_recipe
from tests.harness.ports import allocate_slot, port_free
from tests.harness.pytest_support import MakeHosts, harness_unavailable


def host_key(host: TestHost) -> str:
    return (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]


@pytest.fixture(scope="module")
def two_hosts(host_pool: HostPool) -> Iterator[list[TestHost]]:
    started = time.monotonic()
    hosts = host_pool.make_hosts(2)
    print(f"2 hosts booted in parallel in {time.monotonic() - started:.2f} s")
    yield hosts
    host_pool.destroy(hosts)


# --- pure helpers (no hosts) -------------------------------------------------

def test_ci_flag_parsing() -> None:
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"})
    assert not in_ci({}) and not in_ci({"CI": "false"})


def test_unavailable_harness_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        harness_unavailable("no systemd-nspawn")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        harness_unavailable("no systemd-nspawn")


def test_image_key_follows_recipe(tmp_path: Path) -> None:
    base = image_recipe(tmp_path, "ssh-ed25519 AAAA one", [])
    assert image_recipe(tmp_path, "ssh-ed25519 AAAA one", []) == base
    assert image_recipe(tmp_path, "ssh-ed25519 AAAA two", []) != base
    assert image_recipe(tmp_path, "ssh-ed25519 AAAA one", ["PEM"]) != base


def test_port_slots_are_distinct_and_free(tmp_path: Path) -> None:
    slots = [allocate_slot(tmp_path) for _ in range(3)]
    try:
        ports = [p for s in slots for p in (s.ssh, s.backend, s.frontend, s.redis)]
        assert len(set(ports)) == len(ports)
        assert all(port_free(p) for p in ports)
    finally:
        for slot in slots:
            slot.release()


# --- booted hosts -------------------------------------------------------------

def test_parallel_hosts_answer_ssh_with_strict_host_keys(two_hosts: list[TestHost]) -> None:
    known = two_hosts[0].known_hosts_file.read_text()
    for host in two_hosts:
        assert f"[127.0.0.1]:{host.ssh_port} ssh-ed25519 {host_key(host)}" in known
        assert host.ssh("hostname").stdout.strip() == host.name
        assert host.boot_seconds is not None and host.boot_seconds < 60
    assert host_key(two_hosts[0]) != host_key(two_hosts[1])


def test_wrong_known_hosts_entry_is_rejected(two_hosts: list[TestHost], tmp_path: Path
                                              ) -> None:
    first, second = two_hosts
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{first.ssh_port} ssh-ed25519 {host_key(second)}\n")
    proc = first.ssh("true", check=False, known_hosts=wrong)
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert first.ssh("true", check=False, known_hosts=empty).returncode == 255


def test_host_is_bare_debian_with_cached_debs(two_hosts: list[TestHost]) -> None:
    host = two_hosts[0]
    for tool in ("node", "nodejs", "npm", "redis-server", "pm2", "psql"):
        assert host.ssh(f"command -v {tool}", check=False).returncode != 0, tool
    debs = host.ssh("ls /var/cache/apt/archives").stdout.split()
    for package in PREFETCH:
        assert any(d.startswith(f"{package}_") for d in debs), package
    assert host.ssh("/usr/sbin/policy-rc.d", check=False).returncode == 101


def test_host_boots_clean(two_hosts: list[TestHost]) -> None:
    host = two_hosts[0]
    assert host.ssh("systemctl is-system-running", check=False).stdout.strip() == "running"
    assert host.ssh("systemctl --failed --no-legend --plain").stdout.strip() == ""
    sshd = host.ssh("sudo sshd -T | grep -i '^listenaddress'").stdout.split()
    assert sshd == ["listenaddress", f"127.0.0.1:{host.ssh_port}"]


def test_passwordless_sudo(two_hosts: list[TestHost]) -> None:
    assert two_hosts[1].ssh("sudo -n true && sudo -n id -u").stdout.strip() == "0"


def test_localhost_resolves_to_ipv4(two_hosts: list[TestHost]) -> None:
    first_line = two_hosts[0].ssh("getent ahosts localhost").stdout.splitlines()[0]
    assert first_line.split()[0] == "127.0.0.1"


def test_controller_extra_cas_trusted_in_image(base_image: BaseImage) -> None:
    """CAs the controller adds to Debian's (the registry proxy's) are trusted on hosts."""
    image_bundle = base_image.path / "etc/ssl/certs/ca-certificates.crt"
    trusted = {"".join(b.split()) for b in _pem_blocks(image_bundle)}
    assert all("".join(b.split()) in trusted for b in extra_cas(base_image.rootfs))
    npmrc = (base_image.path / "etc/npmrc").read_text()
    assert "cafile=/etc/ssl/certs/ca-certificates.crt" in npmrc


def test_poweroff_and_boot_keep_state(scoped_host_factory: MakeHosts) -> None:
    [host] = scoped_host_factory(1)
    host.ssh("echo kept > ~/marker && sync")
    key = host_key(host)
    host.reboot_cycle()
    assert host.ssh("cat ~/marker").stdout.strip() == "kept"
    assert host_key(host) == key


def test_kill_is_a_power_cut_and_host_boots_again(scoped_host_factory: MakeHosts) -> None:
    [host] = scoped_host_factory(1)
    host.ssh("echo before > ~/marker && sync")
    host.kill()
    assert not host.running and port_free(host.ssh_port)
    host.boot()
    assert host.ssh("cat ~/marker").stdout.strip() == "before"


def test_destroy_leaves_no_process_mount_or_dir(base_image: BaseImage) -> None:
    pool = HostPool(base_image)
    [host] = pool.make_hosts(1)
    pid = host._proc.pid if host._proc else None
    pool.destroy_all()
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert str(host.root) not in Path("/proc/mounts").read_text()
    assert not pool.run_dir.exists()


def test_pyinfra_connects_with_strict_host_keys(two_hosts: list[TestHost], tmp_path: Path
                                                ) -> None:
    inventory = write_inventory(two_hosts, tmp_path / "inventory.py", {"env_name": "test"})
    namespace: dict[str, object] = {}
    exec(inventory.read_text(), namespace)  # noqa: S102 - our own generated file
    names = [name for name, _ in namespace["app_servers"]]  # type: ignore[attr-defined]
    assert names == [h.name for h in two_hosts]
    cmd = [sys.executable, "-m", "pyinfra", "-y", str(inventory), "exec", "--", "hostname"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for host in two_hosts:
        assert f"[{host.name}]" in proc.stdout + proc.stderr


# --- PostgreSQL on the controller ----------------------------------------------

def test_postgres_port_reachable_from_host(two_hosts: list[TestHost],
                                           postgres_db: postgres.PostgresDB) -> None:
    probe = f"exec 3<>/dev/tcp/{postgres_db.host}/{postgres_db.port} && echo open"
    assert two_hosts[0].ssh(f"bash -c '{probe}'").stdout.strip() == "open"


def test_postgres_login_with_passfile(postgres_db: postgres.PostgresDB, tmp_path: Path
                                      ) -> None:
    assert postgres_db.password not in repr(postgres_db)
    passfile = postgres_db.write_pgpass(tmp_path / "pgpass")
    assert passfile.stat().st_mode & 0o777 == 0o600
    env = {**os.environ, **postgres_db.libpq_env(passfile)}
    env.pop("PGPASSWORD", None)
    sql = "SELECT current_user || ' ' || current_database()"
    proc = subprocess.run(["psql", "-X", "-At", "-c", sql], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{postgres_db.user} {postgres_db.name}"
    passfile.write_text(f"*:*:*:*:not-{postgres_db.password}\n")
    bad = subprocess.run(["psql", "-X", "-At", "-c", "SELECT 1"], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr


def test_pg_stat_statements_can_be_enabled(postgres_db: postgres.PostgresDB) -> None:
    """On a scratch cluster, so the shared one on 5432 is not restarted."""
    port = next(p for p in range(5433, 5500) if port_free(p))
    scratch = postgres.Cluster(postgres_db.cluster.version, f"tpeharness{os.getpid()}", port)
    postgres.ensure_cluster(scratch)
    try:
        db = postgres.create_test_database(scratch)
        db.enable_pg_stat_statements()
        db.psql("SELECT 42;")
        calls = db.psql("SELECT count(*) FROM pg_stat_statements;").strip()
        assert int(calls) > 0
        assert postgres.enable_pg_stat_statements(scratch) is False  # already preloaded
    finally:
        postgres.drop_cluster(scratch)
