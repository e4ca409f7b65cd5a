"""`dinet experiment cooperative SCENARIO`: cooperative inference across device, edge and cloud, with the network
choosing the partner instance (issue 27; AI Flow's three paradigms, draft-song s4.4-4.5).

Per paradigm, the devices' requests go to a model server on the device that cooperates through a service VIP:
- speculative: a drafter (the scenario's local model) whose rounds the target service verifies;
- cascade: a small model (the same) that escalates to the target service below its confidence threshold;
- split: the head of an 8B on the premises' GPU (HEAD) whose tail runs behind the tail service's VIP.
The partner is chosen by the services' placement: dinet, nearest (nearest-site anycast), least-loaded
(compute-only) and random; and without cooperation: device-alone (the device's model answers: the small model
for speculative and cascade, the whole 8B on premises for split) and cloud-alone (the request goes to the
partner service's cloud instance straight, no VIP: the prompt leaves the premises).

Each paradigm's arms share one event, at the same time in every arm and lasting to the arm's end (the
requests still answering then finish without it, in every arm alike): speculative, a load step at the
nearest edge (its own users fill its KV cache from EVENT_AT x duration on; they leave at the end, their
requests with them); cascade, the nearest edge's path delay rises to RISE_MS one way; split, every device's
uplink drops to DROP_MBIT. Figures per arm: TTFT
p50, tokens per second (a request's tokens over its end-to-end time), end-to-end p99, quality (the share of
answers at the level of the paradigm's best partner model: the answering model's quality over the best's;
a cascade's per-request draw), bytes on the devices' uplinks per request (their link's own counter), SLO
attainment (the partner service's), and per paradigm: acceptance and rounds (speculative), escalations
(cascade), the split point before and after the drop and the activation bytes (split)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lab.net import Lab
from ..lab.scenario import ScenarioSpec, load
from .common import (
    LEAD_S,
    Load,
    Options,
    Results,
    aggregate,
    header,
    meets,
    pct,
    run_events,
    start_load,
    stop_loads,
    timed,
    wait_idle,
)

log = logging.getLogger(__name__)

PARADIGMS = ("speculative", "cascade", "split")
STEERED = {"dinet": "dinet", "nearest": "anycast", "least-loaded": "compute-only", "random": "random"}
ALONE = ("device-alone", "cloud-alone")
HEAD = "llama3-8b-l4"  # the premises' GPU that runs a split model's first layers (or all of them)
EVENT_AT = {"speculative": 0.25, "cascade": 0.25, "split": 0.5}  # share of an arm's duration
RISE_MS = 40.0  # cascade's event: the nearest edge's path, one way
DROP_MBIT = 2.0  # split's event: each device's uplink
SITE_RATE = 30.0  # speculative's event: the nearest edge's own users, requests per second


def plan(spec: ScenarioSpec, quick: bool) -> dict[str, Any]:
    from ..workload.engine import PROFILES

    devices = [c for c in spec.clients if c.local is not None and c.local.role == "draft"]
    if not devices:
        raise ConfigError(f"the cooperative experiment needs devices with a draft model; {spec.name} has none")
    local = devices[0].local
    assert local is not None and local.verify_service is not None
    target = local.verify_service
    head = PROFILES[HEAD]
    tails = [
        s.name
        for s in spec.services
        if s.name != target
        and all(
            (PROFILES[i.profile].layers, PROFILES[i.profile].hidden) == (head.layers, head.hidden)
            for i in spec.instances
            if i.service == s.name
        )
    ]
    if not tails:
        raise ConfigError(f"the cooperative experiment needs a service of {head.model} tails; {spec.name} has none")
    ingress = spec.client_ingress(devices[0])

    def by_delay(service: str) -> list[str]:
        inst = [i for i in spec.instances if i.service == service]
        return [i.name for i in sorted(inst, key=lambda i: spec.path(i.site, ingress).delay_ms)]

    duration = 8.0 if quick else 40.0
    return {
        "devices": [c.name for c in devices],
        "ingress": ingress,
        "services": {"speculative": target, "cascade": target, "split": tails[0]},
        "nearest": {"speculative": by_delay(target)[0], "cascade": by_delay(target)[0], "split": by_delay(tails[0])[0]},
        "cloud": {
            "speculative": by_delay(target)[-1],
            "cascade": by_delay(target)[-1],
            "split": by_delay(tails[0])[-1],
        },
        "models": {"draft": local.profile, "small": local.profile, "head": HEAD},
        "acceptance": local.acceptance,
        # a drafter's round unanswered after 8x its usual answer time (at least 0.25 s) goes again on a new flow
        "replace_after": 8.0,
        "threshold": 0.6,
        "privacy_layers": 2,
        "duration": duration,
        "rate": 1.0,  # new requests per second per device (Poisson)
        "prompt": 200,
        "output": 48 if quick else 128,
        "events": {
            "speculative": {"at": EVENT_AT["speculative"] * duration, "what": f"load step at {by_delay(target)[0]}"},
            "cascade": {
                "at": EVENT_AT["cascade"] * duration,
                "what": f"path delay of {spec.instance(by_delay(target)[0]).site} to {RISE_MS:g} ms",
            },
            "split": {"at": EVENT_AT["split"] * duration, "what": f"device uplinks drop to {DROP_MBIT:g} Mbit/s"},
        },
    }


class Devices:
    """The device-side model servers of every paradigm (lab.servers.serve_local), on every device."""

    def __init__(self, lab: Lab, shape: dict[str, Any]):
        self.lab, self.shape = lab, shape
        tls = lab.pki.args()
        vip = {p: self._vip(s) for p, s in shape["services"].items()}
        m = shape["models"]
        q_ref = max(self.quality(i) for i in self.instances(shape["services"]["cascade"]))
        self.urls: dict[tuple[str, str], str] = {}
        self.vip = vip
        for c in shape["devices"]:
            self.urls[(c, "speculative")] = lab.servers.serve_local(c, f"{c}-draft", [
                "--profile", m["draft"], "--role", "draft", "--verify-url", vip["speculative"],
                "--acceptance", str(shape["acceptance"]), "--replace-after", str(shape["replace_after"]),
                *tls])  # fmt: skip
            self.urls[(c, "cascade")] = lab.servers.serve_local(c, f"{c}-small", [
                "--profile", m["small"], "--role", "cascade", "--escalate-url", vip["cascade"],
                "--threshold", str(shape["threshold"]), "--large-quality", str(q_ref), *tls])  # fmt: skip
            self.urls[(c, "small-alone")] = lab.servers.serve_local(c, f"{c}-alone", ["--profile", m["small"]])
            self.urls[(c, "head-alone")] = lab.servers.serve_local(c, f"{c}-whole", ["--profile", m["head"]])
        self.heads = 0

    def instances(self, service: str) -> list[str]:
        return [n for n, i in self.lab.instances.items() if i.spec.service == service]

    def _vip(self, service: str) -> str:
        svc = self.lab.spec.service(service)
        return f"{self.lab.pki.scheme}://{svc.vip}:{svc.port}"

    def quality(self, instance: str) -> float:
        from ..workload.engine import PROFILES

        return PROFILES[self.lab.instances[instance].spec.profile].quality

    def fresh_head(self, client: str) -> str:
        """A split head with nothing learnt yet (each arm starts from the same prior)."""
        self.heads += 1
        return self.lab.servers.serve_local(client, f"{client}-head{self.heads}", [
            "--profile", self.shape["models"]["head"], "--role", "split", "--tail-url", self.vip["split"],
            "--privacy-layers", str(self.shape["privacy_layers"]), *self.lab.pki.args()])  # fmt: skip

    def url(self, client: str, paradigm: str, policy: str) -> tuple[str, list[str]]:
        """Where a device's requests go in an arm, and the load's extra arguments."""
        if policy == "cloud-alone":
            inst = self.lab.instances[self.shape["cloud"][paradigm]]
            port = self.lab.spec.service(inst.spec.service).port
            return f"{self.lab.pki.scheme}://{inst.endpoint}:{port}", self.lab.pki.args()
        if policy == "device-alone":
            return self.urls[(client, "head-alone" if paradigm == "split" else "small-alone")], []
        if paradigm == "split":
            return self.fresh_head(client), []
        return self.urls[(client, paradigm)], []


def one_run(lab: Lab, devs: Devices, paradigm: str, policy: str, shape: dict[str, Any], seed: int) -> dict[str, Any]:
    if policy in STEERED:
        lab.set_policy(STEERED[policy])
    d, at = shape["duration"], shape["events"][paradigm]["at"]
    args = ["--duration", str(d), "--rate", str(shape["rate"]), "--sensitive-share", "1"]
    args += ["--prompt-min", str(shape["prompt"]), "--prompt-max", str(shape["prompt"])]
    args += ["--output-min", str(shape["output"]), "--output-max", str(shape["output"])]
    ing = shape["ingress"]
    urls = {c: devs.url(c, paradigm, policy) for c in shape["devices"]}
    up0 = {c: lab.links.uplink_bytes(c) for c in shape["devices"]}
    start = time.time() + LEAD_S
    loads = [
        start_load(lab, c, url, start, [*args, "--seed", str(seed * 100 + k), *extra], {"client": c})
        for k, (c, (url, extra)) in enumerate(urls.items())
    ]
    site: list[Load] = []
    events: list[tuple[float, str, Any]] = []
    near = shape["nearest"][paradigm]
    near_site = lab.instances[near].spec.site
    base_delay = lab.spec.path(near_site, ing).delay_ms
    rate = {c.name: c.link.bw_mbit for c in lab.spec.clients}

    def uplinks(mbit: float | None) -> Callable[[], None]:
        """Every device's uplink to `mbit` (None: its own rate again)."""

        def change() -> None:
            for c in urls:
                lab.links.set_uplink_rate(c, mbit or rate[c] or 1000.0)

        return change

    if paradigm == "speculative":  # the nearest edge's own users, sent inside its host (none of it steered)
        port = lab.spec.service(lab.instances[near].spec.service).port
        sargs = ["--rate", str(SITE_RATE), "--duration", f"{d - at:.3f}", "--prompt-min", "250", "--prompt-max", "250"]
        sargs += ["--output-min", "64", "--output-max", "64", "--seed", "2", *lab.pki.args()]
        site.append(start_load(lab, near, f"{lab.pki.scheme}://127.0.0.1:{port}", start + at, sargs, {"site": near}))
        events.append((d, "the edge's own users leave", lambda: stop_loads(site)))
    elif paradigm == "cascade":
        events.append(
            (at, shape["events"][paradigm]["what"], lambda: lab.links.set_path_delay(near_site, ing, RISE_MS))
        )
        events.append((d, "the path's delay back", lambda: lab.links.set_path_delay(near_site, ing, base_delay)))
    else:
        events.append((at, shape["events"][paradigm]["what"], uplinks(DROP_MBIT)))
        events.append((d, "the uplinks' rate back", uplinks(None)))
    stop = threading.Event()
    th = threading.Thread(target=run_events, args=(start, events, stop), daemon=True, name="events")
    th.start()
    try:
        recs = [r for ld in loads for r in ld.records(timeout=d + LEAD_S + 180)]
    finally:
        stop.set()
        th.join(timeout=10)
        stop_loads(loads + site)
        for ld in site:  # the site's own users: not in the results
            ld.out.unlink(missing_ok=True)
        if paradigm == "cascade":  # (also where the arm ended before its events did)
            lab.links.set_path_delay(near_site, ing, base_delay)
        elif paradigm == "split":
            uplinks(None)()
            if policy in STEERED:  # this arm's heads: what they still send counts here, not in the next arm
                for url, _ in urls.values():
                    lab.servers.stop_local(url)
    wait_idle(lab, devs.instances(shape["services"][paradigm]))
    uplink = sum(lab.links.uplink_bytes(c) - up0[c] for c in shape["devices"])
    return {"records": recs, "uplink_bytes": uplink}


def quality(r: dict[str, Any], paradigm: str, policy: str, devs: Devices, shape: dict[str, Any]) -> float | None:
    """The request's answer level against the paradigm's best partner model (1: as good)."""
    from ..workload.engine import PROFILES

    if r["status"] != "ok":
        return None
    if paradigm == "split":  # one model however it is cut, on premises or not
        return 1.0
    ref = max(devs.quality(i) for i in devs.instances(shape["services"][paradigm]))
    if policy == "device-alone":
        return min(1.0, PROFILES[shape["models"]["small"]].quality / ref)
    if policy == "cloud-alone":
        return min(1.0, devs.quality(shape["cloud"][paradigm]) / ref)
    if paradigm == "cascade":
        return 1.0 if r.get("large_level") else 0.0
    verifier = (r.get("verifiers") or "").split(",")[-1]
    return min(1.0, devs.quality(verifier) / ref) if verifier in devs.lab.instances else None


def figures(run: dict[str, Any], paradigm: str, policy: str, devs: Devices, shape: dict[str, Any]) -> dict[str, Any]:
    from ..workload.engine import PROFILES

    recs = run["records"]
    ok = [r for r in recs if r["status"] == "ok"]
    slo = devs.lab.spec.service(shape["services"][paradigm]).slo
    qs = [q for r in ok if (q := quality(r, paradigm, policy, devs, shape)) is not None]
    tps = [r["completion_tokens"] / (r["e2e_ms"] / 1000) for r in ok if r["e2e_ms"]]
    row: dict[str, Any] = {
        "requests": len(recs),
        "errors": len(recs) - len(ok),
        "ttft_p50_ms": pct((r["ttft_ms"] for r in ok if r["ttft_ms"] is not None), 50),
        "tokens_per_s": sum(tps) / len(tps) if tps else None,
        "e2e_p99_ms": pct((r["e2e_ms"] for r in ok if r["e2e_ms"] is not None), 99),
        "quality": sum(qs) / len(qs) if qs else None,
        "uplink_bytes": run["uplink_bytes"] / len(recs) if recs else None,
        "slo_attainment": sum(meets(r, slo) for r in recs) / len(recs) if recs else None,
    }
    at = shape["events"][paradigm]["at"]
    if paradigm == "speculative" and policy in STEERED:
        drafted = sum(r["drafted"] for r in ok)
        row["acceptance"] = sum(r["accepted"] for r in ok) / drafted if drafted else None
        row["rounds_per_request"] = sum(r["rounds"] for r in ok) / len(ok) if ok else None
        row["sessions_moved"] = sum(1 for r in ok if "," in (r.get("verifiers") or ""))
        after = [r for r in ok if r["t"] >= at]
        row["after_event_on_nearest"] = (
            sum(shape["nearest"][paradigm] in (r["verifiers"] or "").split(",")[:1] for r in after) / len(after)
            if after
            else None
        )
    if paradigm == "cascade" and policy in STEERED:
        row["escalated"] = sum(1 for r in ok if r.get("escalated")) / len(ok) if ok else None
    if paradigm == "split" and policy in STEERED:
        layers = PROFILES[HEAD].layers
        before = [r for r in ok if r["t"] < at]
        after = [r for r in ok if r["t"] >= at + 2.0]  # the head has met the drop
        row["split_before"] = sum(r["split_layers"] < layers for r in before) / len(before) if before else None
        row["split_after"] = sum(r["split_layers"] < layers for r in after) / len(after) if after else None
        row["activation_bytes"] = sum(r["activation_bytes"] for r in ok) / len(ok) if ok else None
    return row


def run(scenario: Path, opts: Options) -> dict[str, Any]:
    from tqdm import tqdm

    spec = load(scenario)
    shape = plan(spec, opts.quick)
    res = Results(opts.out / "cooperative")
    policies = (*STEERED, *ALONE)
    per: dict[str, dict[str, list[dict[str, Any]]]] = {p: {q: [] for q in policies} for p in PARADIGMS}
    with Lab(spec, target=opts.target, workdir=Path(f"/tmp/dinet-exp-{spec.name}"), seed=opts.seed) as lab:
        intent = lab.intent.as_dict()
        devs = Devices(lab, shape)
        bar = tqdm(total=opts.repeats * len(PARADIGMS) * len(policies), desc="cooperative", unit="run",
                   disable=not opts.progress)  # fmt: skip
        for rep in range(opts.repeats):
            for paradigm in PARADIGMS:
                for policy in policies:
                    with timed(f"{paradigm} {policy} run {rep}"):
                        out = one_run(lab, devs, paradigm, policy, shape, opts.seed + rep)
                    res.add(out["records"], repeat=rep, paradigm=paradigm, policy=policy)
                    per[paradigm][policy].append(figures(out, paradigm, policy, devs, shape))
                    bar.update(1)
        bar.close()
    summary: dict[str, Any] = header("cooperative", scenario, opts, shape) | {"paradigms": {}}
    for paradigm, rows in per.items():
        summary["paradigms"][paradigm] = {"event": shape["events"][paradigm], "policies": {}}
        for policy, runs in rows.items():
            summary["paradigms"][paradigm]["policies"][policy] = aggregate(runs)
    res.write(summary)
    from .report import cooperative_report

    cooperative_report(res, summary, spec, scenario, intent)
    return summary
