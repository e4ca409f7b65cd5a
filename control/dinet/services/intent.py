"""The topology and intent file that `dinet run` starts from (YAML). See topo/intent-example.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..model import Instance, InstanceState, ServiceKey, parse_address
from ..packets import BSL_CODE
from ..policy.bift import BierTopology
from ..policy.decide import TrafficClass
from .bier import BierGroup, BierIntent, Port
from .collect import InstanceRef
from .controller import ServiceIntent, SitePath
from .probe import Probe


@dataclass
class Ingress:
    """An ingress steering node, its network metrics toward each site (delay, loss), and the probes that
    measure them where a site names a probe address."""

    node: dict[str, Any]
    sites: dict[int, SitePath]
    probes: dict[int, Probe] = field(default_factory=dict)


def _probes(doc: Any) -> dict[int, Probe]:
    return {
        int(site): Probe(str(p["probe"]), p.get("probe_netns"))
        for site, p in (doc or {}).items()
        if isinstance(p, dict) and p.get("probe")
    }


def _sites(doc: Any) -> dict[int, SitePath]:
    return {
        int(site): SitePath(float((p or {}).get("delay_ms", 0)), float((p or {}).get("loss", 0)))
        for site, p in (doc or {}).items()
    }


def _node(node: Any, where: str) -> dict[str, Any]:
    if not isinstance(node, dict) or node.get("target") not in ("xdp", "bmv2", "agent"):
        got = node.get("target") if isinstance(node, dict) else node
        raise ConfigError(f"{where}.target must be xdp, bmv2 or agent, not {got!r}")
    return node


@dataclass
class RunConfig:
    ingress: list[Ingress]
    collector_listen: str = "127.0.0.1:50051"
    collector_timeout: float = 3.0
    collector_max_rate: float = 1000.0
    prometheus_listen: str | None = "127.0.0.1:9464"
    probe_interval: float = 5.0
    sites: dict[int, SitePath] = field(default_factory=dict)
    services: list[ServiceIntent] = field(default_factory=list)
    tokens: dict[str, tuple[str, set[InstanceRef]]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # BIER nodes by BFR name
    bier: BierIntent | None = None


def _bier(doc: dict[str, Any], nodes: dict[str, Any], where: str) -> BierIntent:
    code = BSL_CODE.get(int(doc.get("bsl", 64)))
    if code is None:
        raise ConfigError(f"{where}.bsl must be one of {sorted(BSL_CODE)}, not {doc.get('bsl')!r}")
    topo = BierTopology()
    for name, bfr in (_get(doc, "bfrs", where, dict)).items():
        if str(name) not in nodes:
            raise ConfigError(f"{where}.bfrs: {name} is not in nodes")
        topo.add_node(str(name), None if bfr is None else int(bfr))
    ports = {}
    for n, link in enumerate(_get(doc, "links", where, list)):
        w = f"{where}.links[{n}]"
        a, b = str(_get(link, "a", w)), str(_get(link, "b", w))
        topo.add_link(a, b, int(link.get("cost", 1)))
        for end, other, key in ((a, b, "a_port"), (b, a, "b_port")):
            port = _get(link, key, w, list)
            if len(port) != 2:
                raise ConfigError(f"{w}.{key} is [interface, MAC], not {port!r}")
            ports[(end, other)] = Port(str(port[0]), str(port[1]))
    groups = [
        BierGroup(
            str(_get(g, "bfir", f"{where}.groups")),
            str(_get(g, "dst", f"{where}.groups")),
            frozenset(map(str, _get(g, "to", f"{where}.groups", list))),
            str(g.get("src") or ""),
            int(g.get("udp_port", 0)),
        )
        for g in doc.get("groups") or []
    ]
    intent = BierIntent(code, topo, ports, groups)
    intent.check()
    return intent


def _get(d: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = object) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing {key!r}")
    if not isinstance(d[key], kind):
        raise ConfigError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, not {d[key]!r}")
    return d[key]


def load(path: Path) -> RunConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the file is not a mapping")
    sites = _sites(doc.get("sites"))
    if "ingress" in doc:  # several ingress nodes, each with its own path metrics to the sites
        items = _get(doc, "ingress", str(path), list)
        ingress = [
            Ingress(
                _node(n, f"{path}: ingress[{i}]"),
                _sites(n.get("sites")) or sites,
                _probes(n.get("sites")) or _probes(doc.get("sites")),
            )
            for i, n in enumerate(items)
        ]
    else:
        ingress = [
            Ingress(_node(_get(doc, "node", str(path), dict), f"{path}: node"), sites, _probes(doc.get("sites")))
        ]
    cfg = RunConfig(ingress=ingress)
    col = doc.get("collector") or {}
    cfg.collector_listen = str(col.get("listen", cfg.collector_listen))
    cfg.collector_timeout = float(col.get("timeout", cfg.collector_timeout))
    cfg.collector_max_rate = float(col.get("max_rate", cfg.collector_max_rate))
    cfg.probe_interval = float(doc.get("probe_interval", cfg.probe_interval))
    prom = doc.get("prometheus") or {}
    cfg.prometheus_listen = prom.get("listen", cfg.prometheus_listen)
    cfg.sites = sites
    for n, s in enumerate(_get(doc, "services", str(path), list)):
        where = f"{path}: services[{n}]"
        key = ServiceKey.parse(str(_get(s, "service", where)))
        try:
            cls = TrafficClass(s.get("class", "delay-tolerant"))
        except ValueError:
            raise ConfigError(
                f"{where}: class must be delay-sensitive or delay-tolerant, not {s.get('class')!r}"
            ) from None
        insts = []
        for m, i in enumerate(_get(s, "instances", where, list)):
            w = f"{where}.instances[{m}]"
            inst = Instance(
                int(_get(i, "id", w)),
                parse_address(str(_get(i, "endpoint", w))),
                int(i.get("weight", 1)),
                InstanceState[str(i.get("state", "up")).upper()],
                int(i.get("site", 0)),
                str(i.get("name", "")),
            )
            insts.append(inst)
            token = i.get("token")
            if token:
                agent, refs = cfg.tokens.setdefault(
                    str(token), (str(i.get("name") or f"agent-{inst.instance_id}"), set())
                )
                refs.add((key, inst.instance_id))
        cfg.services.append(ServiceIntent(key, cls, tuple(insts)))
    for name, n in (doc.get("nodes") or {}).items():
        if not isinstance(n, dict) or n.get("target") not in ("local", "agent"):
            raise ConfigError(f"{path}: nodes.{name}.target must be local or agent")
        cfg.nodes[str(name)] = n
    if doc.get("bier"):
        cfg.bier = _bier(doc["bier"], cfg.nodes, f"{path}: bier")
    return cfg
