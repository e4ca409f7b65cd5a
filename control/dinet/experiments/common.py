"""What every experiment shares: a results folder, loads and events on one clock, a sampler of the decisions,
statistics with confidence intervals, and the versions written beside the results.

Time: an experiment picks a start (Unix time) a few seconds ahead; every `dinet load` (clients and the
bursts inside instance hosts) waits for it (`--start-at`) and counts its records' `t` from it, and the
events are run at their offsets from it. So a record, a decision sample and an event share one clock."""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import DinetError
from ..lab.linkem import stop_processes
from ..lab.net import Lab

log = logging.getLogger(__name__)

LEAD_S = 1.5  # from planning a run to its start: the load processes start and wait for it


def pct(xs: Iterable[float], p: float) -> float | None:
    """The p-th percentile (nearest rank on the sorted values), None without values."""
    v = sorted(xs)
    if not v:
        return None
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def mean_ci(xs: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """The mean and the half-width of its confidence interval (Student's t, scipy); (mean, None) with one
    value, (None, None) with none."""
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    from scipy import stats

    sem = stats.sem(vals)
    if sem == 0:
        return m, 0.0
    lo, hi = stats.t.interval(level, len(vals) - 1, loc=m, scale=sem)
    return m, float(hi - m)


def versions() -> dict[str, str]:
    """What ran: dinet, Python, the kernel, and the libraries behind the figures."""
    out = {"python": platform.python_version(), "kernel": platform.release()}
    for pkg in ("dinet", "matplotlib", "scipy", "aiohttp", "grpcio", "mininet"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    try:
        out["git"] = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parents[3]), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        pass
    return {k: v for k, v in out.items() if v}


@dataclass
class Options:
    """What every experiment takes from the command line."""

    repeats: int = 3
    seed: int = 1
    quick: bool = False
    target: str = "xdp"
    out: Path = Path("results")
    progress: bool = True
    command: str = ""  # the command that reproduces the run (written into the report)


def header(name: str, scenario: Path, opts: Options, plan: dict[str, Any]) -> dict[str, Any]:
    """What every summary.json starts with: the experiment, its scenario and options, the plan, the versions."""
    return {
        "experiment": name,
        "scenario": str(scenario),
        "command": opts.command,
        "repeats": opts.repeats,
        "seed": opts.seed,
        "quick": opts.quick,
        "target": opts.target,
        "plan": plan,
        "versions": versions(),
    }


@dataclass
class Results:
    """results/NAME/: per-request records (requests.jsonl), summary.json, plots, report.html."""

    folder: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in ("requests.jsonl", "summary.json", "report.html", *(p.name for p in self.folder.glob("*.png"))):
            (self.folder / old).unlink(missing_ok=True)

    def add(self, recs: list[dict[str, Any]], **tags: Any) -> None:
        self.records += [r | tags for r in recs]

    def write(self, summary: dict[str, Any]) -> Path:
        (self.folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.records))
        path = self.folder / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        return path


@dataclass
class Load:
    """One `dinet load` process of a run: a client on a service's VIP, or a burst inside an instance host."""

    proc: subprocess.Popen[str]
    out: Path
    tags: dict[str, Any]

    def records(self, timeout: float) -> list[dict[str, Any]]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # stop sending, keep what came back
            _, err = self.proc.communicate(timeout=30)
        if self.proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err and err.strip() else str(self.proc.returncode)
            raise DinetError(f"dinet load ({self.tags}) failed: {last}")
        if not self.out.exists():
            return []
        recs = [json.loads(x) | self.tags for x in self.out.read_text().splitlines() if x.strip()]
        self.out.unlink()
        return recs


def start_load(lab: Lab, node: str, url: str, start_at: float, args: list[str], tags: dict[str, Any]) -> Load:
    """`dinet load` on `url` from a lab node (a client, or an instance's host for its site's own users),
    waiting for `start_at`."""
    out = lab.workdir / f"load-{node}-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "dinet.cli", "load", "--url", url, "--quiet", "--out", str(out)]
    cmd += ["--start-at", f"{start_at:.3f}", *args]
    proc = lab.procs.popen(node, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return Load(proc, out, tags)


# baselines that pick an instance per request at the client (dinet.workload.pickers), past the VIP
CLIENT_PICKS = ("least-queue", "oracle")
TWO_CHOICES = "dinet-two-choices"  # dinet's weights, each new flow on the lower loaded of two ring candidates
RING = "dinet-ring"  # dinet's weights, each new flow on the ring by its 5-tuple (the default where two choices is not)
PLACED = {TWO_CHOICES: "two-choices", RING: "flow"}  # the arms that are dinet with a placement of their own


def use_policy(lab: Lab, policy: str) -> str:
    """Puts an arm's policy in force: a placement policy in the intent (dinet-two-choices and dinet-ring:
    dinet's weights with that placement, every other arm the scenario's or dinet's default placement), or a
    picker at the client past the VIP (round-robin behind it). Returns the picker ('' for none)."""
    pick = policy if policy in CLIENT_PICKS else ""
    lab.set_policy("round-robin" if pick else "dinet" if policy in PLACED else policy)
    if lab.intent.placement != PLACED.get(policy):
        lab.set_placement(PLACED.get(policy))
    return pick


def pick_args(lab: Lab, pick: str, service: str) -> list[str]:
    """`dinet load`'s arguments for a client-side picker over the service's running instances."""
    port = lab.spec.service(service).port
    eps = [
        f"{lab.pki.scheme}://{i.endpoint}:{port}"
        for i in lab.instances.values()
        if service in i.spec.services and i.running
    ]
    return ["--pick", pick, *(a for ep in eps for a in ("--endpoint", ep))]


def client_loads(
    lab: Lab,
    start_at: float,
    duration: float,
    rate: float,
    seed: int,
    extra: list[str] | None = None,
    pick: str = "",
    services: tuple[str, ...] = (),
    **tags: Any,
) -> list[Load]:
    """Every client on every service it calls (or on `services`), Poisson at `rate` per client and service; the
    requests' class is their service's, and so is their DSCP. pick: a client-side picker (CLIENT_PICKS)
    instead of the VIP."""
    loads = []
    for k, c in enumerate(lab.spec.clients):
        for svc in lab.spec.client_services():
            if services and svc.name not in services:
                continue
            share = "1" if svc.class_ == "delay-sensitive" else "0"
            args = ["--duration", str(duration), "--seed", str(seed * 100 + k)]
            args += ["--rate", str(rate)] if rate > 0 else []  # 0: the extra arguments give a --schedule
            args += ["--sensitive-share", share, "--ttft-slo-ms", str(svc.slo.ttft_ms)]
            args += ["--dscp", str(lab.dscp(svc.name))]
            args += ["--tpot-slo-ms", str(svc.slo.tpot_ms), *(extra or [])]
            args += pick_args(lab, pick, svc.name) if pick else []
            args += lab.pki.args()
            url = f"{lab.pki.scheme}://{svc.vip}:{svc.port}"
            loads.append(start_load(lab, c.name, url, start_at, args, tags | {"client": c.name, "service": svc.name}))
    return loads


BURST_PROMPT, BURST_OUTPUT = 250, 16


def burst(lab: Lab, instance: str, start_at: float, rate: float = 80.0) -> Load:
    """A load step at a site: its own users fill the instance's KV cache (up to 64 requests of 250 prompt
    tokens at `rate`; sent inside its host, so none of it is steered and none of it is in the results)."""
    from ..workload.engine import PROFILES

    spec = lab.instances[instance].spec
    kv = spec.kv_tokens or PROFILES[spec.profile].kv_tokens
    count = min(64, math.ceil(kv / (BURST_PROMPT + BURST_OUTPUT)) + 2)
    port = lab.spec.service(spec.service).port
    args = ["--rate", str(rate), "--duration", f"{count / rate:.3f}", "--max-requests", str(count)]
    args += ["--prompt-min", str(BURST_PROMPT), "--prompt-max", str(BURST_PROMPT), "--seed", "2"]
    args += ["--output-min", str(BURST_OUTPUT), "--output-max", str(BURST_OUTPUT)]
    args += lab.pki.args()
    return start_load(lab, instance, f"{lab.pki.scheme}://127.0.0.1:{port}", start_at, args, {"burst": instance})


def stop_loads(loads: list[Load]) -> None:
    stop_processes([ld.proc for ld in loads if ld.proc.poll() is None])


def timed(what: str) -> Any:
    """A context that logs how long `what` took (where an experiment's minutes go)."""
    import contextlib

    @contextlib.contextmanager
    def cm() -> Any:
        t = time.monotonic()
        yield
        log.info("%s: %.1f s", what, time.monotonic() - t)

    return cm()


def arms(policies: Iterable[str], opts: Options, desc: str) -> Iterator[tuple[int, str, bool]]:
    """(repeat, policy, last) for every run of an experiment, the policies in a new order each repeat (seeded:
    no policy always follows the same one), with a progress bar over them."""
    from tqdm import tqdm

    names = list(policies)
    bar = tqdm(total=opts.repeats * len(names), desc=desc, unit="run", disable=not opts.progress)
    try:
        for rep in range(opts.repeats):
            order = list(names)
            random.Random(opts.seed * 1000 + rep).shuffle(order)
            for policy in order:
                yield rep, policy, rep == opts.repeats - 1 and policy == order[-1]
                bar.update(1)
    finally:
        bar.close()


def run_events(start_at: float, events: list[tuple[float, str, Callable[[], None]]], stop: threading.Event) -> None:
    """Runs each event at its offset from the start (the schedule of the experiment, not a wait for a state)."""
    for at, name, fn in sorted(events, key=lambda e: e[0]):
        if stop.wait(max(0.0, start_at + at - time.time())):
            return
        log.info("event at %.1f s: %s", at, name)
        fn()


class Sampler:
    """Reads what decides (its Prometheus endpoints) every `interval` seconds in a thread: the installed
    weights per (service, ingress node) and the count of reports taken, stamped on the run's clock."""

    def __init__(self, lab: Lab, start_at: float, interval: float = 0.2):
        self.lab, self.start_at, self.interval = lab, start_at, interval
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            t = time.time() - self.start_at
            try:
                prom = self.lab.view.prometheus()
            except (OSError, DinetError) as e:  # a decider killed on purpose answers no more (a scrape's error
                log.debug("sampler: %s", e)  # is a ConfigError): its node's weights are frozen; sample on
                continue
            names = {str(i.id): n for n, i in self.lab.instances.items()}
            keys = {v: k for k, v in self.lab.service_keys.items()}
            weights: dict[str, dict[str, int]] = {}
            for lab_, v in prom.get("dinet_instance_weight", []):
                ingress = self.lab.spec.ingress[int(lab_["node"])].name
                weights.setdefault(f"{keys[lab_['service']]}@{ingress}", {})[names[lab_["instance"]]] = int(v)
            reports = sum(v for _, v in prom.get("dinet_reports_accepted_total", []))
            writes = sum(v for _, v in prom.get("dinet_datapath_writes_total", []))
            self.samples.append({"t": t, "weights": weights, "reports": reports, "writes": writes})

    def reaction(self, at: float, key: str, instance: str | None = None) -> float | None:
        """Seconds from an event at `at` to the new split for `key` (service@ingress): the first sample in which
        `instance` takes no new flows (weight 0), or, without an instance, whose weights differ from the last
        sample before the event. None if that never comes (or nothing decides any more)."""
        before = [s for s in self.samples if s["t"] <= at and key in s["weights"]]
        if not before:
            return None
        ref = before[-1]["weights"][key]
        if instance is not None and ref.get(instance, 0) == 0:
            return None  # it took no new flows before the event: there is no split to change
        for s in self.samples:
            if s["t"] <= at or key not in s["weights"]:
                continue
            w = s["weights"][key]
            if (instance is not None and w.get(instance, 0) == 0) or (instance is None and w != ref):
                return round(s["t"] - at, 3)
        return None


def flows_moved(records: list[dict[str, Any]], failed: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """Established flows that did not finish where they began: requests whose first token came back and whose
    stream then broke, on an instance that did not fail (a flow moved to another instance mid-stream is
    reset by it: that is what a broken stream here means)."""
    return sum(
        1 for r in records if r.get("ttft_ms") is not None and r["status"] != "ok" and r["instance"] not in failed
    )


def meets(r: dict[str, Any], slo: Any) -> bool:
    """A request finished within its service's SLOs (TTFT, and TPOT where it had more than one token)."""
    return (
        r["status"] == "ok"
        and r["ttft_ms"] is not None
        and r["ttft_ms"] <= slo.ttft_ms
        and (r["tpot_ms"] is None or r["tpot_ms"] <= slo.tpot_ms)
    )


def class_figures(records: list[dict[str, Any]], slos: dict[str, Any], duration: float) -> dict[str, Any]:
    """TTFT p50/p99, TPOT p99, SLO attainment (the share of requests that finished meeting both their
    service's TTFT and TPOT SLOs) and goodput (such requests per second) of one class's records.
    slos: service name -> its SloSpec."""
    ok = [r for r in records if r["status"] == "ok"]
    good = [r for r in ok if meets(r, slos[r["service"]])]
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "ttft_p50_ms": pct((r["ttft_ms"] for r in ok if r["ttft_ms"] is not None), 50),
        "ttft_p99_ms": pct((r["ttft_ms"] for r in ok if r["ttft_ms"] is not None), 99),
        "tpot_p99_ms": pct((r["tpot_ms"] for r in ok if r["tpot_ms"] is not None), 99),
        "slo_attainment": len(good) / len(records) if records else None,
        "goodput_rps": len(good) / duration if duration > 0 else None,
    }


def pooled_p99(values: list[float], level: float = 0.95, seed: int = 1) -> dict[str, Any]:
    """The p99 of every repeat's requests pooled, with a bootstrap interval (scipy, percentile method, 2,000
    resamples) and the number of requests behind it: a p99 of a few dozen requests is nearly their maximum,
    and the interval says so."""
    vals = [v for v in values if v is not None]
    out: dict[str, Any] = {"p99": pct(vals, 99), "n": len(vals), "ci95": None}
    if len(vals) >= 10 and len(set(vals)) > 1:
        import numpy as np
        from scipy import stats

        res = stats.bootstrap(
            (np.asarray(vals),),
            lambda x, axis: np.percentile(x, 99, axis=axis),
            n_resamples=2000,
            confidence_level=level,
            method="percentile",
            random_state=seed,
        )
        out["ci95"] = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-repeat figures -> their means, with `ci95` holding each one's 95% half-width (None: one repeat)."""
    keys = [k for k in runs[0] if isinstance(runs[0][k], int | float) or runs[0][k] is None]
    out: dict[str, Any] = {}
    ci: dict[str, float | None] = {}
    for k in keys:
        m, h = mean_ci([r[k] for r in runs if r.get(k) is not None])
        out[k], ci[k] = m, h
    out["ci95"] = ci
    out["repeats"] = len(runs)
    return out


SETTLE_S = 2.0  # between two arms, after every instance is idle: reports and weights catch up


def wait_idle(lab: Lab, names: Iterable[str], timeout: float = 120.0) -> None:
    """Returns once the named instances serve nothing (their own /metrics: nothing running or waiting)."""
    from ..targets import netns
    from ..workload.metrics_agent import parse, scrape

    def idle() -> bool:
        for n in names:
            inst = lab.instances[n]
            if not inst.running:
                continue
            port = lab.spec.service(inst.spec.service).port
            with netns.entered(lab.ns(n)):
                m = parse(scrape(f"{lab.pki.scheme}://127.0.0.1:{port}/metrics", ca=lab.pki.ca))
            if m.get("vllm:num_requests_running", 0.0) or m.get("vllm:num_requests_waiting", 0.0):
                return False
        return True

    lab.wait_until(idle, "idle instances", timeout)
