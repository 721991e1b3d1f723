"""A fleet of three real hosts: rolling deploys and rollbacks in batches with a gate per batch,
under load with zero failed requests, a canary that stops a bad rollout, a failed batch
switched back, two controllers at once, and faults (a host powered off, SSH dropped, the disk
full, Redis down, the database unreachable). The tests run in order on the same fleet; each
docstring says the state it starts from."""

from __future__ import annotations

import json

import pytest

from tests.helpers import eventually, run_cli, run_json
from tests.hosts.conftest import (
    CODE_CHANGE_VERSION,
    DEPLOY_TO,
    SecretEnv,
    health,
    read_layout,
    start_cli,
    wait_for_build,
)
from tests.load import RequestLoop

pytestmark = pytest.mark.hosts
SMALL_FS_MB = 1536  # the second host's releases filesystem (room for a few releases)
REQUESTS: dict[str, int] = {}  # requests served during the rolling runs (for the notes)


class Fleet:
    def __init__(self, hosts, inventory: str, env: dict) -> None:
        self.hosts, self.inventory, self.env = hosts, inventory, env

    def urls(self) -> list[str]:
        return [u for h in self.hosts for u in (
            f"http://127.0.0.1:{h.backend_port}/api/health",
            f"http://127.0.0.1:{h.frontend_port}/")]

    def run(self, *args: str, inventory: str | None = None) -> tuple[int, dict, str]:
        return run_json(*args, "-i", inventory or self.inventory, env=self.env)

    def versions(self) -> list[str]:
        return [health(h)["version"] for h in self.hosts]

    def commits(self) -> list[str]:
        return [read_layout(h).current.rsplit("-", 1)[1] for h in self.hosts]


@pytest.fixture(scope="session")
def fleet(host_factory, make_inventory, secret_env, tmp_path_factory) -> Fleet:
    hosts = host_factory(3)
    inventory = str(make_inventory(hosts, "fleet"))
    env = SecretEnv({**secret_env, "TPE_STATE_DIR": str(tmp_path_factory.mktemp("fleet-state"))})
    fleet = Fleet(hosts, inventory, env)
    code, payload, stderr = fleet.run("provision")
    assert code == 0, (payload, stderr)
    # The second host keeps its releases on a small filesystem of their own (the disk-full
    # test fills it); hard links work there as on any disk.
    hosts[1].ssh(f"sudo mount -t tmpfs -o size={SMALL_FS_MB}m,mode=0755,uid=$(id -u),"
                 f"gid=$(id -g) tpe-releases {DEPLOY_TO}/releases")
    code, payload, stderr = fleet.run("deploy", "--commit", "good")
    assert code == 0, (payload, stderr)
    return fleet


def serving(payload: dict) -> dict[str, str]:
    """Host -> the commit (12) it serves, as the command's summary read it from the host."""
    return {name: h["serving"]["commit"] for name, h in payload["hosts"].items()}


def step_names(payload: dict, host: str) -> list[str]:
    return [s["name"] for s in payload["hosts"][host]["steps"]]


def test_rolling_deploy_in_batches_under_load(fleet, commit_of):
    """From `good` everywhere: `code-change` one host at a time, in inventory order, under a
    request loop on every host's backend and frontend: zero failed requests."""
    with RequestLoop(fleet.urls(), rate=10, max_seconds=600) as loop:
        code, payload, stderr = fleet.run("deploy", "--commit", "code-change",
                                          "--batch-size", "1")
    print(loop.summary())
    assert code == 0, (payload, stderr)
    assert loop.failures == 0, loop.summary()
    REQUESTS["rolling deploy"] = loop.requests
    names = [h.name for h in fleet.hosts]
    for index, name in enumerate(names, 1):
        assert f"batch {index}/3 passed its gate (0 of 1 failed, 0% allowed)" in step_names(
            payload, name)
    assert set(serving(payload).values()) == {commit_of("code-change")[:12]}
    assert fleet.versions() == [CODE_CHANGE_VERSION] * 3
    verified = [next(r["time"] for r in reversed(read_layout(h).revisions)
                     if r["result"] == "verified") for h in fleet.hosts]
    assert verified == sorted(verified), "batches did not follow the inventory order"
    # One build for the fleet: the first host builds, the later batches take its build.
    first, *others = names
    assert {"Build the frontend inside the new release",
            "Pack the build for the other hosts"} <= set(step_names(payload, first))
    for name in others:
        steps = step_names(payload, name)
        assert f"Upload the build made on {first}" in steps, steps
        assert "Build the frontend inside the new release" not in steps, steps
        assert f"database migrations: run once for this release, on {first}" in steps, steps
        assert "Run pending database migrations" not in steps, steps
    build_ids = {h.ssh(f"cat {DEPLOY_TO}/current/tpe-front-end/.next/BUILD_ID").stdout
                 for h in fleet.hosts}  # (host 2's releases are on a mount of its own)
    assert len(build_ids) == 1, build_ids  # the same Next.js build behind the balancer


def test_rolling_rollback_under_load(fleet, commit_of):
    """From `code-change` everywhere: `rollback --batch-size 2` (2 hosts, then 1) to `good`,
    under load: zero failed requests."""
    with RequestLoop(fleet.urls(), rate=10, max_seconds=300) as loop:
        code, payload, stderr = fleet.run("rollback", "--batch-size", "2", "--reason",
                                          "fleet test")
    print(loop.summary())
    assert code == 0, (payload, stderr)
    assert loop.failures == 0, loop.summary()
    REQUESTS["rolling rollback"] = loop.requests
    assert "batch 2/2 passed its gate (0 of 1 failed, 0% allowed)" in step_names(
        payload, fleet.hosts[2].name)
    assert set(serving(payload).values()) == {commit_of("good")[:12]}
    assert fleet.versions() == ["1.0.0"] * 3


def test_canary_failure_stops_the_rollout(fleet, commit_of):
    """From `good`: `crash` with --canary. The canary fails verification and is switched back;
    the rollout stops; the other two hosts are not touched."""
    before = [read_layout(h) for h in fleet.hosts]
    code, payload, stderr = fleet.run("deploy", "--commit", "crash", "--canary")
    assert code == 1, (payload, stderr)
    good = commit_of("good")[:12]
    assert serving(payload) == {h.name: good for h in fleet.hosts}
    canary = read_layout(fleet.hosts[0])
    assert canary.last_revision["result"] == "rolled-back"
    assert "bad" in canary.markers[canary.last_revision["release"]]
    for host, was in zip(fleet.hosts[1:], before[1:], strict=True):
        now = read_layout(host)
        assert (now.current, now.releases) == (was.current, was.releases)
        assert any(n.startswith("not deployed: stopped, batch 1/2 failed its gate")
                   for n in step_names(payload, host.name))
    assert fleet.versions() == ["1.0.0"] * 3


def test_failed_batch_is_switched_back_and_the_rest_untouched(fleet, make_inventory, commit_of):
    """From `good`: `code-change` in batches of 2, where the second host's health check fails
    (its inventory points at a missing endpoint). Batch 1 = hosts 1 and 2: host 2 fails and is
    switched back by the engine, host 1 passed but is switched back by the batch gate; host 3
    is never reached. Everyone ends on `good`."""
    second = fleet.hosts[1].name
    inventory = str(make_inventory(fleet.hosts, "fleet-bad-second",
                                   host_data={second: {"health_endpoint": "/api/missing"}}))
    code, payload, stderr = fleet.run("deploy", "--commit", "code-change", "--batch-size", "2",
                                      "--unhealthy-ok", inventory=inventory)
    assert code == 1, (payload, stderr)
    good = commit_of("good")[:12]
    assert serving(payload) == {h.name: good for h in fleet.hosts}
    first = read_layout(fleet.hosts[0])
    assert [r["result"] for r in first.revisions[-2:]] == ["verified", "rolled-back"]
    assert any("batch 1/2 failed its gate: 1 of 2 host(s) failed" in n
               for n in step_names(payload, fleet.hosts[0].name))
    assert not any(r["commit"].startswith(commit_of("code-change")[:12])
                   and r["time"] > first.revisions[-3]["time"]
                   for r in read_layout(fleet.hosts[2]).revisions)
    assert fleet.versions() == ["1.0.0"] * 3


def test_two_controllers_at_once(fleet, tmp_path, commit_of):
    """From `good`: two deploys of `code-change` started together. One takes the fleet (the
    first host's lock is the fleet's mutex); the other stops without changing any host.
    The fleet ends on `code-change`, no lock left."""
    procs = [start_cli(tmp_path, f"c{i}", "deploy", "-i", fleet.inventory, "--commit",
                       "code-change", "--json", env=fleet.env) for i in range(2)]
    codes = [p.wait(900) for p in procs]
    outs = [(tmp_path / f"c{i}.out").read_text() + (tmp_path / f"c{i}.err").read_text()
            for i in range(2)]
    assert sorted(codes)[0] == 0 and sorted(codes)[1] != 0, (codes, outs)
    loser = outs[codes.index(max(codes))]
    assert "lock" in loser, loser
    assert fleet.versions() == [CODE_CHANGE_VERSION] * 3
    assert all(read_layout(h).lock is None for h in fleet.hosts)
    assert set(fleet.commits()) == {commit_of("code-change")[:12]}


# --- faults: each leaves every host serving, locks right, the report saying what happened,
# and the next run converging --------------------------------------------------------------

def test_builder_powered_off_mid_build(fleet, tmp_path, commit_of):
    """From `code-change`: deploy `good`; the first host (the fleet's build host and its lock
    mutex) powers off during the build. The others build on their own and end on `good`; the
    report names the lost host. Booted again, it serves its previous release; the next deploy
    releases our own lock left there and converges."""
    first, *others = fleet.hosts
    before = read_layout(first)
    proc = start_cli(tmp_path, "poweroff", "deploy", "-i", fleet.inventory, "--commit", "good",
                     "--json", env=fleet.env)
    try:
        wait_for_build(first, before.releases, commit_of("good"), proc)
        first.kill()
        code = proc.wait(900)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "poweroff.out").read_text()
    assert code == 1, out
    payload = json.loads(out)
    assert "lock not released" in " ".join(step_names(payload, first.name))
    for host in others:
        assert "Build the frontend inside the new release" in step_names(payload, host.name)
    assert [health(h)["version"] for h in others] == ["1.0.0"] * 2
    first.boot()
    assert wait_serving(first), "the powered-off host does not serve after boot"
    assert health(first)["version"] == CODE_CHANGE_VERSION  # its previous release
    assert read_layout(first).lock is not None  # ours, left behind
    code, payload, stderr = fleet.run("deploy", "--commit", "good")
    assert code == 0, (payload, stderr)
    assert any(n.startswith("released our own deploy lock left by an earlier run")
               for n in step_names(payload, first.name))
    assert fleet.versions() == ["1.0.0"] * 3
    assert all(read_layout(h).lock is None for h in fleet.hosts)


def test_ssh_connection_dropped_mid_build(fleet, tmp_path, commit_of):
    """From `good`: deploy `code-change`; the first host's SSH sessions are killed during its
    build. That host keeps serving `good` and its lock is released (over a new connection);
    the others build on their own and move on; the next deploy converges."""
    first, *others = fleet.hosts
    before = read_layout(first)
    proc = start_cli(tmp_path, "dropped", "deploy", "-i", fleet.inventory, "--commit",
                     "code-change", "--json", env=fleet.env)
    try:
        wait_for_build(first, before.releases, commit_of("code-change"), proc)
        first.ssh("sudo pkill -KILL -f 'sshd: ubuntu@notty' || true", check=False)
        code = proc.wait(900)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "dropped.out").read_text()
    assert code == 1, out
    assert health(first)["version"] == "1.0.0"
    assert read_layout(first).current == before.current
    assert all(read_layout(h).lock is None for h in fleet.hosts)
    assert [health(h)["version"] for h in others] == [CODE_CHANGE_VERSION] * 2
    code, payload, stderr = fleet.run("deploy", "--commit", "code-change")
    assert code == 0, (payload, stderr)
    assert fleet.versions() == [CODE_CHANGE_VERSION] * 3


def test_disk_full_during_the_build(fleet, commit_of):
    """From `code-change`: the second host's releases filesystem is filled up to its last
    30 MB; deploying `good` there fails in the build (no space left), nothing is switched,
    the lock is released and the report says why. Space freed, the next deploy converges and
    cleans the partial release."""
    second = fleet.hosts[1]
    releases = f"{DEPLOY_TO}/releases"
    before = read_layout(second)
    free_mb = int(second.ssh(f"df -Pm {releases} | tail -1").stdout.split()[3])
    second.ssh(f"dd if=/dev/zero of={releases}/.filler bs=1M count={free_mb - 30} 2>/dev/null",
               check=False)
    try:
        code, payload, stderr = fleet.run("deploy", "--commit", "good", "--limit", second.name)
    finally:
        second.ssh(f"rm -f {releases}/.filler")
    assert code == 1, (payload, stderr)
    failed = [s for s in payload["hosts"][second.name]["steps"] if s["status"] == "failed"]
    said = " ".join([failed[0]["detail"], *failed[0]["output"]]).lower()
    assert "space" in said or "enospc" in said, failed
    after = read_layout(second)
    assert after.current == before.current and after.lock is None
    assert health(second)["version"] == CODE_CHANGE_VERSION
    code, payload, stderr = fleet.run("deploy", "--commit", "good", "--limit", second.name)
    assert code == 0, (payload, stderr)
    assert serving(payload) == {second.name: commit_of("good")[:12]}
    layout = read_layout(second)
    assert set(layout.releases) <= set(layout.complete), "a partial release was left"


def other_commit(fleet: Fleet, host_index: int, commit_of) -> str:
    """`good` or `code-change`: whichever the host does not serve now."""
    return "code-change" if fleet.commits()[host_index] == commit_of("good")[:12] else "good"


def test_redis_down_during_a_deploy(fleet, commit_of):
    """Redis stopped on the first host. The deploy says the host is unhealthy before it
    starts and stops (exit 3, nothing changed); forced, the new release fails verification
    (the app reports Redis down) and the host goes back to the release it served. Redis
    started, the next run converges with nothing to do."""
    first = fleet.hosts[0]
    before, serving_before = read_layout(first), fleet.commits()[0]
    target = other_commit(fleet, 0, commit_of)
    first.ssh("sudo systemctl stop redis-server")
    try:
        refused = run_cli("deploy", "--commit", target, "--limit", first.name, "-i",
                          fleet.inventory, env=fleet.env)
        assert refused.returncode == 3, refused
        assert "unhealthy before the deploy" in refused.stderr + refused.stdout, refused
        assert read_layout(first).releases == before.releases  # nothing changed
        code, payload, stderr = fleet.run("deploy", "--commit", target, "--limit", first.name,
                                          "--unhealthy-ok")
        assert code == 1, (payload, stderr)
        assert any("redis" in n for n in step_names(payload, first.name)
                   if n.startswith("verification:")), step_names(payload, first.name)
        assert serving(payload) == {first.name: serving_before}
        assert read_layout(first).lock is None
    finally:
        first.ssh("sudo systemctl start redis-server")
    assert wait_serving(first, redis="ok"), "the app does not report Redis up again"
    code, payload, stderr = fleet.run("deploy", "--commit", before.current.rsplit("-", 1)[1],
                                      "--limit", first.name)
    assert code == 0, (payload, stderr)  # already current and verified: nothing to do
    assert step_names(payload, first.name)[0].endswith("nothing to do")


def test_database_unreachable_during_migrations(fleet, postgres_db, commit_of):
    """The database refuses new connections while a deploy runs its migrations on the first
    host. Nothing is switched (the running release keeps its pooled connections); the lock
    is released; once the database takes connections again, the next deploy converges."""
    first = fleet.hosts[0]
    before, version_before = read_layout(first), health(first)["version"]
    target = other_commit(fleet, 0, commit_of)
    postgres_db.psql(f'ALTER DATABASE "{postgres_db.name}" CONNECTION LIMIT 0;')
    try:
        code, payload, stderr = fleet.run("deploy", "--commit", target, "--limit", first.name,
                                          "--unhealthy-ok")
    finally:
        postgres_db.psql(f'ALTER DATABASE "{postgres_db.name}" CONNECTION LIMIT -1;')
    assert code == 1, (payload, stderr)
    failed = [s for s in payload["hosts"][first.name]["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "Run pending database migrations", failed
    after = read_layout(first)
    assert after.current == before.current and after.lock is None
    assert wait_serving(first, database="ok", version=version_before)
    code, payload, stderr = fleet.run("deploy", "--commit", target, "--limit", first.name)
    assert code == 0, (payload, stderr)
    assert serving(payload) == {first.name: commit_of(target)[:12]}


def wait_serving(host, seconds: float = 90, **expect: str) -> bool:
    """Whether the host's app answers healthy (and with the `expect`ed fields) in time."""
    def healthy() -> bool:
        answer = health(host)
        return answer["status"] == "healthy" and all(answer.get(k) == v
                                                     for k, v in expect.items())
    return eventually(healthy, seconds, interval=1)


def test_requests_served_during_the_rolling_runs(capsys):
    with capsys.disabled():  # the figures go to the run's output (for the notes)
        print(f"\nrequests served during the rolling runs, 0 failed: {REQUESTS}")
    assert REQUESTS.get("rolling deploy", 0) > 100 and REQUESTS.get("rolling rollback", 0) > 50
