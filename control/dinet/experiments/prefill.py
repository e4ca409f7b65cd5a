"""`dinet experiment prefill-decode SCENARIO`: which decode instance takes a session's KV cache.

The prefill stage hands each session's KV cache to the decode stage's VIP; the ingress node places the
session on a decode instance by the decode service's policy: dinet (decode capacity, then the nearest path),
random, or compute-only (the least loaded, the path ignored). Per policy, one client's sessions at a rate
the near decode site cannot hold alone: TTFT, TPOT, the KV hand-over's time (from its start to the decode
instance's first token), SLO attainment, and the bytes that crossed each decode site's link (the records'
KV sizes, and the link's own receive counter)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
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
    flows_moved,
    header,
    pct,
    stop_loads,
    wait_idle,
)

log = logging.getLogger(__name__)

POLICIES = ("dinet", "anycast", "random", "compute-only")


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    decode = [i for i in spec.instances if i.role == "decode"]
    if not decode:
        raise ConfigError(f"the prefill-decode experiment needs decode instances; {spec.name} has none")
    return {
        "service": decode[0].service,
        "duration": 5.0 if quick else 20.0,
        # short prompts (a KV cache of 4-8 MiB each: the links carry them) and long answers (sessions hold the
        # near decode site's KV cache: at this rate it fills, and the policy decides where the rest go)
        "rate": 4.0,
        "prompt": [32, 64],
        "output": [160, 200],
        "decode_sites": sorted({i.site for i in decode}),
    }


def _rx(lab: Lab, site: str) -> int:
    """Bytes the site router received on its link from the ingress node."""
    return int(lab.hosts[site].cmd(f"cat /sys/class/net/{site}-eth0/statistics/rx_bytes").strip())


def one_run(lab: Lab, policy: str, shape: dict[str, Any], seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    lab.set_policy(policy)
    rx0 = {s: _rx(lab, s) for s in shape["decode_sites"]}
    start = time.time() + LEAD_S
    extra = ["--prompt-min", str(shape["prompt"][0]), "--prompt-max", str(shape["prompt"][1])]
    extra += ["--output-min", str(shape["output"][0]), "--output-max", str(shape["output"][1])]
    loads = client_loads(lab, start, shape["duration"], shape["rate"], seed, extra, policy=policy)
    try:
        recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + LEAD_S + 120)]
    finally:
        stop_loads(loads)
    wait_idle(lab, list(lab.instances))
    time.sleep(SETTLE_S)  # the next arm starts from idle instances whose reports have caught up
    rx = {s: _rx(lab, s) - rx0[s] for s in shape["decode_sites"]}
    return recs, rx


def figures(recs: list[dict[str, Any]], rx: dict[str, int], lab: Lab, shape: dict, slos: dict) -> dict[str, Any]:  # type: ignore[type-arg]
    row = class_figures(recs, slos, shape["duration"])
    ok = [r for r in recs if r["status"] == "ok"]
    kv = [r["kv_ms"] for r in ok if r.get("kv_ms") is not None]
    row["kv_ms_p50"], row["kv_ms_p99"] = pct(kv, 50), pct(kv, 99)
    row["kv_ms_mean"] = sum(kv) / len(kv) if kv else None
    site_of = {n: lab.spec.site(i.spec.site).name for n, i in lab.instances.items()}
    row["kv_bytes"] = {s: sum(r["kv_bytes"] for r in ok if site_of.get(r["decode_instance"]) == s) for s in rx}
    row["link_rx_bytes"] = rx
    row["sessions"] = {s: sum(1 for r in ok if site_of.get(r["decode_instance"]) == s) for s in rx}
    row["flows_moved"] = flows_moved(recs)
    return row


def run(scenario: Path, opts: Options, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "prefill-decode")
    slos = {s.name: s.slo for s in spec.services}
    per: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        intent = lab.intent.as_dict()
        for rep, policy, _last in arms(policies, opts, "prefill-decode"):
            recs, rx = one_run(lab, policy, shape, opts.seed + rep)
            res.add(recs, repeat=rep, policy=policy)
            per[policy].append(figures(recs, rx, lab, shape, slos))
    summary: dict[str, Any] = header("prefill-decode", scenario, opts, shape) | {"policies": {}}
    summary["hygiene"] = (
        f"one lab; the policies' order shuffled each repeat (seed {opts.seed}); after each arm every instance "
        f"idle, then {SETTLE_S:g} s to settle"
    )
    for policy, runs in per.items():
        out = aggregate([{k: v for k, v in r.items() if not isinstance(v, dict)} for r in runs])
        out["flows_moved"] = sum(r["flows_moved"] for r in runs)
        for key in ("kv_bytes", "link_rx_bytes", "sessions"):
            out[key] = {s: sum(r[key][s] for r in runs) // len(runs) for s in shape["decode_sites"]}
        summary["policies"][policy] = out
    res.write(summary)
    from .report import prefill_report

    prefill_report(res, summary, spec, scenario, intent)
    return summary
