"""The topology and intent file that `dinet run` starts from (YAML; see topo/intent-example.yaml).

The file's schema is declared with pydantic: unknown keys, wrong types, out-of-range values, missing
addresses and duplicate ids or tokens are refused with one line naming the file, the path in it
(`services[0].instances[1].weight`) and what was expected. `load()` turns a valid file into the control
plane's model (RunConfig)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import consts
from ..errors import ConfigError
from ..model import (
    Instance,
    InstancePrior,
    InstanceState,
    ServiceIntent,
    ServiceKey,
    SitePath,
    Slo,
    Strategy,
    TrafficClass,
    parse_address,
)
from ..policy.bift import BierGroup, BierIntent, BierTopology, Port
from ..policy.choices import default_placement
from ..rfc8296 import BSL_CODE
from .collect import AgentAuth, Pool
from .probe import Probe

# ---- the schema ------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    # strict: `weight: 1.7` or `id: "abc"` is an error, not a conversion; unknown keys are errors
    # .inf and .nan are no timeout, rate or delay
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


def _ip(v: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(v)))
    except ValueError:
        raise ValueError(f"expected an IPv4 or IPv6 address, got {v!r}") from None


def _hostport(v: Any) -> str:
    host, sep, port = str(v).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {v!r}")
    return str(v)


IPText = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class AttachSpec(_Spec):
    dev: Name
    netns: Name | None = None
    mode: Literal["native", "generic", "skb", "drv"] = "native"


class SizesSpec(_Spec):
    max_services: int = Field(default=0, ge=0)
    max_instances: int = Field(default=0, ge=0)
    ring_size: int = Field(default=0, ge=0)
    affinity_entries: int = Field(default=0, ge=0)


class SiteSpec(_Spec):
    delay_ms: float = Field(default=0.0, ge=0)
    loss: float = Field(default=0.0, ge=0, le=1)
    security: int = Field(default=0, ge=0, le=9)  # the path's security level (0: public internet)
    bw_mbit: float | None = Field(default=None, gt=0)  # the path's bottleneck rate (a service's transfers)
    probe: IPText | None = None  # measured by ping where given
    probe_netns: Name | None = None

    _probe = field_validator("probe")(lambda v: None if v is None else _ip(v))


Sites = dict[Annotated[int, Field(ge=0, lt=2**16)], SiteSpec]


class XdpNodeSpec(_Spec):
    target: Literal["xdp"]
    name: Name = "default"
    src4: IPText | None = None
    src6: IPText | None = None
    attach: list[AttachSpec] = []
    sites: Sites = {}
    decider: DeciderSpec | None = None  # mode distributed: this node's own collector and metrics

    _src = field_validator("src4", "src6")(lambda v: None if v is None else _ip(v))


class AgentNodeSpec(_Spec):
    target: Literal["agent"]
    address: IPText
    identity: Name | None = None  # the node agent's certificate name (with tls: required)
    token: str = ""  # an optional second factor the agent expects
    name: Name | None = None
    sites: Sites = {}
    decider: DeciderSpec | None = None  # mode distributed: this node's own collector and metrics

    _addr = field_validator("address")(_hostport)


class NextHopSpec(_Spec):
    port: int = Field(ge=0, lt=512)  # 0: back out of the port the packet came in on
    smac: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")]
    dmac: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")]


class Bmv2NodeSpec(_Spec):
    target: Literal["bmv2"]
    address: IPText  # unix:/path or host:port of the P4Runtime server
    device_id: int = Field(default=0, ge=0)
    election_id: int = Field(default=1, ge=1)
    name: Name | None = None
    sizes: SizesSpec | None = None
    src4: IPText | None = None
    src6: IPText | None = None
    set_pipeline: bool = True  # False: the switch must already run dinet.p4 (never set it)
    next_hop: NextHopSpec | None = None  # where tunnelled packets go (default: back out of the ingress port)
    pass_ports: dict[Annotated[int, Field(ge=0, lt=512)], Annotated[int, Field(ge=0, lt=512)]] = {}
    sites: Sites = {}
    decider: DeciderSpec | None = None  # mode distributed: this node's own collector and metrics

    _src = field_validator("src4", "src6")(lambda v: None if v is None else _ip(v))

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return v if v.startswith("unix:") else _hostport(v)


SteerNodeSpec = XdpNodeSpec | AgentNodeSpec | Bmv2NodeSpec  # an ingress node, by its target
NodeSpec = Annotated[SteerNodeSpec, Field(discriminator="target")]


class CollectorSpec(_Spec):
    listen: IPText = "127.0.0.1:50051"
    timeout: float = Field(default=3.0, gt=0)
    max_rate: float = Field(default=1000.0, gt=0)

    _listen = field_validator("listen")(_hostport)


class PrometheusSpec(_Spec):
    listen: IPText | None = "127.0.0.1:9464"

    _listen = field_validator("listen")(lambda v: None if v is None else _hostport(v))


class DeciderSpec(_Spec):
    """mode distributed: where an ingress node's own decider (`dinet run FILE --node NAME`) takes the agents'
    reports and serves its metrics."""

    collector: CollectorSpec
    prometheus: PrometheusSpec = PrometheusSpec(listen=None)
    # with tls: this decider's own certificate name (required then, one per decider), so that each node
    # agent accepts only the decider named for it (`dinet agent --controller NAME`)
    identity: Name | None = None


for _m in (XdpNodeSpec, AgentNodeSpec, Bmv2NodeSpec):
    _m.model_rebuild()


class PriorSpec(_Spec):
    """An instance's figures before its reports teach them (an engine profile's); 0: unknown."""

    service_s: float = Field(default=0.0, ge=0, le=86400, allow_inf_nan=False)
    capacity: float = Field(default=0.0, ge=0, le=1e6, allow_inf_nan=False)
    prefill_ms: float = Field(default=0.0, ge=0, le=600_000, allow_inf_nan=False)
    tpot_ms: float = Field(default=0.0, ge=0, le=600_000, allow_inf_nan=False)


class InstanceSpec(_Spec):
    id: int = Field(ge=1, lt=2**32)
    endpoint: IPText
    name: str = ""
    site: int = Field(default=0, ge=0, lt=2**16)
    weight: int = Field(default=1, ge=0, lt=2**32)
    state: Literal["up", "draining", "down"] = "up"
    token: str | None = Field(default=None, min_length=1)
    agent: Name | None = None  # the reporting agent's identity; instances of one agent share its token
    tier: Literal["large", "small", "pruned"] | None = None  # the model tier it serves
    prior: PriorSpec | None = None  # what it is known to do before its reports say (dinet.policy.predict)

    _endpoint = field_validator("endpoint")(_ip)


class PoolSpec(_Spec):
    """Elastic capacity: an agent that may announce instances of the service at run time."""

    agent: Name  # its identity (with TLS: its certificate name)
    token: str | None = Field(default=None, min_length=1)
    ids: Annotated[list[Annotated[int, Field(ge=1, lt=2**32)]], Field(min_length=2, max_length=2)]  # first, last
    sites: list[Annotated[int, Field(ge=0, lt=2**16)]] = Field(min_length=1)
    prefixes: list[str] = []  # the networks its instances' endpoints must be in (empty: any unicast address)

    @model_validator(mode="after")
    def _range(self) -> PoolSpec:
        if self.ids[0] > self.ids[1]:
            raise ValueError(f"ids is [first, last], not {list(self.ids)}")
        for p in self.prefixes:
            try:
                ipaddress.ip_network(p)
            except ValueError:
                raise ValueError(f"prefixes: {p!r} is not a network (10.103.0.0/16, fd00::/64)") from None
        return self


class SloSpec(_Spec):
    """What a request of the service should see: dinet steers delay-sensitive flows to where it is predicted."""

    ttft_ms: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # time to first token (0: none)
    tpot_ms: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # time per output token (0: none)


class ServiceSpec(_Spec):
    service: str
    class_: Literal["delay-sensitive", "delay-tolerant"] = Field(default="delay-tolerant", alias="class")
    min_security: int = Field(default=0, ge=0, le=9)  # sites whose path is below this level get none of it
    tiers: list[Literal["large", "small", "pruned"]] = []  # model tiers, preferred first (empty: any)
    # how its new flows are placed: dinet's decision, or a baseline to compare it with (dinet.policy.decide)
    policy: Literal["dinet", "anycast", "compute-only", "round-robin", "random"] | None = None
    transfer_kb: float = Field(default=0.0, ge=0)  # what a request moves first (a KV cache): time at the path's rate
    # flow: a new flow placed on the ring by its 5-tuple; session: by its session key where it has one (the IPv6
    # flow label, or a source port in the session range), so a conversation's connections reach one instance;
    # two-choices: on the lower loaded of two ring candidates (the controller's load plus the new flows the data
    # plane placed since: dinet_consts.h, DINET_SVC_TWO_CHOICES); none given: dinet's default (two-choices for a
    # tiered service, flow otherwise: dinet.policy.choices.default_placement)
    placement: Literal["flow", "session", "two-choices"] | None = None
    slo: SloSpec = SloSpec()
    instances: list[InstanceSpec] = Field(min_length=1)
    pools: list[PoolSpec] = []

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        try:
            return str(ServiceKey.parse(v))
        except ConfigError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _unique(self) -> ServiceSpec:
        ids = [i.id for i in self.instances]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"instance ids must be unique in a service; repeated: {dup}")
        for p in self.pools:
            inside = [i for i in ids if p.ids[0] <= i <= p.ids[1]]
            if inside:
                raise ValueError(f"pool {p.agent}: its ids {list(p.ids)} hold the intent's instances {inside}")
        room = consts.get("DINET_MAX_INSTANCES")  # the data plane's instance table, per service
        want = len(ids) + sum(p.ids[1] - p.ids[0] + 1 for p in self.pools)
        if want > room:
            raise ValueError(f"{want} instances and pool ids do not fit the instance table ({room} per service)")
        if not any(i.weight for i in self.instances if i.state == "up") and any(
            i.state == "up" for i in self.instances
        ):
            raise ValueError("every instance that is up has weight 0: give at least one a weight")
        return self


class BierNodeLocal(_Spec):
    target: Literal["local"]
    name: Name | None = None
    netns: Name | None = None
    attach: list[AttachSpec] = []


class BierNodeAgent(_Spec):
    target: Literal["agent"]
    address: IPText
    identity: Name | None = None
    token: str = ""

    _addr = field_validator("address")(_hostport)


class BierNodeBmv2(_Spec):
    target: Literal["bmv2"]
    address: IPText
    device_id: int = Field(default=0, ge=0)
    election_id: int = Field(default=1, ge=1)
    sizes: SizesSpec | None = None
    set_pipeline: bool = True
    netns: Name | None = None  # where the switch's ports live (for their link state)
    ports: dict[Annotated[int, Field(ge=0, lt=512)], Name] = {}  # port number -> interface name

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return v if v.startswith("unix:") else _hostport(v)


BierNodeSpec = Annotated[BierNodeLocal | BierNodeAgent | BierNodeBmv2, Field(discriminator="target")]
_MAC = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


class LinkSpec(_Spec):
    a: Name
    b: Name
    cost: int = Field(default=1, ge=1)
    a_port: tuple[Annotated[str, Field(min_length=1)], Annotated[str, Field(pattern=_MAC)]]
    b_port: tuple[Annotated[str, Field(min_length=1)], Annotated[str, Field(pattern=_MAC)]]

    @field_validator("a_port", "b_port", mode="before")
    @classmethod
    def _port(cls, v: Any) -> Any:
        # [eth1, MAC] on Linux, [3, MAC] on a switch: the port as text either way
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and not isinstance(v[0], bool):
            return (str(v[0]), v[1])
        return tuple(v) if isinstance(v, list) else v


class GroupSpec(_Spec):
    bfir: Name
    dst: IPText
    to: list[Name] = Field(min_length=1)
    src: IPText | None = None
    udp_port: int = Field(default=0, ge=0, le=65535)

    _dst = field_validator("dst")(_ip)
    _src = field_validator("src")(lambda v: None if v is None else _ip(v))


class BierSpec(_Spec):
    bsl: Literal[64, 128, 256] = 64
    bfrs: dict[Name, Annotated[int, Field(ge=1, lt=65536)] | None]
    links: list[LinkSpec] = []
    groups: list[GroupSpec] = []
    watch_interval: float = Field(default=0.5, gt=0)  # seconds between checks of links and nodes
    frr: bool = True  # fast reroute: backup entries per neighbour, used by a node as soon as its port goes down
    receivers: dict[Name, IPText] = {}  # BFER -> HOST:PORT of its `dinet sync-receiver` (model sync)

    _receivers = field_validator("receivers")(lambda v: {k: _hostport(x) for k, x in v.items()})


class TlsSpec(_Spec):
    dir: Annotated[str, Field(min_length=1)]  # the certificate folder (dinet certs init/issue)
    name: Name = "controller"  # this controller's (and its collector's) identity


class IntentSpec(_Spec):
    tls: TlsSpec | None = None
    # central: one `dinet run` decides for every ingress node; distributed: each ingress node's decider
    # (`dinet run FILE --node NAME`) takes the agents' reports itself and decides for its node alone
    mode: Literal["central", "distributed"] = "central"
    seed: int | None = None  # the random baseline's draws (None: a new sequence each start)
    node: NodeSpec | None = None
    ingress: list[NodeSpec] | None = Field(default=None, min_length=1)
    collector: CollectorSpec = CollectorSpec()
    prometheus: PrometheusSpec = PrometheusSpec()
    sites: Sites = {}
    probe_interval: float = Field(default=5.0, gt=0)
    services: list[ServiceSpec] = []
    nodes: dict[Name, BierNodeSpec] = {}
    bier: BierSpec | None = None

    @model_validator(mode="after")
    def _whole(self) -> IntentSpec:
        if (self.node is None) == (self.ingress is None) and (self.services or self.node or self.ingress):
            raise ValueError("give either `node` (one ingress node) or `ingress` (a list), not both or neither")
        if self.mode == "distributed":
            listens: list[str] = []
            for k, n in enumerate(self.ingress or ([self.node] if self.node else [])):
                if n.decider is None:
                    raise ValueError(
                        f"ingress[{k}]: mode distributed: each ingress node needs its `decider` (collector)"
                    )
                listens.append(n.decider.collector.listen)
            if len(set(listens)) != len(listens):
                raise ValueError(
                    f"mode distributed: every ingress node's decider listens on its own address: {listens}"
                )
            if self.tls is not None:
                names = [n.decider.identity for n in self.ingress or ([self.node] if self.node else []) if n.decider]
                if None in names or len(set(names)) != len(names):
                    raise ValueError(
                        "mode distributed with tls: each decider needs its own `identity` (a certificate of its "
                        "own), else every decider could drive every node agent"
                    )
        keys = [s.service for s in self.services]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"services must be unique; repeated: {dup}")
        if self.tls is not None:
            agents: list[tuple[str, Any]] = [("node", self.node)]
            agents += [(f"ingress[{k}]", n) for k, n in enumerate(self.ingress or [])]
            agents += [(f"nodes.{k}", n) for k, n in self.nodes.items()]
            for where, n in agents:
                if isinstance(n, AgentNodeSpec | BierNodeAgent) and not n.identity:
                    raise ValueError(f"{where}: with tls, a node agent needs its `identity` (its certificate name)")
        owner: dict[str, str] = {}
        for s in self.services:
            for i in s.instances:
                if i.token is None:
                    continue
                agent = i.agent or i.name or f"agent-{i.id}"
                if owner.setdefault(i.token, agent) != agent:
                    raise ValueError(
                        f"{s.service} instance {i.id}: its token is also {owner[i.token]}'s; each agent has its "
                        "own token (instances of one agent name it with `agent:`)"
                    )
        if self.bier is not None:
            for name in self.bier.bfrs:
                if name not in self.nodes:
                    raise ValueError(f"bier.bfrs: {name} is not in nodes")
            ids = [i for i in self.bier.bfrs.values() if i is not None]
            dup_ids = sorted({i for i in ids if ids.count(i) > 1})
            if dup_ids:
                raise ValueError(f"bier.bfrs: BFR-ids must be unique; repeated: {dup_ids}")
        return self


_BRANCHES = {"xdp", "agent", "bmv2", "local"}  # a tagged union's branch: not a key of the file


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _BRANCHES or "[" in str(part):  # union branches and validator wrappers
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def explain(path: Path, e: ValidationError) -> ConfigError:
    errors = e.errors(include_url=False)
    err = errors[0]
    where = _where(tuple(err["loc"])) or "(top level)"
    msg = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
    if err["type"] == "extra_forbidden":
        msg = "unknown key (a typo?)"
    elif err["type"] == "missing":
        msg = "missing (required)"
    given = err.get("input")
    shown = (
        "" if err["type"] in ("missing", "extra_forbidden") or isinstance(given, dict | list) else f", got {given!r}"
    )
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(f"{path}: {where}: {msg}{shown}{more}")


# ---- the model -------------------------------------------------------------------------------------------


@dataclass
class Ingress:
    """An ingress steering node, its network metrics toward each site (delay, loss), and the probes that
    measure them where a site names a probe address."""

    node: SteerNodeSpec  # the node as the intent gives it (its target, where it is, how it attaches)
    sites: dict[int, SitePath]
    probes: dict[int, Probe] = field(default_factory=dict)
    collector_listen: str | None = None  # mode distributed: its decider's collector and Prometheus
    prometheus_listen: str | None = None
    decider_identity: str | None = None  # mode distributed with tls: its decider's certificate name


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
    agents: dict[str, AgentAuth] = field(default_factory=dict)  # reporting agents by identity
    tls_dir: str | None = None
    tls_name: str = "controller"
    nodes: dict[str, BierNodeLocal | BierNodeAgent | BierNodeBmv2] = field(default_factory=dict)  # BIER nodes by BFR
    bier: BierIntent | None = None
    bier_watch_interval: float = 0.5
    sync_receivers: dict[str, str] = field(default_factory=dict)
    mode: str = "central"
    seed: int | None = None


def _paths(sites: dict[int, SiteSpec]) -> dict[int, SitePath]:
    return {k: SitePath(s.delay_ms, s.loss, s.security, s.bw_mbit or 0.0) for k, s in sites.items()}


def _probes(sites: dict[int, SiteSpec]) -> dict[int, Probe]:
    return {k: Probe(s.probe, s.probe_netns) for k, s in sites.items() if s.probe}


def parse(doc: Any, path: Path) -> RunConfig:
    """A parsed YAML document -> RunConfig, or a ConfigError naming the path in the file."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the file is not a mapping of keys")
    try:
        spec = IntentSpec.model_validate(doc)
    except ValidationError as e:
        raise explain(path, e) from None
    nodes = spec.ingress if spec.ingress is not None else ([spec.node] if spec.node else [])
    ingress = [
        Ingress(
            n,
            _paths(n.sites) or _paths(spec.sites),
            _probes(n.sites) or _probes(spec.sites),
            n.decider.collector.listen if n.decider else None,
            n.decider.prometheus.listen if n.decider else None,
            n.decider.identity if n.decider else None,
        )
        for n in nodes
    ]
    cfg = RunConfig(
        ingress=ingress,
        collector_listen=spec.collector.listen,
        collector_timeout=spec.collector.timeout,
        collector_max_rate=spec.collector.max_rate,
        prometheus_listen=spec.prometheus.listen,
        probe_interval=spec.probe_interval,
        sites=_paths(spec.sites),
        mode=spec.mode,
        seed=spec.seed,
    )
    for s in spec.services:
        key = ServiceKey.parse(s.service)
        insts = []
        for i in s.instances:
            insts.append(
                Instance(i.id, parse_address(i.endpoint), i.weight, InstanceState[i.state.upper()], i.site, i.name)
            )
            if i.token or i.agent or i.name:  # someone reports for it: its agent, by default its name
                who = i.agent or i.name or f"agent-{i.id}"
                old = cfg.agents.get(who, AgentAuth(frozenset(), i.token or ""))
                if i.token and old.token and old.token != i.token:
                    raise ConfigError(f"{path}: services: agent {who} is given two tokens")
                cfg.agents[who] = AgentAuth(old.refs | {(key, i.id)}, old.token or i.token or "", old.pools)
        for p in s.pools:
            old = cfg.agents.get(p.agent, AgentAuth(frozenset(), p.token or ""))
            pool = Pool(key, p.ids[0], p.ids[1], frozenset(p.sites), tuple(ipaddress.ip_network(x) for x in p.prefixes))
            cfg.agents[p.agent] = AgentAuth(old.refs, old.token or p.token or "", (*old.pools, pool))
        tiers = {i.id: str(i.tier) for i in s.instances if i.tier}
        strategy = Strategy(s.policy) if s.policy else None
        placement = s.placement or default_placement(s.tiers, s.policy)
        cfg.services.append(
            ServiceIntent(
                key,
                TrafficClass(s.class_),
                tuple(insts),
                s.min_security,
                tuple(s.tiers),
                tiers,
                strategy,
                s.transfer_kb,
                Slo(s.slo.ttft_ms, s.slo.tpot_ms),
                {i.id: InstancePrior(**i.prior.model_dump()) for i in s.instances if i.prior},
                placement == "session",
                placement == "two-choices",
            )
        )
    cfg.nodes = dict(spec.nodes)
    if spec.tls is not None:
        cfg.tls_dir, cfg.tls_name = spec.tls.dir, spec.tls.name
    if spec.bier is not None:
        b = spec.bier
        topo = BierTopology()
        for name, bfr in b.bfrs.items():
            topo.add_node(name, bfr)
        ports = {}
        for n, link in enumerate(b.links):
            for end in (link.a, link.b):
                if end not in b.bfrs:
                    raise ConfigError(f"{path}: bier.links[{n}]: {end} is not in bier.bfrs")
            topo.add_link(link.a, link.b, link.cost)
            ports[(link.a, link.b)] = Port(*link.a_port)
            ports[(link.b, link.a)] = Port(*link.b_port)
        groups = [BierGroup(g.bfir, g.dst, frozenset(g.to), g.src or "", g.udp_port) for g in b.groups]
        intent = BierIntent(BSL_CODE[b.bsl], topo, ports, groups, frr=b.frr)
        try:
            intent.check()
        except ConfigError as e:
            raise ConfigError(f"{path}: bier: {e}") from None
        cfg.bier, cfg.bier_watch_interval = intent, b.watch_interval
        for name in b.receivers:
            if name not in b.bfrs:
                raise ConfigError(f"{path}: bier.receivers: {name} is not in bier.bfrs")
        cfg.sync_receivers = dict(b.receivers)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last: a second
    `services:` would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's document, or a ConfigError in one line (unreadable, not YAML, or a key given twice in
    one mapping: where)."""
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {at}not valid YAML: {getattr(e, 'problem', None) or e}") from None


def dump(spec: IntentSpec) -> dict[str, Any]:
    """An intent as a file would have it: the keys that were given, by their names in the file."""
    return spec.model_dump(by_alias=True, exclude_unset=True)


def load(path: Path) -> RunConfig:
    return parse(read_yaml(path), path)
