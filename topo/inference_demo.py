"""The main demo: computing-aware steering of an inference service on XDP in network namespaces.

The cloud-edge scenario with `dinet serve` model servers on every instance (edge: a small GPU, regional and
cloud: larger ones), a metric agent per instance scraping its vLLM-style /metrics into the collector, the
controller deciding weights from those metrics and the sites' delays, and `dinet load` as the client:
  1. delay-sensitive requests go to the nearest site (edge);
  2. long streams open on the edge instances;
  3. a burst of work fills the edge engines' KV caches: their agents report it, the controller takes the
     edge out of new flows; new requests go to the next nearest site while the edge's open streams go on
     and finish, every token delivered;
  4. prints per instance the requests each phase got, and the streams' outcome.
Everything it creates is removed at the end, also on Ctrl-C or error.

    sudo make demo          (or: sudo .venv/bin/python -m topo.inference_demo [--target bmv2] [--json FILE])
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from dinet.policy.decide import TrafficClass
from dinet.services.collect import Agent, Collector, CollectorServer
from dinet.services.controller import Controller, ServiceIntent, SitePath
from dinet.targets import netns
from dinet.workload.load import LoadSpec, Record, run_load
from dinet.workload.metrics_agent import MetricsAgent
from topo.cloud_edge import VIP4, CloudEdge

PROFILES = {1: "tiny-test", 2: "llama3-8b-a100", 3: "llama3-8b-a100"}  # edge: a small GPU, easy to fill
DELAY_MS = {1: 2.0, 2: 10.0, 3: 30.0}


def load_in(ns: str, spec: LoadSpec) -> list[Record]:
    """`dinet load` from the client's namespace (its sockets are made there)."""
    with netns.entered(ns):
        return asyncio.run(run_load(spec, progress=False))


class Scrapers:
    """A metric agent per instance, scraping its /metrics from inside the instance's namespace every 0.2 s
    and reporting to the collector on this host."""

    def __init__(self, ce: CloudEdge, svc: str, collector: str):
        self.stop = threading.Event()
        self.threads = []
        for h in ce.hosts:
            agent = Agent(collector, f"token-{h.name}")
            # every instance shares this machine: the host's CPU would make them all look alike, so the
            # agents report the engines' own figures (queue, KV cache, tokens)
            ma = MetricsAgent(f"http://127.0.0.1:{ce.tcp_port}/metrics", svc, h.instance_id, agent, 0.2, host_cpu=False)

            def run(ma: MetricsAgent = ma, ns: str = ce.topo.ns(h.name), agent: Agent = agent) -> None:
                while not self.stop.is_set():
                    with netns.entered(ns):
                        ma.once()
                    self.stop.wait(ma.interval)
                agent.close()

            self.threads.append(threading.Thread(target=run, daemon=True))
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["xdp", "bmv2"], default="xdp")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (namespaces and XDP need it)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    prefix = f"di{os.getpid() % 10000}"
    print(f"building the cloud-edge topology with dinet serve instances (namespaces {prefix}*) ...", flush=True)
    results: dict[str, object] = {}
    with CloudEdge(prefix, target=a.target, serve_profiles=PROFILES) as ce:
        ce.install()
        svc = ce.services()["web4"]
        hosts = {h.instance_id: h for h in ce.hosts}
        intent = [ServiceIntent(svc, TrafficClass.DELAY_SENSITIVE, tuple(h.instance() for h in ce.hosts))]
        ctl = Controller(ce.steer, intent, {site: SitePath(d) for site, d in DELAY_MS.items()})
        ctl.start()
        tokens = {f"token-{h.name}": (h.name, {(svc, h.instance_id)}) for h in ce.hosts}
        col = Collector.with_tokens(tokens, timeout=3.0)
        ctl.attach(col)
        decided = ctl.decisions
        with CollectorServer(col, insecure=True) as srv:  # the agents are in-process threads on this host
            scrapers = Scrapers(ce, str(svc), srv.address)
            try:
                wait_for(lambda: len(col.samples(svc)) == len(ce.hosts), "every instance's first report")
                # and decided on: a report is stored before the decision on it is written
                wait_for(lambda: ctl.decisions >= decided + len(ce.hosts), "the decisions on those reports")
                url = f"http://{VIP4}:{ce.tcp_port}"
                print(
                    f"ready in {time.monotonic() - t0:.1f}s: {svc} on {len(ce.hosts)} dinet serve instances; "
                    f"sites at {DELAY_MS} ms; weights {weight_view(ctl, svc, hosts)}"
                )
                quick = LoadSpec(
                    url,
                    duration=2.0,
                    schedule=[(0.0, 10.0)],
                    prompt_tokens=(32, 64),
                    max_tokens=(8, 16),
                    sensitive_share=1.0,
                    seed=1,
                )
                p1 = load_in(ce.client_ns, quick)
                # long streams open on the edge, then a burst fills the edge's KV caches
                streams: list[Record] = []
                long = LoadSpec(
                    url,
                    duration=0.5,
                    schedule=[(0.0, 20.0)],
                    prompt_tokens=(50, 50),
                    max_tokens=(300, 300),
                    sensitive_share=1.0,
                    seed=2,
                )
                th = threading.Thread(target=lambda: streams.extend(load_in(ce.client_ns, long)))
                th.start()
                edge_ids = [(svc, h.instance_id) for h in ce.hosts if h.site == 1]
                wait_for(  # the streams are open and streaming on the edge (its agents say so) before the burst
                    lambda: sum(col.latest[r].metrics.active_sessions for r in edge_ids) >= len(long.arrivals()),
                    "the streams running on the edge",
                )
                # a load step at the edge site: its local users fill both edge engines (sent inside each edge
                # host, so none of it is steered away), enough queued work to keep them full for many seconds
                burst = LoadSpec(
                    f"http://127.0.0.1:{ce.tcp_port}",
                    duration=1.0,
                    schedule=[(0.0, 40.0)],  # ~40 each: a queue of more than 32 is overload by itself
                    prompt_tokens=(200, 200),
                    max_tokens=(300, 300),
                    sensitive_share=1.0,
                    seed=3,
                )
                burst_recs: list[Record] = []
                bursts = [
                    threading.Thread(
                        target=lambda ns: burst_recs.extend(load_in(ns, burst)), args=(ce.topo.ns(h.name),)
                    )
                    for h in ce.hosts
                    if h.site == 1
                ]
                for tb in bursts:
                    tb.start()
                wait_for(
                    lambda: all(i.weight == 0 for i in ctl.installed[svc] if i.site_id == 1), "edge overload decided"
                )
                overloaded_at = time.monotonic()
                print(f"edge overloaded: weights {weight_view(ctl, svc, hosts)}")
                # the edge may drain its burst and take new flows again before the new requests end: only
                # those that arrive while it is closed count against it
                reopened: list[float] = []
                done = threading.Event()

                def watch() -> None:
                    while not done.wait(0.02) and not reopened:
                        if any(i.weight > 0 for i in ctl.installed[svc] if i.site_id == 1):
                            reopened.append(time.monotonic())

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                p2_t0 = time.monotonic()
                p2 = load_in(ce.client_ns, quick)
                done.set()
                watcher.join()
                if reopened:
                    print(f"the edge took new flows again {reopened[0] - p2_t0:.2f} s into the new requests")
                    p2 = [r for r in p2 if p2_t0 + r.t < reopened[0] - 0.05]  # the watch samples every 20 ms
                th.join()  # the streams end on their own; the bursts are cut short by the teardown
            finally:
                scrapers.close()
        by = lambda recs: Counter(r.instance for r in recs if r.status == "ok")  # noqa: E731
        c1, c2, cs = by(p1), by(p2), by(streams)
        print("\nrequests answered per instance")
        print(f"  {'instance':<10}{'site':>5}{'before':>8}{'streams':>9}{'after overload':>16}")
        for h in ce.hosts:
            print(f"  {h.name:<10}{h.site:>5}{c1[h.name]:>8}{cs[h.name]:>9}{c2[h.name]:>16}")
        edge = {h.name for h in ce.hosts if h.site == 1}
        finished = [r for r in streams if r.status == "ok" and r.completion_tokens == 300]
        print(
            f"\nstreams open on the edge when it was overloaded: {len(streams)}; finished with all 300 tokens: "
            f"{len(finished)}"
        )
        print(
            f"new requests on the edge while it was overloaded: {sum(c2[n] for n in edge)} of {sum(c2.values())} "
            "(want 0)"
        )
        results.update(
            before=dict(c1),
            streams=dict(cs),
            after=dict(c2),
            streams_total=len(streams),
            streams_finished=len(finished),
            edge_after=sum(c2[n] for n in edge),
            reaction_s=round(overloaded_at - t0, 2),
        )
    for tb in bursts:
        tb.join()  # its servers are gone: what is left of the burst fails at once
    print(f"\ncleaned up; demo took {time.monotonic() - t0:.1f}s")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    ok = (
        sum(c1[n] for n in edge) == sum(c1.values()) > 0
        and len(finished) == len(streams) > 0
        and results["edge_after"] == 0
        and sum(c2.values()) > 0
    )
    return 0 if ok else 1


def wait_for(cond: object, what: str, seconds: float = 10.0) -> None:
    """Returns once cond() holds (checked every 20 ms); a demo that cannot get there says what it waited for."""
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: no {what} within {seconds:.0f} s")
        time.sleep(0.02)


def weight_view(ctl: Controller, svc: object, hosts: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {hosts[i.instance_id].name: i.weight for i in ctl.installed[svc]}  # type: ignore[index]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:  # a condition the demo waited for did not come (said in one line)
        print(e, file=sys.stderr)
        sys.exit(1)
