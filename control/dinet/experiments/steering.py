"""`dinet experiment steering SCENARIO`: computing-aware steering against the alternatives.

One lab of the scenario; per repeat and per policy (dinet, dinet-two-choices: dinet's weights with each new
flow on the lower loaded of two ring candidates, nearest-site anycast, compute-only, round-robin, random:
switched at run time by rewriting the intent; least-queue and oracle: picked per request at the
client, past the VIP, dinet.workload.pickers), every client sends Poisson load to every service it calls
while events happen on one clock:
- a load step: the site that nearest-site anycast picks for the first client's first service gets a burst of
  its own users (sent inside its host: nothing of it is steered);
- a path delay rise: the farthest site's path (the site with the most capacity) slows to 500 ms one way, on
  the wire and in the network metrics (`lab.links.set_path_delay`), and is restored after the run (quick runs: from
  the start);
- a site failure (full runs): the second-nearest instance of that service stops (server and agent), and comes
  back after the run.
Per policy and class: TTFT p50/p99, TPOT p99, SLO attainment and goodput, the share the farthest site served
(`far_share`: where both classes share the engines, cloud-edge-mixed.yaml, delay-tolerant traffic should
leave the near sites to delay-sensitive traffic first); load per site over time; the established flows that
did not finish where they began (flows moved); the time from each event to the new split (the first change
of the installed weights)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..lab.net import Lab
from ..lab.scenario import ScenarioSpec, load
from .common import (
    CLIENT_PICKS,
    LEAD_S,
    SETTLE_S,
    TWO_CHOICES,
    Options,
    Results,
    Sampler,
    aggregate,
    arms,
    burst,
    class_figures,
    client_loads,
    flows_moved,
    header,
    pooled_p99,
    run_events,
    stop_loads,
    timed,
    use_policy,
    wait_idle,
)

log = logging.getLogger(__name__)

POLICIES = ("dinet", TWO_CHOICES, "anycast", "compute-only", "round-robin", "random", *CLIENT_PICKS)
CLASSES = ("delay-sensitive", "delay-tolerant")


def nearest(spec: ScenarioSpec, service: str, ingress: str) -> list[str]:
    """The service's instances (not a pool's), nearest site first from the ingress node, among the sites its
    security level allows: what nearest-site anycast would pick, in order."""
    svc = spec.service(service)
    allowed = [i for i in spec.instances if service in i.services and not i.pool]
    allowed = [i for i in allowed if spec.path(i.site, ingress).security >= svc.min_security]
    return [i.name for i in sorted(allowed, key=lambda i: (spec.path(i.site, ingress).delay_ms, i.name))]


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    """The run's shape: durations, rates and the events' times and targets."""
    client = spec.clients[0]
    service = spec.client_services()[0].name
    order = nearest(spec, service, spec.client_ingress(client))
    duration = 4.0 if quick else 36.0
    # compute matters: the nearest site's own users fill it (anycast stays; a network-blind policy leaves)
    events: list[dict[str, Any]] = [{"at": 1.0 if quick else 6.0, "kind": "load step", "instance": order[0]}]
    # the network matters: the farthest site, the one with the most capacity that a compute-only policy likes,
    # is rerouted onto a path of 500 ms one way (quick: from the start)
    site, ingress = spec.instance(order[-1]).site, spec.client_ingress(client)
    events.append(
        {"at": 0.0 if quick else 16.0, "kind": "path delay rise", "instance": order[-1], "site": site}
        | {"ingress": ingress, "delay_ms": 500.0, "was_ms": spec.path(site, ingress).delay_ms}
    )
    if not quick and len(order) > 2:  # then the instance that is nearest now fails
        events.append({"at": 26.0, "kind": "site failure", "instance": order[1]})
    # each client at a rate one site serves within its SLOs: the step, not the base load, makes the difference
    # quick: shorter answers (a run ends when its last stream does)
    output = [8, 32] if quick else [16, 64]
    return {"service": service, "duration": duration, "rate": 2.5, "output": output, "events": events}


def far_share(recs: list[dict[str, Any]], shape: dict[str, Any]) -> float | None:
    """The share of answered requests the farthest site served (the path delay rise's site, the one with the
    most capacity): where delay-tolerant traffic should go first when both classes share the instances."""
    ok = [r for r in recs if r["status"] == "ok"]
    far = next(e["site"] for e in shape["events"] if e["kind"] == "path delay rise")
    return sum(r["site"] == far for r in ok) / len(ok) if ok else None


def one_run(
    lab: Lab, policy: str, shape: dict[str, Any], seed: int, last: bool = False
) -> tuple[list[dict[str, Any]], Sampler]:
    """One policy once: loads, events and decision samples on one clock; the records, tagged. Then the
    stepped instance drains (unless it is the last run): every run starts from the same state."""
    pick = use_policy(lab, policy)
    start = time.time() + LEAD_S
    out = ["--output-min", str(shape["output"][0]), "--output-max", str(shape["output"][1])]
    loads = client_loads(lab, start, shape["duration"], shape["rate"], seed, out, pick, policy=policy)
    # a load step is a burst that waits for its time like the loads do; a failure is run at its time
    bursts = [burst(lab, e["instance"], start + e["at"]) for e in shape["events"] if e["kind"] == "load step"]
    failed: list[str] = []

    def fail(name: str) -> Any:
        def go() -> None:
            lab.engines.stop(name)
            failed.append(name)

        return go

    def slow(e: dict[str, Any]) -> Any:
        return lambda: lab.links.set_path_delay(e["site"], e["ingress"], e["delay_ms"])

    events = [(e["at"], e["kind"], fail(e["instance"])) for e in shape["events"] if e["kind"] == "site failure"]
    events += [(e["at"], e["kind"], slow(e)) for e in shape["events"] if e["kind"] == "path delay rise"]
    stop = threading.Event()
    try:
        with Sampler(lab, start) as sampler:
            run_events(start, events, stop)
            recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + LEAD_S + 120)]
            for b in bursts:
                b.records(timeout=120)
    finally:
        stop.set()
        stop_loads(loads + bursts)
        for e in shape["events"]:  # the path as it was
            if e["kind"] == "path delay rise" and (e["ingress"], e["site"]) in lab.links.path_delay:
                lab.links.set_path_delay(e["site"], e["ingress"], e["was_ms"])
        for name in failed:
            lab.engines.start(name)
        if failed:
            lab.view.wait_reports(set(failed))
    if not last:  # the next arm starts from idle instances, after a settle (no queue, no stream carries over)
        wait_idle(lab, [n for n, i in lab.instances.items() if shape["service"] in i.spec.services])
        time.sleep(SETTLE_S)
    site = {n: lab.spec.site(i.spec.site).name for n, i in lab.instances.items()}
    for r in recs:
        r["site"] = site.get(r["instance"], "")
        r["failed"] = r["instance"] in failed
    return recs, sampler


def run(scenario: Path, opts: Options, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:

    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "steering")
    slos = {s.name: s.slo for s in spec.services}
    per: dict[str, dict[str, list[dict[str, Any]]]] = {p: {} for p in policies}
    timelines: dict[str, list[dict[str, Any]]] = {}
    intent: dict[str, Any] = {}
    up = time.monotonic()
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        log.info("lab up: %.1f s", time.monotonic() - up)
        intent = lab.intent.as_dict()
        for rep, policy, last in arms(policies, opts, "steering"):
            with timed(f"{policy} run {rep}"):
                recs, sampler = one_run(lab, policy, shape, opts.seed + rep, last)
            res.add(recs, repeat=rep)
            row: dict[str, Any] = {}
            for cls in CLASSES:
                rs = [r for r in recs if r["cls"] == cls]
                if rs:
                    row[cls] = class_figures(rs, slos, shape["duration"]) | {"far_share": far_share(rs, shape)}
            failed = {e["instance"] for e in shape["events"] if e["kind"] == "site failure"}
            row["flows_moved"] = flows_moved(recs, failed)
            key = f"{shape['service']}@{spec.client_ingress(spec.clients[0])}"
            row["reaction_s"] = {e["kind"]: sampler.reaction(e["at"], key, e["instance"]) for e in shape["events"]}
            per[policy].setdefault("runs", []).append(row)
            if rep == 0:
                timelines[policy] = sampler.samples
    summary: dict[str, Any] = header("steering", scenario, opts, shape) | {"policies": {}}
    summary["hygiene"] = (
        f"one lab; the policies' order shuffled each repeat (seed {opts.seed}); between arms every instance of "
        f"the service idle, then {SETTLE_S:g} s to settle"
    )
    summary["slo"] = {name: slo.model_dump() for name, slo in slos.items()}
    for policy in policies:
        runs = per[policy]["runs"]
        out: dict[str, Any] = {}
        for cls in CLASSES:
            have = [r[cls] for r in runs if cls in r]
            out[cls] = aggregate(have) if have else None
        for cls in CLASSES:  # the p99 of every repeat's requests together, with its bootstrap interval
            recs = [r for r in res.records if r["policy"] == policy and r["cls"] == cls and r["status"] == "ok"]
            if out[cls] is not None:
                out[cls]["ttft_p99_pooled"] = pooled_p99([r["ttft_ms"] for r in recs], seed=opts.seed)
        out["flows_moved"] = sum(r["flows_moved"] for r in runs)
        out["reaction_s"] = {
            e["kind"]: aggregate([{"s": r["reaction_s"][e["kind"]]} for r in runs])["s"] for e in shape["events"]
        }
        summary["policies"][policy] = out
    res.write(summary)
    from .report import steering_report

    steering_report(res, summary, spec, scenario, intent, timelines)
    return summary
