"""`dinet run FILE`: the controller with its collector and Prometheus endpoint, on the node the file names."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DinetError
from .collect import Collector, CollectorServer
from .controller import Controller
from .intent import RunConfig, load
from .observe import registry, serve

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_target(node: dict[str, Any]) -> Iterator[Any]:
    if node["target"] == "agent":
        from ..targets.remote import RemoteNode

        remote = RemoteNode(str(node["address"]), str(node.get("token", "")), name=str(node.get("name", "")))
        try:
            yield remote
        finally:
            remote.close()
    elif node["target"] == "xdp":
        from ..targets.xdp import SteeringNode

        n = SteeringNode(str(node.get("name", "default")))
        try:
            n.configure(src4=node.get("src4"), src6=node.get("src6"))
            for a in node.get("attach") or []:
                n.attach(str(a["dev"]), a.get("netns"), str(a.get("mode", "native")))
            yield n
        finally:
            n.close()  # maps stay pinned and programs attached: forwarding goes on without the controller
    else:
        from ..targets.bmv2 import compile_p4
        from ..targets.p4node import P4Node
        from ..targets.p4rt import P4RuntimeSwitch
        from ..targets.xdp import SteerSizes

        sizes = SteerSizes(**{k: int(v) for k, v in (node.get("sizes") or {}).items()})
        sw = P4RuntimeSwitch(
            str(node["address"]),
            int(node.get("device_id", 0)),
            int(node.get("election_id", 1)),
            name=str(node.get("name", node["address"])),
        )
        sw.connect()
        try:
            pipe = compile_p4(sizes.defines())
            if node.get("set_pipeline", True):
                sw.set_pipeline(pipe.p4info, pipe.json)
            else:
                sw.use_pipeline(pipe.p4info)
            p4 = P4Node(sw, sizes)
            p4.pipeline = pipe
            p4.configure(src4=node.get("src4"), src6=node.get("src6"))
            yield p4
        finally:
            sw.close()


@contextlib.contextmanager
def bier_writers(cfg: RunConfig) -> Iterator[dict[str, Any]]:
    """A writer per BIER node: a local TC node (attached where the file says) or a node agent."""
    from ..targets.remote import RemoteNode
    from ..targets.tc import BierNode
    from .bier import LocalBierWriter

    writers: dict[str, Any] = {}
    opened: list[Any] = []
    try:
        for name, n in cfg.nodes.items():
            if n["target"] == "agent":
                r = RemoteNode(str(n["address"]), str(n.get("token", "")), name=name)
                opened.append(r)
                writers[name] = r
            else:
                b = BierNode(str(n.get("name", name)))
                opened.append(b)
                for a in n.get("attach") or []:
                    b.attach(str(a["dev"]), a.get("netns"))
                writers[name] = LocalBierWriter(b, n.get("netns"))
        yield writers
    finally:
        for o in opened:
            o.close()


def keep_in_sync(target: Any) -> bool:
    """For a P4Runtime switch: if it stopped answering (a restart), connect again and write back everything
    the node had written. True if it resynced."""
    if not hasattr(target, "resync"):
        return False
    from ..errors import DataPlaneError

    try:
        target.sw.read_table("host_port")
        return False
    except DataPlaneError as e:
        log.warning("%s; writing its state again", e)
    try:
        n = target.resync(target.pipeline.p4info, target.pipeline.json)
        log.warning("switch %s: %d entries and groups written again", target.sw.name, n)
        return True
    except DataPlaneError as e:
        log.warning("switch %s is still away: %s", target.sw.name, e)
        return False


def _probe_loop(ctl: Controller, probes: dict[int, Any], interval: float, stop: threading.Event) -> None:
    """Measures the sites' delay and loss every `interval` seconds and hands them to the controller."""
    while not stop.is_set():
        try:
            measured = {site: p.measure() for site, p in probes.items()}
            n = ctl.update_sites(measured)
            log.info("probes: %s (%d writes)", {s: (round(m.delay_ms, 3), m.loss) for s, m in measured.items()}, n)
        except DinetError as e:
            log.warning("probes: %s", e)
        stop.wait(interval)


def run(path: Path, once: bool = False, stop: threading.Event | None = None) -> int:
    cfg = load(path)
    if cfg.bier is not None:
        from .bier import BierController

        with bier_writers(cfg) as writers:
            n = BierController(cfg.bier, writers).install()
            print(f"dinet: BIER: {n} BIFT and BFIR entries written to {len(writers)} node(s)", flush=True)
    if not cfg.tokens:
        log.warning("%s: no instance has an agent token: no metrics will be accepted", path)
    stop = stop or threading.Event()
    with contextlib.ExitStack() as stack:
        ctls = []
        for ing in cfg.ingress:
            target = stack.enter_context(open_target(ing.node))
            ctl = Controller(target, cfg.services, dict(ing.sites))
            ctl.start()
            ctls.append(ctl)
            if ing.probes and not once:
                threading.Thread(
                    target=_probe_loop, args=(ctl, ing.probes, cfg.probe_interval, stop), daemon=True
                ).start()
        if once:
            print(
                f"dinet: {len(cfg.services)} service(s) installed on {len(ctls)} node(s), "
                f"{sum(c.writes for c in ctls)} write(s)"
            )
            return 0
        col = Collector(cfg.tokens, timeout=cfg.collector_timeout, max_rate=cfg.collector_max_rate)
        # every ingress node decides for itself (its own path metrics) on the same reports

        def on_report(ref: Any, m: Any) -> None:
            for c in ctls:
                c.on_report(ref, m)

        def on_expire(ref: Any) -> None:
            for c in ctls:
                c.on_expire(ref)

        col.on_report, col.on_expire = on_report, on_expire
        srv = stack.enter_context(CollectorServer(col, cfg.collector_listen))
        http = None
        if cfg.prometheus_listen:
            host, _, port = cfg.prometheus_listen.rpartition(":")
            try:
                http = serve(registry(ctls, col), int(port), host or "127.0.0.1")
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot serve Prometheus on {cfg.prometheus_listen}: {e}") from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (tests)
                signal.signal(sig, lambda *_: stop.set())
        print(f"dinet: collector on {srv.address}, metrics on http://{cfg.prometheus_listen}/metrics", flush=True)
        while not stop.wait(0.5):
            col.expire()
            for c in ctls:
                keep_in_sync(c.target)
        if http:
            http[0].shutdown()
    return 0
