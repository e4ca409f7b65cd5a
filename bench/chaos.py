"""The chaos run: while a cloud-edge lab serves steady load, faults are injected one after another at random
(seeded): the controller killed (SIGKILL) and restarted, an instance's metrics agent killed and restarted, an
instance's model server killed and restarted, a path from the ingress node to a site cut and restored, and
on XDP the node agent that holds the ingress node's program (`dinet run` drives it over gRPC) killed and
restarted. The
run checks, throughout, what a user relies on:

- `dinet run` never exits on its own (only when this run kills it);
- no request is lost, and no established flow moved, except those on an instance under a fault (its server
  killed, or the path to its site cut) while the fault lasted and until what decides could see it;
- every instance that reports again is back in service within the expiry plus one decision;
- nothing is left behind afterwards (namespaces, processes, pins).

    sudo .venv/bin/python -m bench.chaos [--quick] [--seed N] [--duration S] [--target xdp|bmv2]

It prints the figures and writes bench/results/chaos[-bmv2][-quick].json: {"faults", "requests", "lost",
"lost_unexplained", "flows_moved_unexplained", "controller_exits", "longest_without_decision_s", ...}. The
goal is 0 for every `unexplained` figure and for `controller_exits`. --quick (CI): one fault of each kind in
about a minute. --target bmv2 adds the ingress switch killed and started again (empty: what decides finds
it and writes its tables back; the flows' registers are gone, P4Runtime on BMv2 cannot write them, so every
flow through the switch counts as under that fault).

Attribution is by time where the client cannot know the instance: a request that failed before any answer
(no instance header) is explained only if it began while some instance was under a fault; one that names
its instance is explained only if that instance was. The lab measures paths by ping (probes) so that a cut
path is seen as it would be in a network; no metric is fed to the controller by this run."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS, host, need_root, write
from dinet.errors import DinetError
from dinet.experiments.common import client_loads, stop_loads
from dinet.lab.net import Lab
from dinet.lab.scenario import load
from dinet.promtext import fetch, samples

log = logging.getLogger("chaos")
SCENARIO = Path(__file__).resolve().parent.parent / "topo" / "scenarios" / "cloud-edge.yaml"
KINDS = ("agent", "server", "controller", "link")
NODE_AGENT_KINDS = (*KINDS, "node-agent")  # target xdp: the ingress node's program is held by a node agent
SWITCH_KINDS = (*KINDS, "switch")  # target bmv2: the ingress switch killed and started again, empty


def kinds_of(target: str) -> tuple[str, ...]:
    return SWITCH_KINDS if target == "bmv2" else NODE_AGENT_KINDS


RATE = 2.0  # requests per second per client: the edges serve it within their SLOs
LOAD_TIMEOUT_S = 60.0  # dinet load's per-request timeout


@dataclass
class Fault:
    kind: str
    target: str  # an instance, a site, or "controller"
    at: float  # seconds from the start of the load
    restored: float = 0.0
    affected: list[str] = field(default_factory=list)  # instances whose requests it may take
    back_s: float | None = None  # restart to back in service (agent, server)
    report_s: float | None = None  # restart to its first report (the process starting, connecting, scraping)
    decided_s: float | None = None  # first report to back in service: what the control plane answers for


@dataclass
class Timeline:
    """What decides, read every `interval` s: decisions so far, each instance in service; exits of `dinet run`
    that this run did not cause."""

    lab: Lab
    start: float
    interval: float = 0.2
    # each read: (t, decisions so far, instance -> in service, instance -> when it last reported)
    rows: list[tuple[float, float | None, dict[str, int], dict[str, float]]] = field(default_factory=list)
    exits: int = 0
    killing: bool = False  # set while this run kills or restarts the controller
    stop: threading.Event = field(default_factory=threading.Event)
    _seen: set[int] = field(default_factory=set)

    def run(self) -> None:
        names = {str(i.id): n for n, i in self.lab.instances.items()}
        while not self.stop.wait(self.interval):
            t = time.time() - self.start
            proc = self.lab.deciding.controller
            if proc is not None and proc.poll() is not None and not self.killing and id(proc) not in self._seen:
                self._seen.add(id(proc))
                self.exits += 1
                log.error("dinet run exited on its own (rc %s)", proc.returncode)
            try:
                got = list(samples(fetch(self.lab.deciding.metrics_url, timeout=2)))
            except (OSError, DinetError):
                self.rows.append((t, None, {}, {}))  # nothing answers: no decision now
                continue
            decisions = sum(v for n, _, v in got if n == "dinet_decision_seconds_count")
            serving = {names[lab["instance"]]: int(v) for n, lab, v in got if n == "dinet_instance_in_service"}
            ages = {names[lab["instance"]]: v for n, lab, v in got if n == "dinet_metric_age_seconds"}
            self.rows.append((t, decisions, serving, {name: round(t - age, 3) for name, age in ages.items()}))

    def longest_without_decision(self) -> float:
        """The longest stretch in which the count of decisions did not grow (or nothing answered)."""
        longest, since, last = 0.0, self.rows[0][0] if self.rows else 0.0, None
        for t, d, _, _ in self.rows:
            if d is not None and d != last:  # grown, or a restarted controller counting anew
                since, last = t, d
            longest = max(longest, t - since)
        return round(longest, 2)

    def back_in_service(self, name: str, after: float) -> float | None:
        """Seconds from `after` to the first row showing the instance in service."""
        return next((round(t - after, 2) for t, _, s, _ in self.rows if t >= after and s.get(name) == 1), None)

    def first_report(self, name: str, after: float) -> float | None:
        """When the instance's first report after `after` came, as the collector's metric age tells it (the
        earliest seen: a second report before the next row hides the first, so up to one report late)."""
        return next((at[name] for *_, at in self.rows if name in at and at[name] >= after), None)


def plan(lab: Lab, rng: random.Random, duration: float, quick: bool) -> list[Fault]:
    """The faults, one after another: each held for a few seconds, then a quiet gap."""
    edges = [n for n, i in lab.instances.items() if not i.spec.pool]
    sites = sorted({lab.spec.site(lab.instances[n].spec.site).name for n in edges})
    all_kinds = kinds_of(lab.target)
    kinds = list(all_kinds) if quick else []
    t, out = 6.0, []
    while t < duration - 14:
        kind = kinds.pop(0) if quick else rng.choice(all_kinds)
        target = {
            "agent": rng.choice(edges),
            "server": rng.choice(edges),
            "controller": "controller",
            "switch": lab.spec.ingress[0].name,
            "node-agent": lab.spec.ingress[0].name,
        }.get(kind, rng.choice(sites))
        out.append(Fault(kind, target, round(t, 1)))
        t += rng.uniform(4, 6) + rng.uniform(4, 8)  # held, then quiet
        if quick and not kinds:
            break
    return out


def inject(lab: Lab, f: Fault, tl: Timeline, hold: float) -> None:
    ingress = lab.spec.ingress[0].name
    if f.kind == "node-agent":  # its program forwards on from the pinned maps; `dinet run` counts, retries
        lab.node_agents.kill(f.target)
        time.sleep(hold)
        lab.node_agents.start(f.target)
    elif f.kind == "switch":  # its flow registers go with it (P4Runtime cannot write them back on BMv2)
        f.affected = list(lab.instances)
        lab.kill_switch(f.target)
        time.sleep(hold)
        lab.start_switch(f.target)
    elif f.kind == "controller":
        tl.killing = True
        lab.deciding.stop()
        time.sleep(hold)  # the fault's duration, not a wait for a state
        lab.deciding.restart()
        tl.killing = False
    elif f.kind in ("agent", "server"):
        if f.kind == "server":
            f.affected = [f.target]
        which = "serve" if f.kind == "server" else "agent"
        lab.engines.kill(f.target, which)
        time.sleep(hold)
        lab.engines.restart(f.target, which)
    else:  # a path cut: every instance at the site is out of reach
        f.affected = [n for n, i in lab.instances.items() if lab.spec.site(i.spec.site).name == f.target]
        lab.links.cut_path(ingress, f.target, True)
        time.sleep(hold)
        lab.links.cut_path(ingress, f.target, False)
    f.restored = round(time.time() - tl.start, 2)


def attribute(records: list[dict[str, Any]], faults: list[Fault], grace: float) -> dict[str, Any]:
    """Lost requests and moved flows, each explained by a fault on its instance (while it lasted, and for
    `grace` seconds after: the time what decides needs to see an instance again) or not."""
    windows = [(f.at, f.restored + grace, set(f.affected)) for f in faults if f.affected]
    lost, unexplained, moved, reasons = 0, [], 0, {}
    for r in records:
        if r["status"] == "ok":
            continue
        lost += 1
        reasons[r["status"]] = reasons.get(r["status"], 0) + 1
        start = r["t"] if r.get("sent_s") is None else r["sent_s"]  # when it went out (a busy client lags)
        end = start + (r.get("failed_ms") or LOAD_TIMEOUT_S * 1000) / 1000
        inst = r.get("instance") or ""
        hit = [w for w in windows if start <= w[1] and end >= w[0] and (not inst or inst in w[2])]
        if not hit:
            keys = ("sent_s", "status", "instance", "ttft_ms", "failed_ms", "error", "client", "service")
            unexplained.append({k: r.get(k) for k in keys})
            if r.get("ttft_ms") is not None:  # its stream had begun: it broke on a live instance
                moved += 1
    return {"lost": lost, "lost_unexplained": len(unexplained), "flows_moved_unexplained": moved,
            "why_lost": reasons, "unexplained": unexplained[:20]}  # fmt: skip


def leftovers(lab: Lab) -> list[str]:
    """What the lab left on the machine after its teardown (it should be nothing)."""
    from dinet.paths import BPFFS_ROOT

    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(lab.tag)]  # fmt: skip
    left += [str(p) for p in BPFFS_ROOT.glob(f"{lab.tag}*")] if BPFFS_ROOT.exists() else []
    left += [f"pid {p}" for p in lab.state.get("pids", []) if Path(f"/proc/{p}").exists()]
    left += [str(lab.state_path)] if lab.state_path.exists() else []
    return left


def run(quick: bool = False, seed: int = 1, duration: float | None = None, target: str = "xdp") -> dict[str, Any]:
    spec = load(SCENARIO).model_copy(update={"name": "chaos"})
    duration = duration or (75.0 if quick else 300.0)
    rng = random.Random(seed)
    lab = Lab(
        spec, target=target, workdir=Path("/tmp/dinet-chaos"), probes=True, seed=seed, node_agents=target == "xdp"
    )
    grace = spec.collector_timeout + spec.report_interval + 1.0 + 2.0  # expiry, a report, a probe round
    with lab:
        start = time.time() + 2.0
        faults = plan(lab, rng, duration, quick)
        tl = Timeline(lab, start)
        sampler = threading.Thread(target=tl.run, daemon=True, name="timeline")
        sampler.start()
        loads = client_loads(lab, start, duration, RATE, seed)
        try:
            for f in faults:
                time.sleep(max(0.0, start + f.at - time.time()))  # the schedule, not a wait for a state
                log.info("%5.1f s: %s %s", f.at, f.kind, f.target)
                inject(lab, f, tl, rng.uniform(4, 6))
            records = [r for ld in loads for r in ld.records(duration + LOAD_TIMEOUT_S + 30)]
        finally:
            stop_loads(loads)
            tl.stop.set()
            sampler.join(timeout=10)
        for f in faults:
            if f.kind in ("agent", "server"):
                f.back_s = tl.back_in_service(f.target, f.restored)
                first = tl.first_report(f.target, f.restored)
                if first is not None:
                    f.report_s = round(first - f.restored, 2)
                    if f.back_s is not None:
                        f.decided_s = round(max(0.0, f.back_s - f.report_s), 2)
        bound = spec.collector_timeout + spec.report_interval + 1.0
        exits = tl.exits + int(lab.deciding.controller is None or lab.deciding.controller.poll() is not None)
    res = {
        "quick": quick,
        "seed": seed,
        "duration_s": duration,
        "faults": len(faults),
        "target": target,
        "by_kind": {k: sum(f.kind == k for f in faults) for k in kinds_of(target)},
        "requests": len(records),
        **attribute(records, faults, grace),
        "controller_exits": exits,
        "longest_without_decision_s": tl.longest_without_decision(),
        "back_in_service_bound_s": bound,
        "back_in_service_max_s": max((f.back_s for f in faults if f.back_s is not None), default=None),
        "decided_after_report_max_s": max((f.decided_s for f in faults if f.decided_s is not None), default=None),
        # how far apart the timeline's reads of /metrics were (the resolution of the two figures above)
        "timeline_gap_max_s": round(max((b[0] - a[0] for a, b in itertools.pairwise(tl.rows)), default=0.0), 2),
        # the bound is on what the control plane does once the instance reports again, not on how long its
        # restarted process takes to start and report (seconds on a loaded 2-core machine)
        "late_or_never_back": sum(
            1 for f in faults if f.kind in ("agent", "server") and (f.decided_s is None or f.decided_s > bound)
        ),
        "leftovers": leftovers(lab),
        "fault_log": [asdict(f) for f in faults],
        "load_start_epoch": round(start, 3),  # the lab's logs carry wall-clock times: t = their time - this
        "host": host(),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one fault of each kind in about a minute (CI)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, help="seconds of load (default 300; --quick 60)")
    ap.add_argument("--target", default="xdp", choices=["xdp", "bmv2"], help="bmv2 adds switch restarts")
    ap.add_argument("--out", help="default bench/results/chaos.json (--quick: chaos-quick.json)")
    a = ap.parse_args(argv)
    if not need_root():
        return 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(a.quick, a.seed, a.duration, a.target)
    keys = ("faults", "requests", "lost", "lost_unexplained", "flows_moved_unexplained", "controller_exits",
            "longest_without_decision_s", "back_in_service_max_s", "decided_after_report_max_s",
            "timeline_gap_max_s", "late_or_never_back")  # fmt: skip
    for k in keys:
        print(f"{k:28} {res[k]}")
    print(f"{'by kind':28} {json.dumps(res['by_kind'])}; lost by status {json.dumps(res['why_lost'])}")
    name = f"chaos{'-bmv2' if a.target == 'bmv2' else ''}{'-quick' if a.quick else ''}.json"
    write(res, Path(a.out) if a.out else RESULTS / name)
    bad = res["lost_unexplained"] or res["flows_moved_unexplained"] or res["controller_exits"] or res["leftovers"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
