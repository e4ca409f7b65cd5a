"""`dinet run FILE`: the controller with its collector and Prometheus endpoint on the ingress nodes the file
names, and the BIER domain's controller watching its links and BFRs. The file is read again when it changes
(a new intent is applied without a restart, its paths' delay and loss too; an invalid one is refused and the
running one kept)."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..creds import Identity
from ..errors import ConfigError, DataPlaneError, DinetError
from ..model import SitePath
from ..policy.decide import Policy
from .collect import Collector, CollectorServer
from .controller import Controller
from .intent import RunConfig, load
from .nodes import bier_targets, open_target
from .observe import registry, serve

log = logging.getLogger(__name__)


def keep_in_sync(target: Any) -> bool:
    """For a P4Runtime switch: a restarted switch is programmed again; a transient failure is retried and
    never wipes state. True if it wrote the switch's state back."""
    if not hasattr(target, "check"):
        return False
    try:
        return bool(target.check() == "resynced")
    except DataPlaneError as e:
        log.warning("switch %s: %s", target.sw.name, e)
        return False


def _probe_loop(ctl: Controller, probes: dict[int, Any], interval: float, stop: threading.Event) -> None:
    """Measures the sites' delay and loss every `interval` seconds and hands them to the controller."""
    while not stop.is_set():
        try:
            # a probe measures delay and loss; the path's security level (and the rest) is the intent's
            measured = {
                site: replace(ctl.sites.get(site, SitePath()), delay_ms=m.delay_ms, loss=m.loss)
                for site, m in ((site, p.measure()) for site, p in probes.items())
            }
        except DinetError as e:
            log.warning("probes: %s", e)
        else:
            try:
                n = ctl.update_sites(measured)
                log.info("probes: %s (%d writes)", {s: (round(m.delay_ms, 3), m.loss) for s, m in measured.items()}, n)
            except DinetError as e:
                ctl.failed("the probes' decision", e)
        stop.wait(interval)


def check(path: Path) -> str:
    """`dinet run --check FILE`: validates the file without starting anything; returns a summary line."""
    cfg = load(path)
    bier = f", a BIER domain of {len(cfg.bier.topo.bfr_ids)} BFRs" if cfg.bier else ""
    return (
        f"{path}: valid: {len(cfg.services)} service(s), "
        f"{sum(len(s.instances) for s in cfg.services)} instance(s), {len(cfg.ingress)} ingress node(s){bier}"
    )


class _IntentWatch:
    """Reads the intent file again when it changes; a valid new intent goes to every controller."""

    def __init__(self, path: Path, ctls: list[Controller], collector: Collector | None, nodes: list[int] | None = None):
        """nodes: each controller's ingress node (its index in the intent), whose configured paths it takes."""
        self.path, self.ctls, self.collector = path, ctls, collector
        self.nodes = nodes if nodes is not None else list(range(len(ctls)))
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return (0, 0)

    def poll(self) -> None:
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            cfg = load(self.path)
        except ConfigError as e:
            log.error("intent not applied (the running one stays): %s", e)
            return
        if self.collector is not None:
            self.collector.set_agents(cfg.agents)
        n = 0
        for c, k in zip(self.ctls, self.nodes, strict=True):  # each node on its own: one failing stops no other
            try:
                n += c.set_intent(cfg.services)
                if k >= len(cfg.ingress):
                    continue
                ing = cfg.ingress[k]  # the configured paths (network metrics); a probed site keeps its measurement
                paths = {sid: p for sid, p in ing.sites.items() if sid not in ing.probes}
                if any(c.sites.get(sid) != p for sid, p in paths.items()):
                    n += c.update_sites(paths)
            except DinetError as e:
                c.failed("the new intent", e)
        log.warning("%s changed: new intent applied (%d writes)", self.path, n)


def credentials(cfg: RunConfig, insecure: bool) -> Identity | None:
    """The controller's identity from the intent's `tls`; None only when started --insecure."""
    if cfg.tls_dir:
        return Identity.load(cfg.tls_dir, cfg.tls_name)
    if not insecure:
        raise ConfigError(
            "the intent has no `tls` (a certificate folder and this controller's name, see `dinet certs`): "
            "add it, or start with --insecure to run without TLS"
        )
    log.warning("running WITHOUT TLS (--insecure): agents are known by token alone, and traffic is in clear")
    return None


def deciding(cfg: RunConfig, node: str | None) -> tuple[list[int], RunConfig]:
    """The ingress nodes (indices in the intent) this process decides for, and the configuration it runs: every
    node in mode central; in mode distributed, the one named by --node (its name or index), whose decider's
    collector, Prometheus endpoint and identity this process takes (the returned configuration; `cfg` stays
    as it was)."""
    names = [str(ing.node.name or k) for k, ing in enumerate(cfg.ingress)]
    if cfg.mode == "central":
        if node is not None:
            raise ConfigError("--node is for an intent in mode distributed (this one is central)")
        return list(range(len(cfg.ingress))), cfg
    if node is None:
        raise ConfigError(
            "mode distributed: each ingress node decides for itself: start `dinet run FILE --node NAME` once per "
            f"ingress node ({', '.join(names)})"
        )
    for k, name in enumerate(names):
        if node in (name, str(k)):
            ing = cfg.ingress[k]
            mine = replace(
                cfg,
                collector_listen=str(ing.collector_listen),
                prometheus_listen=ing.prometheus_listen,
                tls_name=ing.decider_identity or cfg.tls_name,  # each decider is a controller of its own
            )
            return [k], mine
    raise ConfigError(f"--node {node}: no such ingress node (names: {', '.join(names)})")


def run(
    path: Path,
    once: bool = False,
    stop: threading.Event | None = None,
    insecure: bool = False,
    node: str | None = None,
) -> int:
    cfg = load(path)
    mine, cfg = deciding(cfg, node) if cfg.ingress else ([], cfg)
    identity = credentials(cfg, insecure)
    stop = stop or threading.Event()
    policy = Policy(seed=cfg.seed)
    with contextlib.ExitStack() as stack:
        if cfg.bier is not None and node is None:
            from .bier import BierController

            targets = stack.enter_context(bier_targets(cfg, identity))
            bier = BierController(cfg.bier, targets)
            n = bier.install()
            print(f"dinet: BIER: {n} BIFT and BFIR entries written to {len(targets)} node(s)", flush=True)
            if not once:
                threading.Thread(
                    target=bier.watch, args=(cfg.bier_watch_interval, stop), daemon=True, name="bier-watch"
                ).start()
        if cfg.services and not cfg.agents:
            log.warning("%s: no instance names a reporting agent (agent or token): no metrics will be accepted", path)
        # one collector owns the reports; every ingress node's controller decides on them (its own paths)
        col = Collector(
            cfg.agents,
            timeout=cfg.collector_timeout,
            max_rate=cfg.collector_max_rate,
            revocations=identity.revocations() if identity else None,
        )
        ctls = []
        for k in mine:
            ing = cfg.ingress[k]
            target = stack.enter_context(open_target(ing.node, identity))
            ctl = Controller(target, cfg.services, dict(ing.sites), policy=policy, collector=col)
            ctl.start()
            ctls.append(ctl)
            if ing.probes and not once:
                threading.Thread(
                    target=_probe_loop, args=(ctl, ing.probes, cfg.probe_interval, stop), daemon=True
                ).start()
        writes = sum(c.writes for c in ctls)
        print(
            f"dinet: {len(cfg.services)} service(s) on {len(ctls)} node(s): {writes} write(s) "
            f"({'adopted what the data plane holds' if not writes and ctls else 'installed'})",
            flush=True,
        )
        if once:
            return 0
        srv = stack.enter_context(
            CollectorServer(col, cfg.collector_listen, identity=identity, insecure=identity is None)
        )
        http = None
        if cfg.prometheus_listen:
            host, _, port = cfg.prometheus_listen.rpartition(":")
            try:
                reg = registry(ctls, col, insecure=identity is None, nodes=[str(k) for k in mine])
                http = serve(reg, int(port), host or "127.0.0.1")
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot serve Prometheus on {cfg.prometheus_listen}: {e}") from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (tests)
                signal.signal(sig, lambda *_: stop.set())
        watch = _IntentWatch(path, ctls, col, mine)
        # what start-up allocated (modules, programs, tables) lives as long as the process: the collector
        # never traverses it again, which keeps the cyclic GC's pauses out of the report-to-weights path
        gc.freeze()
        tls = "WITHOUT TLS (--insecure)" if identity is None else f"mutual TLS as {identity.name}"
        print(
            f"dinet: collector on {srv.address} ({tls}), metrics on http://{cfg.prometheus_listen}/metrics", flush=True
        )
        # a failure here is counted and retried (with backoff, then a resync): `dinet run` never exits on a
        # data plane or node agent that is away, and one node's failure stops no other node
        tick = 0
        while not stop.wait(0.1):  # expiry and the intent file every 0.1 s; the switches' health every 0.5 s
            tick += 1
            col.expire()
            watch.poll()
            if tick % 5:
                continue
            for c in ctls:
                try:
                    with c.held():  # no decision writes into a switch while it is written back (reports are
                        resynced = keep_in_sync(c.target)  # still taken meanwhile, and decided after)
                    if resynced:
                        c.resync()
                except DinetError as e:
                    c.failed("resync", e)
                c.retry()
        if http:
            http[0].shutdown()
    return 0
