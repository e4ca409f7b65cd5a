"""`dinet experiment tiers SCENARIO`: the quality served against latency under rising load, on a service
with model tiers (dynamic model selection).

Per policy (dinet: the preferred tier with room, else the next, each new flow on the lower loaded of two ring
candidates, dinet's default for a tiered service; dinet-ring: the same weights, each new flow on the ring by its
5-tuple; nearest-site anycast, compute-only,
round-robin, random, and the per-request pickers least-queue and oracle, all blind to tiers), one client's
load rises in steps past what the large tier holds, then falls back. Per policy and load step: the share
of requests the large tier served (quality), TTFT p50/p99 and SLO attainment; the time from the first step
past the large tier's room to the first request served by a lower tier (graceful degradation), and from
the fall to the last request a lower tier served (recovery)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lab.net import Lab
from ..lab.scenario import ScenarioSpec, load
from .common import (
    CLIENT_PICKS,
    LEAD_S,
    RING,
    SETTLE_S,
    Options,
    Results,
    aggregate,
    arms,
    class_figures,
    client_loads,
    flows_moved,
    header,
    stop_loads,
    use_policy,
    wait_idle,
)

log = logging.getLogger(__name__)

# least-queue and oracle pick per request at the client, past the VIP (dinet.workload.pickers), blind to
# tiers as the field's endpoint pickers are: the lowest queue, or the lowest true TTFT
POLICIES = ("dinet", RING, "anycast", "compute-only", "round-robin", "random", *CLIENT_PICKS)


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    svc = next((s for s in spec.client_services() if s.tiers), None)
    if svc is None:
        raise ConfigError(f"the tiers experiment needs a service with model tiers; {spec.name} has none")
    step = 1.5 if quick else 5.0
    rates = [2.0, 5.0, 10.0, 15.0]
    schedule = [(k * step, r) for k, r in enumerate(rates)] + [(len(rates) * step, 2.0)]
    return {
        "service": svc.name,
        "step_s": step,
        "schedule": schedule,
        "duration": (len(rates) + 2) * step,
        "fall_at": len(rates) * step,
        # requests that hold the large tier's KV cache while they decode: its room is what runs out
        "prompt": [300, 400],
        "output": [48, 64],
    }


def one_run(lab: Lab, policy: str, shape: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    pick = use_policy(lab, policy)
    start = time.time() + LEAD_S
    sched = ",".join(f"{t:g}:{r:g}" for t, r in shape["schedule"])
    extra = ["--schedule", sched, "--prompt-min", str(shape["prompt"][0]), "--prompt-max", str(shape["prompt"][1])]
    extra += ["--output-min", str(shape["output"][0]), "--output-max", str(shape["output"][1])]
    client = lab.spec.clients[0].name
    loads = [
        ld
        for ld in client_loads(lab, start, shape["duration"], 0.0, seed, extra, pick, policy=policy)
        if ld.tags["client"] == client
    ]
    try:
        recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + LEAD_S + 120)]
    finally:
        stop_loads(loads)
    wait_idle(lab, [n for n, i in lab.instances.items() if i.spec.service == shape["service"]])
    time.sleep(SETTLE_S)  # the next arm starts from idle instances whose reports have caught up
    return recs


def figures(recs: list[dict[str, Any]], shape: dict[str, Any], slos: dict[str, Any]) -> dict[str, Any]:
    ok = sorted((r for r in recs if r["status"] == "ok"), key=lambda r: r["t"])
    steps = []
    bounds = [t for t, _ in shape["schedule"]] + [shape["duration"]]
    for (t0, rate), t1 in zip(shape["schedule"], bounds[1:], strict=True):
        rs = [r for r in recs if t0 <= r["t"] < t1]
        good = [r for r in rs if r["status"] == "ok"]
        row = class_figures(rs, slos, t1 - t0) if rs else {}
        row["rate"] = rate
        row["large_share"] = sum(r["tier"] == "large" for r in good) / len(good) if good else None
        steps.append(row)
    lower = [r for r in ok if r["tier"] != "large"]
    degraded_at = lower[0]["t"] if lower else None
    # from the fall to the last request a lower tier served (0: none after the fall; None: never degraded)
    late = [r["t"] - shape["fall_at"] for r in lower if r["t"] >= shape["fall_at"]]
    recovered = None if degraded_at is None else (late[-1] if late else 0.0)
    return {
        "steps": steps,
        "large_share": sum(r["tier"] == "large" for r in ok) / len(ok) if ok else None,
        "degraded_at_s": degraded_at,
        "recovered_after_s": recovered,
        "flows_moved": flows_moved(recs),
    }


def run(scenario: Path, opts: Options, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "tiers")
    slos = {s.name: s.slo for s in spec.services}
    per: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        intent = lab.intent.as_dict()
        for rep, policy, _last in arms(policies, opts, "tiers"):
            recs = one_run(lab, policy, shape, opts.seed + rep)
            res.add(recs, repeat=rep)
            per[policy].append(figures(recs, shape, slos))
    summary: dict[str, Any] = header("tiers", scenario, opts, shape) | {"policies": {}}
    summary["hygiene"] = (
        f"one lab; the policies' order shuffled each repeat (seed {opts.seed}); after each arm every instance "
        f"idle, then {SETTLE_S:g} s to settle"
    )
    for policy, runs in per.items():
        out = aggregate([{k: v for k, v in r.items() if k != "steps"} for r in runs])
        out["flows_moved"] = sum(r["flows_moved"] for r in runs)
        out["steps"] = [
            aggregate([r["steps"][k] for r in runs]) | {"rate": runs[0]["steps"][k]["rate"]}
            for k in range(len(runs[0]["steps"]))
        ]
        summary["policies"][policy] = out
    res.write(summary)
    from .report import tiers_report

    tiers_report(res, summary, spec, scenario, intent)
    return summary
