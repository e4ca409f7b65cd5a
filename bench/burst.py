"""A burst of new flows right after a metric report: where each placement puts it, and what the burst's requests
are predicted to see there. The XDP steering program (BPF_PROG_TEST_RUN, back to back: the whole burst takes a
few milliseconds, far less than a report interval) places the burst three ways on the same weights:

- `ring`: the weighted ring alone (placement: flow): each new flow where its hash falls, whatever came before;
- `two-choices`: the lower loaded of two ring candidates, the load being the controller's (predicted TTFT, and
  what each request adds once the instance is full) plus the flows the data plane placed there since;
- `l7-stale` (computed, not sent): an L7 endpoint picker that scraped every instance just before the burst and
  sends each request to the fewest waiting, then least KV used (as the Gateway API Inference Extension and
  llm-d score), as a picker that scrapes every 50 ms does for a burst shorter than that.

The instances' state and the weights and loads come from dinet.policy.decide on one report (a cloud-edge
service: two small edges near, two large clouds far, some requests running). Per placement: flows per instance,
the flows placed beyond an instance's free places (they wait), and each request's predicted TTFT as the
data plane's own arithmetic gives it (its place in its instance's order: the load that flow saw).

`least-load` (computed) is the bound: each request to the lowest load given every one placed before it.

    sudo .venv/bin/python -m bench.burst [--quick] [--flows 50 100 200 400] [--repeats 5] [--out FILE]

Writes bench/results/burst.json: {"instances", "free_total", "bursts": [{"flows", "placements": {NAME:
{"per_instance", "beyond_free", "beyond_free_total", "ttft_p50_ms", "ttft_p99_ms", "ttft_mean_ms",
"slo_attainment", "burst_ms", ...}}}]}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import RESULTS, host, need_root, write
from dinet.model import Instance, InstanceLoad, ServiceIntent, ServiceKey, SitePath, Slo, TrafficClass
from dinet.policy.decide import Policy, decide
from dinet.policy.predict import Rates
from dinet.policy.scores import Level0

BPFFS = Path(f"/sys/fs/bpf/dinet-bench-burst-{os.getpid()}")
RING = ServiceKey.parse("10.99.7.1:8000/tcp")
TWO = ServiceKey.parse("10.99.7.2:8000/tcp")
SLO = Slo(ttft_ms=1000, tpot_ms=250)
# (name, site, one-way delay ms, rates, the report just before the burst)
INSTANCES = [
    ("edge1", 1, 2.0, Rates(service_s=2.0, capacity=8.0, prefill_ms=20.0, tpot_ms=25.0), Level0(active_sessions=3)),
    ("edge2", 2, 4.0, Rates(service_s=2.0, capacity=8.0, prefill_ms=20.0, tpot_ms=25.0), Level0(active_sessions=6)),
    ("cloud1", 3, 20.0, Rates(service_s=2.0, capacity=64.0, prefill_ms=8.0, tpot_ms=20.0), Level0(active_sessions=24)),
    ("cloud2", 4, 25.0, Rates(service_s=2.0, capacity=64.0, prefill_ms=8.0, tpot_ms=20.0), Level0(active_sessions=40)),
]


def decided(two_choices: bool) -> list[Instance]:
    """The service's instances as dinet decides them on the report (weights; loads for two choices)."""
    insts = tuple(Instance(k + 1, f"192.0.2.{k + 1}", 1, site_id=site) for k, (_, site, *_r) in enumerate(INSTANCES))
    intent = ServiceIntent(RING, TrafficClass.DELAY_SENSITIVE, insts, slo=SLO, two_choices=two_choices)
    samples = {k + 1: m for k, (*_r, m) in enumerate(INSTANCES)}
    rates = {k + 1: replace(r, observations=1) for k, (_, _s, _d, r, _m) in enumerate(INSTANCES)}
    paths = {site: SitePath(delay) for _, site, delay, *_r in INSTANCES}
    return decide(intent, samples, set(), paths, (), Policy(smoothing=1.0), None, rates)


def predicted(loads: dict[int, InstanceLoad], order: list[int]) -> list[float]:
    """Each request's predicted TTFT (ms) in the order placed: the load its instance had when it came."""
    seen: dict[int, int] = {}
    out = []
    for iid in order:
        out.append(loads[iid].now(seen.get(iid, 0)) / 1000)
        seen[iid] = seen.get(iid, 0) + 1
    return out


def summary(order: list[int], loads: dict[int, InstanceLoad], names: dict[int, str], burst_s: float) -> dict:
    ttft = sorted(predicted(loads, order))
    per = {names[i]: order.count(i) for i in names}
    beyond = {names[i]: max(0, order.count(i) - loads[i].free) for i in names}
    return {
        "per_instance": per,
        "beyond_free": beyond,
        "beyond_free_total": sum(beyond.values()),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p99_ms": round(ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))], 1),
        "ttft_mean_ms": round(statistics.fmean(ttft), 1),
        "slo_attainment": round(sum(t <= SLO.ttft_ms for t in ttft) / len(ttft), 3),
        "burst_ms": round(burst_s * 1000, 2),
    }


def least_load(loads: dict[int, InstanceLoad], flows: int) -> list[int]:
    """Each request to the instance whose load is lowest given every one placed before it (ties: the lower id):
    what a per-request picker with an exact, instant view would do (a bound, not a deployable policy)."""
    seen = dict.fromkeys(loads, 0)
    out = []
    for _ in range(flows):
        iid = min(loads, key=lambda i: (loads[i].now(seen[i]), i))
        seen[iid] += 1
        out.append(iid)
    return out


def run(sizes: list[int], repeat: int) -> dict[str, Any]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from dinet.targets.base import SteerSizes
    from dinet.targets.bpfsys import XDP_TX, test_run
    from dinet.targets.xdp import SteeringNode

    ring_insts, two_insts = decided(False), decided(True)
    loads = {i.instance_id: i.load for i in two_insts if i.load}
    names = {k + 1: name for k, (name, *_r) in enumerate(INSTANCES)}
    by_addr = {str(i.endpoint): i.instance_id for i in ring_insts}
    # the L7 picker's scrape before the burst: fewest waiting, then least KV used; every request of a burst
    # shorter than its scrape interval sees that same state
    state = {k + 1: (m.queue_depth, m.active_sessions / r.capacity) for k, (_, _s, _d, r, m) in enumerate(INSTANCES)}
    pick = min(names, key=lambda i: (*state[i], i))
    node = SteeringNode("burst", SteerSizes(16, 16, 4099, 65536), bpffs_root=BPFFS)
    rows: dict[int, dict[str, Any]] = {}
    seq = 0
    try:
        node.configure(src4="192.0.2.254", static_next_hop=(0, "02:00:00:00:00:01", "02:00:00:00:00:02"))
        node.add_service(RING)
        node.add_service(TWO, two_choices=True)
        node.set_instances(RING, ring_insts)
        for flows in sizes:
            runs: dict[str, list[dict]] = {"ring": [], "two-choices": []}
            for _ in range(repeat):
                seq += 1  # a new report before each burst: the data plane's counts restart
                node.set_instances(TWO, [replace(i, load=replace(i.load, seq=seq)) if i.load else i for i in two_insts])
                for name, svc in (("ring", RING), ("two-choices", TWO)):
                    frames = [
                        bytes(
                            Ether()
                            / IP(src=f"10.{seq % 200}.{n // 250}.{1 + n % 250}", dst=str(svc.vip))
                            / TCP(sport=40000 + n, dport=svc.port, flags="S")
                        )
                        for n in range(flows)
                    ]
                    order = []
                    t0 = time.perf_counter()
                    for f in frames:
                        res = test_run(node.prog_fd, f)
                        if res.action != XDP_TX:
                            raise RuntimeError(f"a burst flow got {res.action_name}")
                        order.append(res.data)
                    took = time.perf_counter() - t0
                    ids = [by_addr[str(IP(d[14:]).dst)] for d in order]
                    runs[name].append(summary(ids, loads, names, took))
            row = {name: _pooled(rs) for name, rs in runs.items()}
            row["l7-stale"] = summary([pick] * flows, loads, names, 0.0)
            row["least-load"] = summary(least_load(loads, flows), loads, names, 0.0)
            rows[flows] = row
    finally:
        node.destroy()
        from dinet.targets.bcc_program import remove_pinned_tree

        remove_pinned_tree(BPFFS)
    return {
        "host": host(),
        "repeats": repeat,
        "instances": {
            names[i.instance_id]: {"weight": i.weight, "load": i.load.__dict__ if i.load else None} for i in two_insts
        },
        "free_total": sum(ld.free for ld in loads.values()),
        "bursts": [{"flows": n, "placements": row} for n, row in rows.items()],
    }


def _pooled(runs: list[dict]) -> dict:
    """The median run (by TTFT p99) of the repeats, with the range of p99 and of the flows beyond free."""
    mid = sorted(runs, key=lambda x: x["ttft_p99_ms"])[len(runs) // 2]
    return mid | {
        "ttft_p99_ms_range": [min(x["ttft_p99_ms"] for x in runs), max(x["ttft_p99_ms"] for x in runs)],
        "beyond_free_range": [min(x["beyond_free_total"] for x in runs), max(x["beyond_free_total"] for x in runs)],
        "slo_attainment_mean": round(statistics.fmean(x["slo_attainment"] for x in runs), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, nargs="+", default=[50, 100, 200, 400], help="burst sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    ap.add_argument("--out", type=Path, default=RESULTS / "burst.json")
    a = ap.parse_args()
    if not need_root():
        return 1
    res = run(a.flows, 3 if a.quick else a.repeats)
    print(f"instances after the report (free places before one waits: {res['free_total']} in all)")
    for name, inst in res["instances"].items():
        ld = inst["load"]
        print(
            f"  {name:<8} weight {inst['weight']:>3}  TTFT {ld['value'] / 1000:>6.1f} ms  free {ld['free']:>3}"
            f"  then +{ld['step'] / 1000:.1f} ms each"
        )
    for b in res["bursts"]:
        print(f"\n{b['flows']} new flows in a burst (measured: median of {res['repeats']} by p99; computed: one)")
        print(f"  {'placement':<12}{'beyond free':>12}{'TTFT p50':>10}{'p99':>9}{'SLO':>7}  flows per instance")
        for name, p in b["placements"].items():
            print(
                f"  {name:<12}{p['beyond_free_total']:>12}{p['ttft_p50_ms']:>10.0f}{p['ttft_p99_ms']:>9.0f}"
                f"{p['slo_attainment']:>7.2f}  {p['per_instance']}"
            )
    write(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
