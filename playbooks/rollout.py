"""Fleet rollouts: the release engine run batch by batch, in inventory order, with a gate after
each batch (tpe_ops.rollout). A batch that fails its gate is switched back to where it was and
the rollout stops; hosts not reached keep their release. The summary reads each host's
`current` at the end, so it says what every host really serves."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from operations import release as rel
from playbooks.release_flow import Flow, Guard, HostPlan, execute, fleet_lock, share_builds
from tpe_ops import rollout as r
from tpe_ops.runner import gather


@dataclass
class RolloutOptions:
    batch_size: str | None = None  # N hosts or P% of the fleet; None: all at once
    max_fail: str | None = None  # P% of a batch allowed to fail its verification
    canary: bool = False  # one host alone first

    @property
    def rolling(self) -> bool:
        return self.batch_size is not None or self.canary or self.max_fail is not None

    def validate(self, fleet: int) -> tuple[int, float]:
        """Bad values stop the run before anything changes. Without rolling options every
        host goes at once and on its own: one failing host does not take the others back
        (it is switched back itself), so there is no batch gate (100 % may fail)."""
        size = r.parse_batch_size(self.batch_size, fleet)
        return size, r.parse_max_fail(self.max_fail) if self.rolling else 100.0


def run_rollout(flow: Flow, rollout: RolloutOptions, guard: Guard | None = None) -> None:
    """Run `flow`'s live hosts batch by batch; results, verification and reasons land in
    `flow` as if one run had done them."""
    names = [h.name for h in flow.live()]
    size, max_fail = rollout.validate(len(names))
    batches = r.make_batches(names, size, rollout.canary)
    with tempfile.TemporaryDirectory(prefix="tpe-builds-") as share_dir:
        share_builds(flow, share_dir)  # one build per release for the whole fleet
        with fleet_lock(flow) as locked:  # every host locked for the whole rollout, or none
            if locked:
                _batches(flow, batches, max_fail, guard)
    _report_serving(flow)


def _batches(flow: Flow, batches: list[list[str]], max_fail: float,
             guard: Guard | None) -> None:
    for index, batch in enumerate(batches, 1):
        label = f"batch {index}/{len(batches)}"
        part = _run_part(flow, batch, flow.kind, {n: flow.plans[n] for n in batch}, guard)
        failed = [n for n in batch if not part.verified.get(n)]
        if r.gate_passes(len(failed), len(batch), max_fail):
            if len(batches) > 1:
                for name in batch:
                    flow.note(name, "ok", f"{label} passed its gate ({len(failed)} of "
                                          f"{len(batch)} failed, {max_fail:g}% allowed)")
            continue
        why = (f"{label} failed its gate: {len(failed)} of {len(batch)} host(s) failed "
               f"verification ({', '.join(failed)}), {max_fail:g}% allowed")
        _undo(flow, [n for n in batch if part.verified.get(n)], why)
        for later in batches[index:]:
            for name in later:
                flow.note(name, "failed", f"not {flow.kind}ed: stopped, {why}")
        break


def _run_part(flow: Flow, names: list[str], kind: str, plans: dict[str, HostPlan],
              guard: Guard | None) -> Flow:
    part = Flow(kind, flow.loaded.fresh(names), plans, flow.printer, archive=flow.archive,
                token=flow.token, builds=flow.builds, built=flow.built,
                migrated=flow.migrated)
    execute(part, guard, lock=False)
    for name in names:
        flow.results[name].steps.extend(part.results[name].steps)
        flow.results[name].error = flow.results[name].error or part.results[name].error
    flow.verified.update(part.verified)
    flow.reasons.update(part.reasons)
    return part


def _undo(flow: Flow, names: list[str], why: str) -> None:
    """Switch the batch's verified hosts back to the release they had before this run."""
    plans = {}
    for name in names:
        plan = flow.plans[name]
        if not plan.previous:
            flow.note(name, "failed", f"{why}; no earlier release to go back to: stays on "
                                      f"{plan.release}")
            continue
        meta = {**plan.meta, plan.release: {"complete": True, "verified": True}}
        plans[name] = HostPlan(
            previous=plan.release, release=plan.previous,
            commit=plan.meta.get(plan.previous, {}).get("commit") or "?", build=False,
            rollback_to=plan.release, meta=meta, known_good=plan.release)
        flow.reasons[name] = why
    if plans:
        part = _run_part(flow, list(plans), "rollback", plans, None)
        for name in plans:
            flow.verified[name] = False
            flow.note(name, "failed", f"{why}: switched back to {plans[name].release}"
                                      + ("" if part.verified.get(name) else " (NOT verified)"))


def _report_serving(flow: Flow) -> None:
    """What each host serves now, read from the host, not inferred."""
    states = gather(flow.loaded.fresh(), lambda h: h.get_fact(
        rel.ReleaseState, deploy_to=h.data.app_deploy_to))
    for name, state in states.items():
        if isinstance(state, Exception):
            flow.note(name, "failed", f"cannot read what the host serves now: {state}")
            continue
        current = state["current"] or "-"
        commit = (state["meta"].get(current, {}).get("commit") or "")[:12]
        flow.results[name].data["serving"] = {"release": state["current"], "commit": commit}
        flow.note(name, "ok", f"serving {current}" + (f" ({commit})" if commit else ""))
