"""The intent a lab's `dinet run` runs on, in the intent's own schema (dinet.services.intent), from the scenario
and what the lab has made: per ingress node its target (its XDP program, its node agent, or the BMv2 switch
in front of it) and its paths' round trip, loss, security level and rate (a delay set at run time where there
is one; with probes, where to ping); per service its instances with their engine profile's figures as priors,
its pool, policy and placement. A policy or placement changed at run time is written again and waited for
until every ingress node runs it. A Lab holds one (`lab.intent`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..model import Strategy
from ..services.intent import (
    AgentNodeSpec,
    AttachSpec,
    Bmv2NodeSpec,
    IntentSpec,
    NextHopSpec,
    PoolSpec,
    PriorSpec,
    ServiceSpec,
    SiteSpec,
    SizesSpec,
    SloSpec,
    XdpNodeSpec,
    dump,
    load,
)
from ..services.intent import InstanceSpec as IntentInstance
from .context import POOL_IDS, InstanceHost, LabContext
from .deciding import Deciding
from .links import Links
from .network import TUNNEL_SMAC, Network
from .node_agents import TOKEN, NodeAgents
from .scenario import InstanceSpec
from .scenario import ServiceSpec as ScenarioService
from .view import ControllerView


class LabIntent:
    def __init__(
        self,
        context: LabContext,
        parts: tuple[Network, Links, Deciding, NodeAgents, ControllerView],
        target: str,
        policy: str | None = None,
        seed: int | None = None,
        probes: bool = False,
    ):
        """parts: what the intent names (the network's interfaces and switches, the paths' delays, what
        decides, the node agents) and where it is seen in force (the controller's view); policy: every
        service's (None: the scenario's); seed: the random baseline's draws; probes: every path measured by
        ping from its ingress node."""
        self.context, self.target, self.seed, self.probes = context, target, seed, probes
        self.network, self.links, self.deciding, self.node_agents, self.view = parts
        self.policy = policy
        self.placement: str | None = None  # every service's placement, set at run time (set_placement)
        self.path = context.workdir / "intent.yaml"

    def as_dict(self) -> dict[str, Any]:
        """The intent as its file has it (spec(), the keys it sets)."""
        return dump(self.spec())

    def spec(self) -> IntentSpec:
        """The intent `dinet run` runs on: the scenario's services and instances, per ingress node its target
        and its paths."""
        s, ctx = self.context.spec, self.context
        nodes: list[XdpNodeSpec | AgentNodeSpec | Bmv2NodeSpec] = []
        for k, ing in enumerate(s.ingress, 1):
            sites = {site.id: self._site(ing.name, site.name) for site in s.sites}
            name, deciding = ctx.steer_node_name(ing.name), self.deciding.node_intent(ing.name)
            if self.node_agents:  # driven through its node agent
                nodes.append(
                    AgentNodeSpec(
                        target="agent", address=self.node_agents.address(ing.name), token=TOKEN, name=name,
                        sites=sites, **deciding,
                    )
                )  # fmt: skip
            elif self.target == "xdp":  # on every interface: VIP traffic from clients and from the sites
                devs = [i.name for i in self.network.hosts[ing.name].intfList()]
                nodes.append(
                    XdpNodeSpec(
                        target="xdp", name=name, src4=f"10.0.{k}.1",
                        attach=[AttachSpec(dev=d, netns=ctx.ns(ing.name)) for d in devs], sites=sites, **deciding,
                    )
                )  # fmt: skip
            else:
                sw = self.network.switch(k)
                mac = self.network.client_lan_mac(ing.name)
                nodes.append(
                    Bmv2NodeSpec(
                        target="bmv2", address=sw.grpc_address, device_id=k, name=ing.name,
                        # counters are read whole: sized to a lab, not to a carrier's ingress node
                        sizes=SizesSpec(max_services=16, max_instances=64), src4=f"10.0.{k}.254",
                        next_hop=NextHopSpec(port=2, smac=TUNNEL_SMAC, dmac=mac), pass_ports={1: 2, 2: 1},
                        sites=sites, **deciding,
                    )
                )  # fmt: skip
        given: dict[str, Any] = {"mode": self.deciding.mode} | ({"seed": self.seed} if self.seed is not None else {})
        return IntentSpec(
            ingress=nodes,
            **self.deciding.intent(),
            services=[self._service(svc) for svc in s.services],
            **given | ({"probe_interval": 1.0} if self.probes else {}),
        )

    def _site(self, ingress: str, site: str) -> SiteSpec:
        """A site as an ingress node sees it: its path's round trip (a delay set at run time where there is
        one), loss, security level and rate; with probes, where to ping."""
        path = self.context.spec.path(site, ingress)
        given: dict[str, Any] = {"bw_mbit": path.bw_mbit} if path.bw_mbit else {}  # (unset: the defaults)
        if self.probes:  # the site's router, pinged from the ingress node over the path
            addr = self.links.probe_address(ingress, site)
            given |= {"probe": addr, "probe_netns": self.context.ns(ingress)}
        delay = 2 * self.links.delay_ms(ingress, site, path.delay_ms)
        return SiteSpec(delay_ms=delay, loss=path.loss, security=path.security, **given)

    def _service(self, svc: ScenarioService) -> ServiceSpec:
        """A service of the scenario with its instances (pool instances join at run time: the pool)."""
        instances = self.context.instances

        def tier(i: InstanceHost) -> dict[str, Any]:
            return {"tier": _tier(i.spec.profile)} if svc.tiers else {}

        insts = [
            IntentInstance(
                id=i.id,
                endpoint=i.endpoint,
                name=name,
                site=i.site_id,
                token=f"token-{name}",
                state="up" if i.running else "down",
                prior=PriorSpec(**_prior(i.spec)),
                **tier(i),
            )  # fmt: skip
            for name, i in instances.items()
            if svc.name in i.spec.services and not i.spec.pool
        ]
        pool = [i for i in instances.values() if i.spec.service == svc.name and i.spec.pool]
        pools = [
            PoolSpec(
                agent=f"pool-{svc.name}",
                token=f"token-pool-{svc.name}",
                ids=list(POOL_IDS),
                sites=sorted({i.site_id for i in pool}),
            )
            for _ in pool[:1]  # one pool per service, where it has pool instances
        ]
        # the file's names where the schema's differ ("class"), and what is given only where there is some
        given: dict[str, Any] = {"class": svc.class_, "policy": self.policy or svc.policy}
        placement = self.placement or svc.placement
        given |= ({"placement": placement} if placement else {}) | ({"pools": pools} if pools else {})
        return ServiceSpec(
            service=self.context.service_keys[svc.name], min_security=svc.min_security, tiers=list(svc.tiers),
            transfer_kb=svc.transfer_kb, slo=SloSpec(ttft_ms=svc.slo.ttft_ms, tpot_ms=svc.slo.tpot_ms),
            instances=insts, **given,
        )  # fmt: skip

    def write(self) -> Path:
        """The intent file (workdir/intent.yaml), replaced whole: `dinet run` sees a whole file or the old
        one."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.as_dict(), sort_keys=False))
        tmp.replace(self.path)
        return self.path

    def checked(self) -> Path:
        """write(), then the file loaded as `dinet run` loads it: the lab's own intent is valid, or this says
        where it is not."""
        path = self.write()
        load(path)
        return path

    def set_policy(self, policy: str | None, timeout: float = 20.0) -> None:
        """Every service's policy (dinet or a baseline; None: the scenario's) changes at run time (the intent
        file is rewritten; what decides reads it again); returns once every ingress node runs it."""
        self.policy = policy
        self._in_force(f"policy {policy}", timeout)

    def set_placement(self, placement: str | None, timeout: float = 20.0) -> None:
        """Every service's placement (flow, session, two-choices; None: the scenario's, else dinet's default)
        changes at run time; returns once every ingress node's data plane has it."""
        if placement not in (None, "flow", "session", "two-choices"):
            raise ConfigError(f"a placement is flow, session or two-choices, not {placement!r}")
        self.placement = placement
        self._in_force(f"placement {placement}", timeout)

    def _in_force(self, what: str, timeout: float) -> None:
        """Rewrites the intent and waits until every ingress node runs each service's policy and placement as
        the intent resolves them (dinet.services.intent: the defaults in one place), by what decides's
        Prometheus endpoint. A policy change may change a tiered service's placement (its default): both are
        waited for."""
        want = {str(s.key): ((s.strategy or Strategy.DINET).value, s.placement) for s in load(self.write()).services}

        def running() -> bool:
            prom, nodes = self.view.prometheus(), len(self.deciding.nodes())
            for k, (family, label) in enumerate(
                (("dinet_service_strategy", "strategy"), ("dinet_service_placement", "placement"))
            ):
                got = [(lab["service"], lab[label]) for lab, _ in prom.get(family, [])]
                if len(got) != len(want) * nodes or any(want[svc][k] != v for svc, v in got):
                    return False
            return True

        self.context.wait_until(running, f"{what} in force", timeout)


def _prior(spec: InstanceSpec) -> dict[str, float]:
    """An instance's figures from its engine profile, for the policy until reports teach them: a request of
    64 prompt and 64 output tokens at batch 1 (a short chat turn), as many at once as the KV cache holds of 400
    tokens each."""
    from ..workload.engine import PROFILES

    p = PROFILES[spec.profile]
    kv = spec.kv_tokens or p.kv_tokens
    prefill = 64 / p.prefill_tps * 1000
    tpot = p.decode_base_ms + p.decode_per_seq_ms
    return {
        "service_s": round((prefill + 64 * tpot) / 1000, 3),
        "capacity": float(min(spec.max_batch or p.max_batch, max(1, kv // 400))),
        "prefill_ms": round(prefill, 3),
        "tpot_ms": round(tpot, 3),
    }


def _tier(profile: str) -> str:
    from ..workload.engine import PROFILES

    return PROFILES[profile].tier
