"""Scenario files (topo/scenarios/NAME.yaml): the network, the instances and the services of a use case, for
`dinet lab up|check`. Declared with pydantic like the intent: unknown keys, wrong types and dangling names
are refused with one line naming the file and the path in it.

A scenario is target-neutral: the same file runs with the steering node on XDP or on BMv2. Its parts:

    ingress:   the ingress steering nodes (each with its own client LAN)
    clients:   hosts on an ingress node's LAN (devices, branches, users), with their access link
    sites:     sites behind the ingress nodes: a router per site, one path (link) from each ingress node, with
               bandwidth, delay, loss and a security level
    instances: `dinet serve` model servers at a site, each serving one service, with a metrics agent;
               `pool: true` ones are not started with the lab but join (and leave) at run time
    services:  a VIP and port each, a traffic class, the lowest path security level it may use, and the order
               of model tiers it prefers

Addresses are the runner's (dinet.lab.net): the file names things, never numbers them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..services.intent import explain, read_yaml
from ..workload.engine import PROFILES

# Mininet names interfaces NODE-ethN (at most 15 characters): node names stay short
NodeName = Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[a-z][a-z0-9]*$")]
TIERS = ("large", "small", "pruned")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LinkSpec(_Spec):
    """A link's emulation, each way: rate (TBF), one-way delay and loss (netem, or the fallback)."""

    bw_mbit: float | None = Field(default=None, gt=0, le=10_000)
    delay_ms: float = Field(default=0.0, ge=0, le=10_000)
    loss: float = Field(default=0.0, ge=0, lt=1)

    @property
    def emulated(self) -> bool:
        return self.bw_mbit is not None or self.delay_ms > 0 or self.loss > 0


class PathSpec(LinkSpec):
    security: int = Field(default=0, ge=0, le=9)  # 0: the public internet .. higher: more trusted
    label: str = ""  # what the path is ("dedicated line", "VPN", "internet")


class IngressSpec(_Spec):
    name: NodeName


class LocalModelSpec(_Spec):
    """A device's own model: a `dinet serve` on the device. role both (cloud-edge-device): it answers when
    the network does not pay off (dinet.workload.device); role draft (speculative decoding): it drafts and has
    every round verified by a target model of `verify_service`, whose VIP the network steers
    (dinet.workload.speculative); the device's requests go to it."""

    profile: str = "llama3.2-1b-pruned-edge"
    port: int = Field(default=9000, ge=1, le=65535)
    offload_max_rtt_ms: float = Field(default=20.0, ge=0)  # a site farther than this is not worth it
    role: Literal["both", "draft"] = "both"
    verify_service: str | None = None  # role draft: the target model's service
    acceptance: float = Field(default=0.7, ge=0, le=1)  # role draft: the model pair's acceptance rate

    @model_validator(mode="after")
    def _known(self) -> LocalModelSpec:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r} is not one of {sorted(PROFILES)}")
        return self


class ClientSpec(_Spec):
    name: NodeName
    ingress: NodeName | None = None  # default: the first ingress node
    link: LinkSpec = LinkSpec()
    local: LocalModelSpec | None = None


class SiteSpec(_Spec):
    name: NodeName
    id: int = Field(ge=1, le=99)
    paths: dict[NodeName, PathSpec] = {}  # ingress name -> its path here (default: every ingress, plain)


class InstanceSpec(_Spec):
    name: NodeName
    site: NodeName
    service: Annotated[str, Field(min_length=1)]
    profile: str = "tiny-test"
    model: str | None = None  # the model name served (default: the profile's)
    kv_tokens: int | None = Field(default=None, gt=0)  # the share of the GPUs it has (default: the profile's)
    max_batch: int | None = Field(default=None, gt=0)
    role: Literal["both", "prefill", "decode"] = "both"
    decode_service: str | None = None  # prefill role: the decode stage's service (steered by its VIP)
    link: LinkSpec = LinkSpec()  # its access link at the site
    pool: bool = False  # elastic capacity: joins at run time (`Lab.join`), not at start
    prefix_caching: bool = False  # the engine keeps prompts' KV blocks for later requests (vLLM's APC)
    # more services the same engine answers (one GPU, a port each: the draft's mixed classes, where a
    # delay-tolerant service shares the instances of a delay-sensitive one)
    also_serves: list[str] = []

    @model_validator(mode="after")
    def _known(self) -> InstanceSpec:
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r} is not one of {sorted(PROFILES)}")
        if (self.role == "prefill") != (self.decode_service is not None):
            raise ValueError("a prefill instance names its decode_service, and only a prefill instance does")
        if self.also_serves and (self.role != "both" or self.pool):
            raise ValueError("only an instance of role both, not a pool's, serves more than one service")
        if len({self.service, *self.also_serves}) != 1 + len(self.also_serves):
            raise ValueError(f"{self.name} names a service twice (service and also_serves)")
        return self

    @property
    def services(self) -> list[str]:
        """Every service this instance's engine answers: its own first."""
        return [self.service, *self.also_serves]


class SloSpec(_Spec):
    """A service's objectives per request (delay-sensitive requests meet both or count as missed)."""

    ttft_ms: float = Field(default=500.0, gt=0)
    tpot_ms: float = Field(default=100.0, gt=0)


class ServiceSpec(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9-]*$")]
    port: int = Field(ge=1, le=65535)
    vip: str = "10.99.0.1"
    class_: Literal["delay-sensitive", "delay-tolerant"] = Field(default="delay-sensitive", alias="class")
    min_security: int = Field(default=0, ge=0, le=9)  # paths below this level carry none of its flows
    tiers: list[Literal["large", "small", "pruned"]] = []  # preferred first; empty: no preference
    policy: Literal["dinet", "anycast", "compute-only", "round-robin", "random"] = "dinet"  # or a baseline
    slo: SloSpec = SloSpec()
    transfer_kb: float = Field(default=0.0, ge=0)  # what a request moves first (a KV cache hand-over)
    # session: a conversation's connections meet one instance; two-choices: the lower loaded of two candidates;
    # none: dinet's default (two-choices for a tiered service, flow otherwise)
    placement: Literal["flow", "session", "two-choices"] | None = None


class ModelSyncSpec(_Spec):
    """A model repository and GPU clouds across a BIER domain: the repository's BFIR r, two BFRs m1 m2, then
    clouds/2 BFRs n1.., and the clouds e1.. as BFERs (three levels below the BFIR)."""

    clouds: int = Field(default=8, ge=8, le=16, multiple_of=4)
    redundant: bool = True  # also m1-m2 and n1-n2, n3-n4, ...: any one link above the clouds may fail
    link: LinkSpec = LinkSpec()  # every link of the domain (the eBPF target shapes its rate)
    check_mib: int = Field(default=4, ge=1, le=1024)  # what `dinet lab up` and the tests push to every cloud


class ScenarioSpec(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9-]*$")]
    description: str = ""
    kind: Literal["steering", "model-sync"] = "steering"
    model_sync: ModelSyncSpec | None = None  # kind model-sync: the BIER domain
    ingress: list[IngressSpec] = []
    clients: list[ClientSpec] = []
    sites: list[SiteSpec] = []
    instances: list[InstanceSpec] = []
    services: list[ServiceSpec] = []
    collector_timeout: float = Field(default=1.5, gt=0)
    report_interval: float = Field(default=0.2, gt=0)

    @model_validator(mode="after")
    def _whole(self) -> ScenarioSpec:
        if self.kind == "model-sync":
            if self.model_sync is None:
                raise ValueError("a model-sync scenario has its `model_sync` block (clouds, link)")
            if self.ingress or self.clients or self.sites or self.instances or self.services:
                raise ValueError("a model-sync scenario has no ingress, clients, sites, instances or services")
            return self
        for part in ("ingress", "clients", "sites", "instances", "services"):
            if not getattr(self, part):
                raise ValueError(f"a steering scenario needs at least one of `{part}`")
        names = [n.name for n in self.ingress] + [c.name for c in self.clients] + [s.name for s in self.sites]
        names += [i.name for i in self.instances]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"node names must be unique; repeated: {dup}")
        ingress = {n.name for n in self.ingress}
        sites = {s.name for s in self.sites}
        services = {s.name: s for s in self.services}
        for k, c in enumerate(self.clients):
            if c.ingress is not None and c.ingress not in ingress:
                raise ValueError(f"clients[{k}] ({c.name}): no ingress node {c.ingress!r}")
            if c.local is not None and (c.local.role == "draft") != (c.local.verify_service is not None):
                raise ValueError(f"clients[{k}] ({c.name}): a draft model names its verify_service, and only it")
            if c.local is not None and c.local.verify_service not in (None, *services):
                raise ValueError(f"clients[{k}] ({c.name}): no service {c.local.verify_service!r}")
        ids = [s.id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise ValueError(f"site ids must be unique; got {ids}")
        for s in self.sites:
            for via in s.paths:
                if via not in ingress:
                    raise ValueError(f"sites: {s.name}.paths names no ingress node: {via!r}")
        for i in self.instances:
            if i.site not in sites:
                raise ValueError(f"instances: {i.name}.site: no site {i.site!r}")
            for svc in (*i.services, i.decode_service):
                if svc is not None and svc not in services:
                    raise ValueError(f"instances: {i.name}: no service {svc!r}")
            ports = [services[x].port for x in i.services]
            if len(set(ports)) != len(ports):
                raise ValueError(f"instances: {i.name}: its services share a port (its engine listens on each)")
        keys = [(s.vip, s.port) for s in self.services]
        if len(set(keys)) != len(keys):
            raise ValueError("services: two services share a VIP and port")
        if len(self.instances) > 200 or len(self.sites) > 40:
            raise ValueError("at most 40 sites and 200 instances (the runner's address plan)")
        return self

    # ---- views the runner uses ---------------------------------------------------------------------------
    def service(self, name: str) -> ServiceSpec:
        return next(s for s in self.services if s.name == name)

    def instance(self, name: str) -> InstanceSpec:
        return next(i for i in self.instances if i.name == name)

    def site(self, name: str) -> SiteSpec:
        return next(s for s in self.sites if s.name == name)

    def path(self, site: str, ingress: str) -> PathSpec:
        return self.site(site).paths.get(ingress) or PathSpec()

    def client_services(self) -> list[ServiceSpec]:
        """The services clients call (a decode stage takes hand-overs from the prefill stage only)."""
        return [s for s in self.services if any(s.name in i.services and i.role != "decode" for i in self.instances)]

    def client_ingress(self, c: ClientSpec) -> str:
        return c.ingress or self.ingress[0].name


def parse(doc: Any, path: Path) -> ScenarioSpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the file is not a mapping of keys")
    try:
        return ScenarioSpec.model_validate(doc)
    except ValidationError as e:
        raise explain(path, e) from None


def load(path: Path) -> ScenarioSpec:
    return parse(read_yaml(path), path)
