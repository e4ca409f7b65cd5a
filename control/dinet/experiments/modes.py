"""`dinet experiment modes SCENARIO`: centralized against distributed decisions (CATS framework; draft-song
s5.4), from the same intent (`mode: central|distributed`), on a scenario with two or more ingress nodes.

Per mode one lab; the instances' metric reports are the experiment's (a controlled stimulus, streamed to
whatever takes reports: the one collector, or every ingress node's decider), while every client sends real
requests through the data plane all along. On one clock:
- overload: the instance the first client's service prefers (nearest allowed) reports overload, then idle;
- the decider dies: the process deciding for the first ingress node is killed (mode central: the one
  controller; distributed: that node's decider);
- overload again, of the same instance (it took the flows again after its recovery).
Per mode: the time from each overload to the new split on each ingress node, control messages per second
(reports taken by all deciders and data-plane writes), the share of time two ingress nodes disagree on which
instances take a service's new flows, what reacts after the death, and the established flows moved."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lab.net import Lab
from ..lab.reports import Reports
from ..lab.scenario import ScenarioSpec, load
from ..policy.scores import Level0
from .common import (
    LEAD_S,
    Options,
    Results,
    Sampler,
    aggregate,
    class_figures,
    client_loads,
    flows_moved,
    header,
    run_events,
    stop_loads,
)
from .steering import nearest

log = logging.getLogger(__name__)

MODES = ("central", "distributed")
IDLE, OVERLOADED = Level0(), Level0(gpu_util=0.95, queue_depth=32)


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    if len(spec.ingress) < 2:
        raise ConfigError(f"the modes experiment needs two or more ingress nodes; {spec.name} has one")
    service = spec.client_services()[0].name
    order = nearest(spec, service, spec.client_ingress(spec.clients[0]))
    if len(order) < 2:
        raise ConfigError(f"the modes experiment needs two instances of {service}: one to leave for the other")
    k = 1.0 if quick else 3.0  # seconds per phase
    return {
        "service": service,
        "duration": 7 * k,
        "rate": 2.0,
        "dies": spec.ingress[0].name,
        "events": [
            {"at": 1 * k, "kind": "overload", "instance": order[0]},
            {"at": 2.5 * k, "kind": "recovery", "instance": order[0]},
            {"at": 4 * k, "kind": "decider dies", "instance": ""},
            {"at": 5 * k, "kind": "overload after the death", "instance": order[0]},
        ],
    }


def _disagreement(samples: list[dict[str, Any]], service: str, nodes: list[str], until: float) -> float | None:
    """The share of samples (before `until`) in which the ingress nodes differ in which instances take the
    service's new flows."""
    rows = [s for s in samples if s["t"] < until and all(f"{service}@{n}" in s["weights"] for n in nodes)]
    if not rows:
        return None
    differ = 0
    for s in rows:
        sets = {frozenset(i for i, w in s["weights"][f"{service}@{n}"].items() if w > 0) for n in nodes}
        differ += len(sets) > 1
    return differ / len(rows)


def _rate(samples: list[dict[str, Any]], key: str, t0: float, t1: float) -> float | None:
    rows = [s for s in samples if t0 <= s["t"] <= t1]
    if len(rows) < 2 or rows[-1]["t"] <= rows[0]["t"]:
        return None
    return float((rows[-1][key] - rows[0][key]) / (rows[-1]["t"] - rows[0]["t"]))


def one_run(lab: Lab, shape: dict[str, Any], seed: int) -> tuple[dict[str, Any], list[dict[str, Any]], Sampler]:
    names = [n for n, i in lab.instances.items() if i.running]
    nodes = [ing.name for ing in lab.spec.ingress]
    service = shape["service"]
    start = time.time() + LEAD_S
    with Reports(lab, dict.fromkeys(names, IDLE), lab.spec.report_interval) as reports:
        lab.view.wait_reports(set(names))
        loads = client_loads(lab, start, shape["duration"], shape["rate"], seed, extra=["--output-max", "96"])

        def says(name: str, m: Level0) -> Any:
            return lambda: reports.says.__setitem__(name, m)

        act = {
            "overload": lambda e: says(e["instance"], OVERLOADED),
            "recovery": lambda e: says(e["instance"], IDLE),
            "decider dies": lambda e: lambda: lab.deciding.stop(shape["dies"]),
            "overload after the death": lambda e: says(e["instance"], OVERLOADED),
        }
        events = [(e["at"], e["kind"], act[e["kind"]](e)) for e in shape["events"]]
        stop = threading.Event()
        try:
            with Sampler(lab, start) as sampler:
                run_events(start, events, stop)
                recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + LEAD_S + 60)]
        finally:
            stop.set()
            stop_loads(loads)
    death = next(e["at"] for e in shape["events"] if e["kind"] == "decider dies")
    row: dict[str, Any] = {"reaction_s": {}}
    for e in shape["events"]:
        if e["kind"] == "decider dies":
            continue
        inst = None if e["kind"] == "recovery" else e["instance"]  # recovery: any change of the split
        for n in nodes:
            row["reaction_s"][f"{e['kind']}@{n}"] = sampler.reaction(e["at"], f"{service}@{n}", inst)
    row["control_msgs_per_s"] = _rate(sampler.samples, "reports", 0.0, death)
    row["datapath_writes_per_s"] = _rate(sampler.samples, "writes", 0.0, death)
    row["disagreement_share"] = _disagreement(sampler.samples, service, nodes, death)
    after = [r for r in recs if r["t"] > death]
    row["requests_after_death"] = len(after)
    row["errors_after_death"] = sum(1 for r in after if r["status"] != "ok")
    row["flows_moved"] = flows_moved(recs)
    return row, recs, sampler


def run(scenario: Path, opts: Options) -> dict[str, Any]:
    from tqdm import tqdm

    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "modes")
    slos = {s.name: s.slo for s in spec.services}
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    timelines: dict[str, list[dict[str, Any]]] = {}
    intents: dict[str, Any] = {}
    bar = tqdm(total=opts.repeats * len(MODES), desc="modes", unit="run", disable=not opts.progress)
    for mode in MODES:
        workdir = Path(f"/tmp/dinet-exp-{spec.name}-{mode}")
        # nothing expires while a decider is dead: the reports are the experiment's
        with Lab(spec, target=opts.target, workdir=workdir, agents=False, mode=mode, seed=opts.seed) as lab:
            intents[mode] = lab.intent.as_dict()
            for rep in range(opts.repeats):
                if rep:  # the decider killed in the last run comes back: every run starts whole
                    lab.deciding.restart()
                row, recs, sampler = one_run(lab, shape, opts.seed + rep)
                for cls in ("delay-sensitive", "delay-tolerant"):
                    rs = [r for r in recs if r["cls"] == cls]
                    if rs:
                        row[cls] = class_figures(rs, slos, shape["duration"])
                res.add(recs, mode=mode, repeat=rep)
                per[mode].append(row)
                if rep == 0:
                    timelines[mode] = sampler.samples
                bar.update(1)
    bar.close()
    summary: dict[str, Any] = header("modes", scenario, opts, shape) | {"modes": {}}
    for mode in MODES:
        runs = per[mode]
        flat = [
            {k: v for k, v in r.items() if not isinstance(v, dict)}
            | {f"reaction {k}": v for k, v in r["reaction_s"].items()}
            for r in runs
        ]
        out = aggregate(flat)
        out["flows_moved"] = sum(r["flows_moved"] for r in runs)
        out["keeps_deciding_after_death"] = any(
            r["reaction_s"].get(f"overload after the death@{n}") is not None
            for r in runs
            for n in (ing.name for ing in spec.ingress)
        )
        summary["modes"][mode] = out
    res.write(summary)
    from .report import modes_report

    modes_report(res, summary, spec, scenario, intents, timelines)
    return summary
