"""`dinet experiment isolation [SCENARIO]`: performance isolation of bulk and interactive traffic
(draft-song-dmsc-problem-statement s5.2).

One lab of the scenario (default topo/scenarios/isolation.yaml: two edges behind 50 Mbit/s paths, a model
repository in the cloud). Every client chats with the delay-sensitive service, Poisson, marked with its
class's DSCP as dinet marks it where it starts (the steering tunnels carry it outside). Three arms, their order
shuffled each repeat, each instance idle and a settle between two:
- `no-sync`: the chat alone, one FIFO per link (the link's TBF);
- `sync`: the same while the repository pushes a model to every edge (one bulk TCP stream per edge, marked
  DSCP LE as `dinet sync` marks UFTP; iperf3 stands in for the transfer: the same bytes over the same links
  as a unicast sync, without the multicast domain this scenario does not have), one FIFO per link;
- `sync-classes`: the same with class-based queuing on every link with a rate (dinet.lab.classes: HTB by
  DSCP, interactive inference first, the sync last, borrowing whatever the others leave).
Per arm: TTFT p50/p99 (per repeat and pooled with its bootstrap interval), jitter (RFC 3550's mean absolute
difference of consecutive requests' TTFT, in start order), SLO attainment, the sync's throughput, and where
the CPU went while the chat ran (dinet.lab.cpu: the machine's busy cores, the delay lines', the edges' model
servers'): queues on the wire are not the only thing the sync shares with the chat in an emulation.
Goal (the issue's): with classes, TTFT p99 within 10% of the no-sync run while the sync still gets >= 80% of
the capacity it has with no classes."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DinetError
from ..lab.cpu import Meter
from ..lab.linkem import stop_processes
from ..lab.net import Lab
from ..lab.scenario import ScenarioSpec, load
from .common import (
    LEAD_S,
    SETTLE_S,
    Options,
    Results,
    aggregate,
    arms,
    class_figures,
    client_loads,
    header,
    pct,
    pooled_p99,
    stop_loads,
    wait_idle,
)

log = logging.getLogger(__name__)

ARMS = ("no-sync", "sync", "sync-classes")
IPERF_PORT = 5201
RAMP_S = 2.0  # the sync's TCP streams reach their rate (a few round trips of slow start) before the chat starts


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    chat = next(s for s in spec.client_services() if s.class_ == "delay-sensitive")
    edges = [i.name for i in spec.instances if i.service == chat.name]
    repo = next(i.name for i in spec.instances if i.service != chat.name)
    return {
        "service": chat.name,
        "duration": 8.0 if quick else 30.0,
        "rate": 2.0,  # requests per second per client: far below what the edges serve (their queue stays out)
        "output": [8, 32],
        "repo": repo,
        "edges": edges,
    }


def jitter(recs: list[dict[str, Any]]) -> float | None:
    """RFC 3550's interarrival jitter idea applied to TTFT: the mean |TTFT_i - TTFT_i-1| in start order."""
    ttft = [r["ttft_ms"] for r in sorted(recs, key=lambda r: r["t"]) if r["status"] == "ok" and r["ttft_ms"]]
    if len(ttft) < 2:
        return None
    return sum(abs(b - a) for a, b in zip(ttft, ttft[1:], strict=False)) / (len(ttft) - 1)


def start_sync(lab: Lab, shape: dict[str, Any], seconds: float) -> list[subprocess.Popen[str]]:
    """The repository's push: an iperf3 server on every edge, then one stream from the repository to each,
    marked DSCP LE (dinet_consts.h DINET_DSCP_SYNC) as dinet sync marks UFTP."""
    from ..netutil import dscp_of

    servers = [
        lab.procs.popen(
            e, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for e in shape["edges"]
    ]

    def listening(edge: str) -> Callable[[], bool]:
        return lambda: f":{IPERF_PORT} " in lab.hosts[edge].cmd("ss -ltnH")

    for e in shape["edges"]:  # listening before the streams start: a connect that races it would fail
        lab.wait_until(listening(e), f"iperf3 on {e}", 10.0)
    tos = str(dscp_of("sync") << 2)
    clients = [
        lab.procs.popen(
            shape["repo"],
            ["iperf3", "-c", str(lab.instances[e].endpoint), "-p", str(IPERF_PORT), "-t", f"{seconds:.1f}"]
            + ["-S", tos, "-J"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for e in shape["edges"]
    ]
    return servers + clients


def sync_mbit(procs: list[subprocess.Popen[str]], n_edges: int) -> float:
    """The streams' throughput (the receivers' count), Mbit/s summed over the edges."""
    total = 0.0
    for p in procs[n_edges:]:
        out, err = p.communicate(timeout=120)
        try:
            total += json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
        except (json.JSONDecodeError, KeyError) as e:
            raise DinetError(f"the sync's stream did not report: {err.strip() or out[:200]} ({e})") from None
    stop_processes(procs[:n_edges])
    return total


def meter(lab: Lab, shape: dict[str, Any]) -> Meter:
    """The CPU meter of a run: the delay lines (every emulated link's), the edges' model servers."""
    lines = [e.pid for e in lab.links.emulators if e.pid]
    servers = [lab.instances[e].procs[0].pid for e in shape["edges"] if lab.instances[e].procs]
    return Meter({"delay_lines": lines, "edge_servers": servers})


def one_run(
    lab: Lab, arm: str, shape: dict[str, Any], seed: int
) -> tuple[list[dict[str, Any]], float, dict[str, float]]:
    lab.links.set_classes(arm == "sync-classes")
    syncs: list[subprocess.Popen[str]] = []
    lead = LEAD_S
    if arm != "no-sync":
        syncs = start_sync(lab, shape, LEAD_S + RAMP_S + shape["duration"] + 1.0)
        lead += RAMP_S
    start = time.time() + lead
    out = ["--output-min", str(shape["output"][0]), "--output-max", str(shape["output"][1])]
    loads = client_loads(lab, start, shape["duration"], shape["rate"], seed, out, services=(shape["service"],))
    mbit, cpu, m = 0.0, {}, meter(lab, shape)
    try:
        time.sleep(max(0.0, start - time.time()))  # the chat's start: the meter counts while it runs
        m.start()
        recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + lead + 120)]
        cpu = m.stop()
        if syncs:
            mbit = sync_mbit(syncs, len(shape["edges"]))
    finally:
        stop_loads(loads)
        stop_processes(syncs)
    wait_idle(lab, shape["edges"])
    time.sleep(SETTLE_S)  # the next arm starts from idle instances and empty queues
    return recs, mbit, cpu


def run(scenario: Path, opts: Options) -> dict[str, Any]:
    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "isolation")
    slos = {s.name: s.slo for s in spec.services}
    per: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    counts: dict[str, dict[str, int]] = {}
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        intent = lab.intent.as_dict()
        for rep, arm, _last in arms(ARMS, opts, "isolation"):
            recs, mbit, cpu = one_run(lab, arm, shape, opts.seed + rep)
            res.add(recs, repeat=rep, arm=arm)
            row = class_figures(recs, slos, shape["duration"])
            row |= {"jitter_ms": jitter(recs), "sync_mbit": mbit} | cpu
            per[arm].append(row)
        counts = lab.links.class_counts()
        lab.links.set_classes(False)
    summary: dict[str, Any] = header("isolation", scenario, opts, shape) | {"runs": {}}
    summary["hygiene"] = (
        f"one lab; the arms' order shuffled each repeat (seed {opts.seed}); after each arm the edges idle, then "
        f"{SETTLE_S:g} s to settle; the chat starts {RAMP_S:g} s after the sync's streams"
    )
    for arm, runs in per.items():
        out = aggregate(runs)
        ttft = [r["ttft_ms"] for r in res.records if r["arm"] == arm and r["status"] == "ok" and r["ttft_ms"]]
        out["ttft_p99_pooled"] = pooled_p99(ttft, seed=opts.seed)
        out["ttft_p50_pooled_ms"] = pct(ttft, 50)
        summary["runs"][arm] = out
    base, classes, fifo = (summary["runs"][a] for a in ARMS[0:1] + ARMS[2:3] + ARMS[1:2])
    summary["goals"] = {
        "ttft_p99_classes_over_no_sync": _ratio(classes["ttft_p99_ms"], base["ttft_p99_ms"]),
        "sync_mbit_classes_over_fifo": _ratio(classes["sync_mbit"], fifo["sync_mbit"]),
    }
    summary["class_packets"] = counts
    res.write(summary)
    from .report import isolation_report

    isolation_report(res, summary, spec, scenario, intent)
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
