"""A fleet of three real hosts: rolling deploys and rollbacks in batches with a gate per batch,
under load with zero failed requests, a canary that stops a bad rollout, a failed batch
switched back, and two controllers at once. The tests run in order on the same fleet; each docstring
says the state it starts from."""

from __future__ import annotations

import pytest

from tests.helpers import run_json
from tests.hosts.conftest import (
    CODE_CHANGE_VERSION,
    SecretEnv,
    health,
    read_layout,
    start_cli,
)
from tests.load import RequestLoop

pytestmark = pytest.mark.hosts
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
    for command in (("provision",), ("deploy", "--commit", "good")):
        code, payload, stderr = fleet.run(*command)
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


def test_requests_served_during_the_rolling_runs(capsys):
    with capsys.disabled():  # the figures go to the run's output (for the notes)
        print(f"\nrequests served during the rolling runs, 0 failed: {REQUESTS}")
    assert REQUESTS.get("rolling deploy", 0) > 100 and REQUESTS.get("rolling rollback", 0) > 50
