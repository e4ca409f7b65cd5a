"""`dinet experiment prefix [SCENARIO]`: conversations keep their KV cache, by the network or by a proxy.

One lab of the scenario (topo/scenarios/prefix.yaml: instances with automatic prefix caching behind one
ingress node). Every client holds multi-turn conversations (`dinet load --turns`: each turn resends the
conversation so far behind a system prompt many users share). Per repeat and per policy, on one clock:
- session: the service is session-affine (dinet's data plane places a conversation's connections by their
  session key and keeps them on its instance); every connection is bound to a source port of its
  conversation's session group;
- five-tuple: the same conversations, the service placed per flow (every connection anew: today's steering),
  from the clients' own ephemeral ports, as a client that knows no session key connects (reused session
  ports would tie a new connection to the instance an old one on that tuple went to, even a failed one);
- l7-prefix: the clients send to an L7 prefix-aware router on the ingress node (`dinet route`: it parses each
  request, hashes the prompt's blocks and sends it where its longest prefix went, with a load guard), the
  field's way (llm-d, SGLang's router), its proxy hop counted.
Events: a load step (the second client starts conversations at three times the rate) and an instance failure
(one instance stops, and comes back after the run). Every arm starts cold: the engines' prefix caches are reset
and the router is new. Per policy: the prefix-cache hit rate (prompt tokens the engines found cached over
prompt tokens sent), TTFT p50/p99, tokens/s, the share of later turns that met the previous turn's instance,
the data plane's session counters; per phase (steady, load step, failure) the hit rate and TTFT p99."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..lab.net import Lab
from ..lab.scenario import ScenarioSpec, load
from .common import (
    LEAD_S,
    SETTLE_S,
    Options,
    Results,
    aggregate,
    arms,
    header,
    meets,
    pct,
    pooled_p99,
    run_events,
    start_load,
    stop_loads,
    timed,
    wait_idle,
)

log = logging.getLogger(__name__)

POLICIES = ("session", "five-tuple", "l7-prefix")


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    """The run's shape: the conversations, their rate, and the events' times and targets."""
    service = spec.client_services()[0].name
    duration = 15.0 if quick else 45.0
    names = [i.name for i in spec.instances if i.service == service and not i.pool]
    return {
        "service": service,
        "duration": duration,
        "rate": 1.0,  # conversations started per second and client (the second client's triples at the step)
        "turns": [3, 5] if quick else [4, 8],
        "system_tokens": 512,
        "system_prompts": 4,
        "question": [64, 192],
        "answer": [16, 32] if quick else [32, 64],
        "think_s": 1.0 if quick else 2.0,
        "events": [
            {"at": round(duration / 3, 1), "kind": "load step", "client": spec.clients[-1].name, "factor": 3.0},
            {"at": round(2 * duration / 3, 1), "kind": "instance failure", "instance": names[0]},
        ],
    }


def _phase(t: float, events: list[dict[str, Any]]) -> str:
    return "failure" if t >= events[1]["at"] else "load step" if t >= events[0]["at"] else "steady"


def _reset_caches(lab: Lab, service: str) -> None:
    """Every running instance forgets its cached prefixes (vLLM's POST /reset_prefix_cache)."""
    from ..creds import client_tls
    from ..targets import netns

    port = lab.spec.service(service).port
    ctx = client_tls(lab.pki.ca) if lab.pki.ca else None
    for name, inst in lab.instances.items():
        if inst.spec.service != service or not inst.running:
            continue
        with netns.entered(lab.ns(name)):
            req = urllib.request.Request(f"{lab.pki.scheme}://127.0.0.1:{port}/reset_prefix_cache", method="POST")
            urllib.request.urlopen(req, timeout=10, context=ctx).read()


def one_run(
    lab: Lab, policy: str, shape: dict[str, Any], seed: int, last: bool = False
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One policy once: every client's conversations and the events on one clock; the records, tagged, and what
    the data plane counted of sessions meanwhile (sessions placed, re-placed, flows that found theirs)."""
    svc = lab.spec.service(shape["service"])
    lab.set_placement("session" if policy == "session" else "flow")
    _reset_caches(lab, svc.name)
    router = lab.servers.start_router(svc.name) if policy == "l7-prefix" else None
    url = router or f"{lab.pki.scheme}://{svc.vip}:{svc.port}"
    start = time.time() + LEAD_S
    step, failure = shape["events"]
    loads = []
    for k, c in enumerate(lab.spec.clients):
        rate = shape["rate"]
        sched = f"0:{rate},{step['at']}:{rate * step['factor']}" if c.name == step["client"] else f"0:{rate}"
        args = ["--duration", str(shape["duration"]), "--schedule", sched, "--seed", str(seed * 100 + k)]
        args += ["--turns", f"{shape['turns'][0]}-{shape['turns'][1]}", "--think-s", str(shape["think_s"])]
        args += ["--system-tokens", str(shape["system_tokens"]), "--system-prompts", str(shape["system_prompts"])]
        args += ["--prompt-min", str(shape["question"][0]), "--prompt-max", str(shape["question"][1])]
        args += ["--output-min", str(shape["answer"][0]), "--output-max", str(shape["answer"][1])]
        args += ["--session-key", "port" if policy == "session" else "none", "--sensitive-share", "1"]
        args += ["--ttft-slo-ms", str(svc.slo.ttft_ms), "--tpot-slo-ms", str(svc.slo.tpot_ms), *lab.pki.args()]
        loads.append(
            start_load(lab, c.name, url, start, args, {"policy": policy, "client": c.name, "service": svc.name})
        )
    before = lab.view.session_counts(svc.name)
    failed: list[str] = []

    def fail() -> None:
        lab.engines.stop(failure["instance"])
        failed.append(failure["instance"])

    stop = threading.Event()
    try:
        run_events(start, [(failure["at"], failure["kind"], fail)], stop)
        recs = [r for ld in loads for r in ld.records(timeout=shape["duration"] + LEAD_S + 180)]
        after = lab.view.session_counts(svc.name)
    finally:
        stop.set()
        stop_loads(loads)
        if router is not None:
            lab.servers.stop_router(router)
        for name in failed:
            lab.engines.start(name)
        if failed:
            lab.view.wait_reports(set(failed))
    if not last:
        wait_idle(lab, [n for n, i in lab.instances.items() if i.spec.service == svc.name])
        time.sleep(SETTLE_S)
    for r in recs:
        r["phase"] = _phase(r["t"], shape["events"])
        r["failed"] = r["instance"] in failed
    return recs, {k: after[k] - before.get(k, 0) for k in after}  # and the data plane's view of the run


def figures(recs: list[dict[str, Any]], slo: Any, duration: float) -> dict[str, Any]:
    """One run's figures: hit rate, TTFT p50/p99, tokens/s, SLO attainment, errors, and the share of later
    turns that met the instance of the turn before (what a cache needs)."""
    ok = [r for r in recs if r["status"] == "ok"]
    looked = [r for r in ok if r.get("cached_tokens") is not None]
    prompt = sum(r["prompt_tokens"] for r in looked)
    by_conv: dict[tuple[str, int], dict[int, str]] = {}
    for r in ok:
        by_conv.setdefault((r["client"], r["conversation"]), {})[r["turn"]] = r["instance"]
    later = [(turns[t - 1], inst) for turns in by_conv.values() for t, inst in turns.items() if t and t - 1 in turns]
    ttft = [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]
    return {
        "requests": len(recs),
        "errors": len(recs) - len(ok),
        "hit_rate": sum(r["cached_tokens"] for r in looked) / prompt if prompt else None,
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "tokens_per_s": sum(r["completion_tokens"] for r in ok) / duration,
        "slo_attainment": sum(meets(r, slo) for r in recs) / len(recs) if recs else None,
        "stayed": sum(a == b for a, b in later) / len(later) if later else None,
    }


def run(scenario: Path, opts: Options, policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:

    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "prefix")
    slo = spec.service(shape["service"]).slo
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in policies}
    intent: dict[str, Any] = {}
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        intent = lab.intent.as_dict()
        for rep, policy, last in arms(policies, opts, "prefix"):
            with timed(f"{policy} run {rep}"):
                recs, counts = one_run(lab, policy, shape, opts.seed + rep, last)
            res.add(recs, repeat=rep)
            row = figures(recs, slo, shape["duration"])
            for phase in ("steady", "load step", "failure"):
                part = figures([r for r in recs if r["phase"] == phase], slo, shape["duration"])
                row[f"{phase}_hit_rate"], row[f"{phase}_ttft_p99_ms"] = part["hit_rate"], part["ttft_p99_ms"]
            row |= {k: counts.get(k, 0) for k in ("sessions", "sessions_replaced", "session_flows")}
            runs[policy].append(row)
    summary: dict[str, Any] = header("prefix", scenario, opts, shape) | {"policies": {}}
    summary["hygiene"] = (
        f"one lab; the policies' order shuffled each repeat (seed {opts.seed}); every arm starts with the engines'"
        f" prefix caches reset and a new router; between arms every instance idle, then {SETTLE_S:g} s to settle"
    )
    summary["slo"] = slo.model_dump()
    for policy in policies:
        out = aggregate(runs[policy])
        ttft = [r["ttft_ms"] for r in res.records if r["policy"] == policy and r["status"] == "ok"]
        out["ttft_p99_pooled"] = pooled_p99([t for t in ttft if t is not None], seed=opts.seed)
        summary["policies"][policy] = out
    res.write(summary)
    from .report import prefix_report

    prefix_report(res, summary, spec, scenario, intent)
    return summary
