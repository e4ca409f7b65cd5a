"""The scenario runner: a scenario file (dinet.lab.scenario) brought up as a Mininet network with the steering
node on XDP or BMv2, `dinet serve` instances with metric agents, and `dinet run` on the scenario's intent.

    with Lab(load(Path("topo/scenarios/cloud-edge.yaml")), target="xdp") as lab:
        lab.links.measure_paths()               # RTT and loss achieved on each path, beside the configured
        recs = lab.load("dev1", "chat", rate=5, duration=2)
        lab.view.weights("chat")                # what `dinet run` installed, read from its Prometheus endpoint
        lab.engines.kill("edge1")               # an instance's model server dies (SIGKILL); restart() it
        lab.deciding.stop()                     # what decides dies; its nodes keep their last weights

The Lab holds the intent and the state record; its parts each own one concept: `network` (the Mininet hosts,
links, addresses and the programs every lab has: dinet.lab.network), `procs` (every process it starts, in a
node's namespace, logged and recorded: dinet.lab.processes), `pki` (the CA and the model servers'
certificates: dinet.lab.pki), `engines` (the model servers and their metrics agents: dinet.lab.engines),
`deciding` (`dinet run` or the per-node deciders: dinet.lab.deciding), `links` (emulated links and paths:
dinet.lab.links), `servers` (devices' own model servers and L7 routers: dinet.lab.servers) and `view` (what
decides, read from its Prometheus endpoints: dinet.lab.view).

The network is Mininet's: hosts (one per ingress router, client, site router and instance), Linux bridges
for each ingress node's client LAN and for the management network, BMv2 switches (Bmv2GrpcSwitch) in front
of the ingress routers with --target bmv2. Every host's namespace is also named (`ip netns attach`), so the
XDP, TC and eBPF tools of dinet reach it like any namespace.

Address plan (IPv4):
    client LAN of ingress k        10.0.k.0/24      router .1, clients .10.., the P4 switch's tunnel source .254
    path ingress k -> site s       10.k.s.0/24      ingress .1, site router .2
    instance j at site s           10.(100+s).j.0/24  site router .1, instance .2
    management (agents -> collector) 172.31.0.0/16  the root namespace 172.31.255.254
    services                       their VIP (default 10.99.0.1) on each instance's loopback

Links with bandwidth, delay or loss get a link emulator node (dinet.lab.linkem) on the wire. Everything the
lab makes is recorded in a state file (/run/dinet/lab/NAME.json) from the start, so `dinet lab down` removes
it even after the runner was killed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DinetError
from ..model import Strategy
from ..netutil import dscp_of, free_port
from ..paths import BPFFS_ROOT
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
)
from ..services.intent import InstanceSpec as IntentInstance
from ..targets.bcc_program import remove_pinned_tree
from .deciding import MGMT_ROOT, Deciding
from .engines import Engines, InstanceHost
from .linkem import stop_processes
from .links import Links
from .network import TUNNEL_SMAC, Network
from .pki import Pki
from .processes import Processes
from .rig import Rig
from .scenario import InstanceSpec, ScenarioSpec
from .scenario import ServiceSpec as ScenarioService
from .servers import Servers
from .view import ControllerView

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/dinet/lab")
POOL_IDS = (1000, 1099)  # the instance ids a service's pool agent may announce (within the table)


def lab_tag(name: str) -> str:
    """A short tag for the lab's names in the root namespace (interfaces are at most 15 characters)."""
    return "d" + format(zlib.crc32(name.encode()) & 0xFFFF, "04x")


class Lab(Rig):
    def __init__(
        self,
        spec: ScenarioSpec,
        target: str = "xdp",
        workdir: Path | None = None,
        pcap: bool = False,
        backend: str = "auto",
        bpffs_root: Path = BPFFS_ROOT,
        state_dir: Path = STATE_DIR,
        agents: bool = True,
        policy: str | None = None,
        mode: str = "central",
        seed: int | None = None,
        probes: bool = False,
        tls: bool = True,
        node_agents: bool = False,
    ):
        """agents=False: no metrics agent beside the instances (a test or an experiment reports for them);
        policy: every service's placement (dinet or a baseline: anycast, compute-only, round-robin, random);
        mode: central (one `dinet run` decides for every ingress node) or distributed (a decider per ingress
        node, `dinet run --node`, each taking the agents' reports itself); seed: the random baseline's draws;
        probes: every path is measured by ping from its ingress node (each second) instead of configured, so
        a cut path (cut_path) is seen as lost; tls: the model servers speak HTTPS (a certificate per instance
        from a CA of the lab's, naming the service VIP, its own address and loopback) and every client
        checks it: requests, answers, scrapes and KV hand-overs cross the network encrypted; node_agents
        (target xdp): each ingress node's program is held by a `dinet agent` process of its own, which `dinet
        run` drives over gRPC (target agent), as on a remote host."""
        if target not in ("xdp", "bmv2"):
            raise ConfigError(f"a lab's target is xdp or bmv2, not {target!r}")
        if mode not in ("central", "distributed"):
            raise ConfigError(f"a lab's mode is central or distributed, not {mode!r}")
        self.mode, self.seed, self.probes, self.tls = mode, seed, probes, tls
        if node_agents and target != "xdp":
            raise ConfigError("node agents hold XDP programs: a lab with node_agents has target xdp")
        self.node_agents: dict[str, subprocess.Popen[str] | None] = (
            dict.fromkeys((i.name for i in spec.ingress), None) if node_agents else {}
        )
        self.node_agent_ports = {i.name: free_port() for i in spec.ingress}
        self.spec, self.target, self.pcap, self.backend = spec, target, pcap, backend
        self.agents, self.policy = agents, policy
        self.placement: str | None = None  # every service's placement, set at run time (set_placement)
        self.tag = lab_tag(spec.name)
        self.workdir = workdir or Path(f"/tmp/dinet-lab-{spec.name}")
        self.bpffs_root = bpffs_root
        self.state_path = state_dir / f"{spec.name}.json"
        self.instances: dict[str, InstanceHost] = {}
        self.links = Links(self.ns, self.write_intent)  # emulated links and paths, changed and measured
        self.state: dict[str, Any] = {"pid": os.getpid(), "tag": self.tag, "netns": [], "root_links": [], "pins": []}
        self.state["pids"] = []
        self.procs = Processes(self.workdir / "logs", self.ns, self._record)
        self.network = Network(
            spec, target, self.tag, self.ns, self.instances, self.links, self.procs, self.state, self._save,
            self.workdir, bpffs_root, backend, pcap,
        )  # fmt: skip
        self.pki = Pki(self.workdir / "tls", tls)
        self.deciding = Deciding(mode, [i.name for i in spec.ingress], self.procs, spec.collector_timeout)
        self.service_keys = {s.name: f"{s.vip}:{s.port}/tcp" for s in spec.services}
        self._plan()
        self.servers = Servers(spec, self.instances, self.procs, self.pki, self.ingress_index)
        self.engines = Engines(
            spec,
            self.instances,
            self.procs,
            self.pki,
            self.deciding.collectors,
            self.service_keys,
            self.workdir,
            agents,
        )
        self.view = ControllerView(
            self.deciding.metrics_urls,
            self.service_keys,
            {n: i.id for n, i in self.instances.items()},
            [ing.name for ing in spec.ingress],
            spec.collector_timeout / 2,
        )

    # ---- the address plan ------------------------------------------------------------------------------
    def _plan(self) -> None:
        per_site: dict[str, int] = {}
        for n, i in enumerate(self.spec.instances):
            site = self.spec.site(i.site)
            j = per_site[i.site] = per_site.get(i.site, 0) + 1
            iid = POOL_IDS[0] + n if i.pool else n + 1  # a pool's ids are a range of their own
            self.instances[i.name] = InstanceHost(
                i, iid, site.id, f"10.{100 + site.id}.{j}.2", f"10.{100 + site.id}.{j}.1", f"172.31.0.{n + 1}"
            )

    def ns(self, node: str) -> str:
        """The named network namespace of a scenario node."""
        return f"{self.tag}-{node}"

    @property
    def hosts(self) -> dict[str, Any]:
        """Scenario node name -> its Mininet host."""
        return self.network.hosts

    @property
    def net(self) -> Any:
        """The Mininet network (None before build and after close)."""
        return self.network.net

    def ingress_index(self, name: str) -> int:
        return next(k for k, n in enumerate(self.spec.ingress, 1) if n.name == name)

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def ready(self) -> None:
        if self.state_path.exists():
            raise DinetError(f"a lab {self.spec.name!r} is up already ({self.state_path}): `dinet lab down` it first")

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._save()
        self.network.build()
        if self.tls:
            self.pki.issue(
                (name, (*sorted({self.spec.service(x).vip for x in i.spec.services}), i.endpoint, "127.0.0.1"))
                for name, i in self.instances.items()
            )
        engines = [n for n, inst in self.instances.items() if not inst.spec.pool]
        self.engines.spawn(engines)
        for c in self.spec.clients:
            if c.local is not None:
                self.servers.start_local(c.name)
        for ingress in self.node_agents:
            self._attach_steering(ingress)
            self.start_node_agent(ingress)
        # its intent names the instances that run; they start meanwhile, their agents retry until it is up
        self._start_controller(meanwhile=lambda: self.engines.ready(engines))
        if self.agents:
            self.view.wait_reports({n for n, i in self.instances.items() if i.running})

    def _save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def _record(self, pid: int) -> None:
        self.state["pids"].append(pid)
        self._save()

    def steer_node_name(self, ingress: str) -> str:
        return f"{self.tag}-steer-{ingress}"

    # ---- node agents (node_agents=True) ---------------------------------------------------------------------
    def _attach_steering(self, ingress: str) -> None:
        """The ingress node's steering program, attached to its interfaces and pinned, as a host's setup would
        leave it for its node agent (which loads the pinned maps and drives them)."""
        from ..targets.xdp import SteeringNode

        k = self.ingress_index(ingress)
        n = SteeringNode(self.steer_node_name(ingress))
        try:
            n.configure(src4=f"10.0.{k}.1")
            for intf in self.hosts[ingress].intfList():
                n.attach(intf.name, self.ns(ingress))
        finally:
            n.close()

    def start_node_agent(self, ingress: str) -> None:
        """`dinet agent` for the ingress node (again, after kill_node_agent), on the management network."""
        token = self.workdir / "token-node-agent"
        token.write_text("token-node-agent\n")
        args = ["agent", "--node", self.steer_node_name(ingress), "--insecure"]
        args += ["--listen", f"{MGMT_ROOT}:{self.node_agent_ports[ingress]}", "--token-file", str(token)]
        p = self.procs.spawn(args, f"node-agent-{ingress}")
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("dinet agent"):
            raise DinetError(f"the node agent of {ingress} did not start (see {self.workdir}/logs)")
        self.node_agents[ingress] = p

    def kill_node_agent(self, ingress: str) -> None:
        """The node agent dies (SIGKILL): its program goes on forwarding from the pinned maps."""
        p = self.node_agents.get(ingress)
        if p is not None:
            p.kill()
            p.wait(timeout=10)
            self.node_agents[ingress] = None

    # ---- the controller ----------------------------------------------------------------------------------------
    def intent(self) -> dict[str, Any]:
        """The intent as its file has it (intent_spec(), the keys it sets)."""
        return dump(self.intent_spec())

    def intent_spec(self) -> IntentSpec:
        """The intent `dinet run` runs on, built in the intent's own schema: the scenario's services and
        instances, per ingress node its target and its paths' delay, loss and security level."""
        s = self.spec
        nodes: list[XdpNodeSpec | AgentNodeSpec | Bmv2NodeSpec] = []
        for k, ing in enumerate(s.ingress, 1):
            sites = {site.id: self._site(ing.name, site.name) for site in s.sites}
            if self.node_agents:  # driven through its node agent
                addr = f"{MGMT_ROOT}:{self.node_agent_ports[ing.name]}"
                nodes.append(
                    AgentNodeSpec(
                        target="agent", address=addr, token="token-node-agent", name=self.steer_node_name(ing.name),
                        sites=sites, **self.deciding.node_intent(ing.name),
                    )
                )  # fmt: skip
            elif self.target == "xdp":  # on every interface: VIP traffic from clients and from the sites
                devs = [i.name for i in self.hosts[ing.name].intfList()]
                nodes.append(
                    XdpNodeSpec(
                        target="xdp", name=self.steer_node_name(ing.name), src4=f"10.0.{k}.1",
                        attach=[AttachSpec(dev=d, netns=self.ns(ing.name)) for d in devs], sites=sites,
                        **self.deciding.node_intent(ing.name),
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
                        sites=sites, **self.deciding.node_intent(ing.name),
                    )
                )  # fmt: skip
        given: dict[str, Any] = {"mode": self.mode} | ({"seed": self.seed} if self.seed is not None else {})
        return IntentSpec(
            ingress=nodes,
            **self.deciding.intent(),
            services=[self._service(svc) for svc in s.services],
            **given | ({"probe_interval": 1.0} if self.probes else {}),
        )

    def _site(self, ingress: str, site: str) -> SiteSpec:
        """A site as an ingress node sees it: its path's round trip (a delay set at run time where there is
        one), loss, security level and rate; with probes, where to ping."""
        path = self.spec.path(site, ingress)
        given: dict[str, Any] = {"bw_mbit": path.bw_mbit} if path.bw_mbit else {}  # (unset: the defaults)
        if self.probes:  # the site's router, pinged from the ingress node over the path
            addr = self.links.probe_address(ingress, site)
            given |= {"probe": addr, "probe_netns": self.ns(ingress)}
        delay = 2 * self.links.delay_ms(ingress, site, path.delay_ms)
        return SiteSpec(delay_ms=delay, loss=path.loss, security=path.security, **given)

    def _service(self, svc: ScenarioService) -> ServiceSpec:
        """A service of the scenario with its instances (pool instances join at run time: the pool)."""

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
            for name, i in self.instances.items()
            if svc.name in i.spec.services and not i.spec.pool
        ]
        pool = [i for i in self.instances.values() if i.spec.service == svc.name and i.spec.pool]
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
            service=self.service_keys[svc.name], min_security=svc.min_security, tiers=list(svc.tiers),
            transfer_kb=svc.transfer_kb, slo=SloSpec(ttft_ms=svc.slo.ttft_ms, tpot_ms=svc.slo.tpot_ms),
            instances=insts, **given,
        )  # fmt: skip

    def write_intent(self) -> Path:
        path = self.workdir / "intent.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.intent(), sort_keys=False))
        tmp.replace(path)  # `dinet run` sees a whole file or the old one
        return path

    def _start_controller(self, meanwhile: Callable[[], None] = lambda: None) -> None:
        """What decides, on the scenario's intent (checked first: the runner's own intent is valid, or this
        says where it is not); `meanwhile` runs while it starts."""
        from ..services.intent import load

        path = self.write_intent()
        load(path)
        self.deciding.start(path, meanwhile)

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
        from ..services.intent import load

        want = {
            str(s.key): ((s.strategy or Strategy.DINET).value, s.placement) for s in load(self.write_intent()).services
        }

        def running() -> bool:
            prom, nodes = self.view.prometheus(), len(self.deciding.nodes())
            for k, (family, label) in enumerate(
                (("dinet_service_strategy", "strategy"), ("dinet_service_placement", "placement"))
            ):
                got = [(lab["service"], lab[label]) for lab, _ in prom.get(family, [])]
                if len(got) != len(want) * nodes or any(want[svc][k] != v for svc, v in got):
                    return False
            return True

        self.wait_until(running, f"{what} in force", timeout)

    def wait_until(self, cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise DinetError(f"lab {self.spec.name}: no {what} within {timeout:.0f} s")
            time.sleep(0.05)

    # ---- traffic -------------------------------------------------------------------------------------------------
    def dscp(self, service: str) -> int:
        """What a service's traffic is marked with where it starts (its class's DSCP: dinet_consts.h)."""
        return dscp_of(self.spec.service(service).class_)

    def load(
        self, client: str, service: str, rate: float = 5.0, duration: float = 2.0, url: str | None = None, **opts: Any
    ) -> list[dict]:  # type: ignore[type-arg]
        """`dinet load` from a client host on a service's VIP (or on `url`: a server of serve_local's); its
        per-request records. A device with a model of its own decides per request whether to offload (its
        records say `offloaded`)."""
        svc = self.spec.service(service)
        spec = next(c for c in self.spec.clients if c.name == client)
        if url is None:
            url = f"{self.pki.scheme}://{svc.vip}:{svc.port}"
            if spec.local is not None and spec.local.role == "draft":
                if spec.local.verify_service == service:  # the device's own drafter takes them
                    url = f"http://127.0.0.1:{spec.local.port}"
            elif spec.local is not None:
                opts.setdefault("local", f"http://127.0.0.1:{spec.local.port}")
                opts.setdefault("offload_view", self.deciding.ingress_metrics_url(self.spec.client_ingress(spec)))
                opts.setdefault("offload_node", self.ingress_index(self.spec.client_ingress(spec)) - 1)
                opts.setdefault("offload_max_rtt_ms", spec.local.offload_max_rtt_ms)
        out = self.workdir / f"load-{client}-{service}-{time.monotonic_ns()}.jsonl"
        args = [sys.executable, "-m", "dinet.cli", "load", "--url", url, "--quiet"]
        args += self.pki.args()
        args += ["--rate", str(rate), "--duration", str(duration), "--out", str(out)]
        args += ["--sensitive-share", "1" if svc.class_ == "delay-sensitive" else "0"]
        args += ["--ttft-slo-ms", str(svc.slo.ttft_ms), "--tpot-slo-ms", str(svc.slo.tpot_ms)]
        opts.setdefault("dscp", self.dscp(service))
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        p = self.procs.popen(client, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = p.communicate(timeout=duration + 120)
        if p.returncode != 0:
            raise DinetError(
                f"dinet load from {client} failed: {err.strip().splitlines()[-1] if err else p.returncode}"
            )
        recs = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
        out.unlink()
        return recs

    def kill_switch(self, ingress: str) -> None:
        """target bmv2: the ingress node's switch dies (SIGKILL), its tables and flow registers with it."""
        sw = self.network.switch(self.ingress_index(ingress))
        if sw.bmv2.proc is not None and sw.bmv2.proc.poll() is None:
            sw.bmv2.proc.kill()
            sw.bmv2.proc.wait()

    def start_switch(self, ingress: str) -> None:
        """The switch kill_switch stopped starts again, empty: what decides finds it and writes it back."""
        self.network.switch(self.ingress_index(ingress)).bmv2.restart()

    def reachability(self) -> list[str]:
        """Pings every instance endpoint from every client (three echoes: a lossy path may take one); the
        pairs with no answer."""
        failed = []
        for c in self.spec.clients:
            for name, inst in self.instances.items():
                if not inst.running:  # a pool instance that has not joined
                    continue
                if " 0 received" in self.hosts[c.name].cmd(f"ping -n -q -c3 -i0.1 -W2 {inst.endpoint}"):
                    failed.append(f"{c.name}->{name}")
        return failed

    # ---- teardown ----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        # every process of the lab told to stop at once: the teardown waits for the slowest, not their sum
        captures = self.network.captures
        self.procs.stop_all(captures + [e.line for e in self.links.emulators if e.line is not None])
        self.engines.close()
        self.servers.close()
        stop_processes(captures)
        self.network.captures = []
        self.deciding.close()
        stop_processes([p for p in self.node_agents.values() if p is not None])
        self.node_agents = dict.fromkeys(self.node_agents, None)
        for e in self.links.emulators:
            e.stop()
        self.network.close()
        clean(self.state, self.bpffs_root)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()


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


def clean(state: dict[str, Any], bpffs_root: Path = BPFFS_ROOT) -> list[str]:
    """Removes what a lab's state names: processes, named namespaces, root-namespace interfaces and bridges,
    pinned maps. Returns what it removed (for `dinet lab down` after a killed runner)."""
    done = []
    for pid in state.get("pids", []):
        if pid != os.getpid() and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                done.append(f"process {pid}")
    for ns in state.get("netns", []):
        if Path(f"/run/netns/{ns}").exists():
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            done.append(f"namespace {ns}")
    prefix = state.get("netns_prefix")
    if prefix:  # a namespace rig (the model-sync lab): every namespace it named
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        for ns in (n for n in listed if n.startswith(prefix)):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            done.append(f"namespace {ns}")
    for dev in state.get("root_links", []):
        if Path(f"/sys/class/net/{dev}").exists():
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
            done.append(f"interface {dev}")
    for pin in state.get("pins", []):
        p = Path(pin)
        if p.exists():
            remove_pinned_tree(p)
            done.append(f"pins {p}")
    leftovers = [*BPFFS_ROOT.glob(f"{state.get('tag', '~')}*")]  # pinned by `dinet run` or the BIER rig
    leftovers += BPFFS_ROOT.glob(f"lab-{state.get('pid', '~')}-*")  # link loss programs (dinet.lab.loss)
    for p in leftovers:
        remove_pinned_tree(p)
        done.append(f"pins {p}")
    with contextlib.suppress(OSError):  # the pins' root folder, once empty (anyone else's pins keep it)
        bpffs_root.rmdir()
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(name: str | None = None, state_dir: Path = STATE_DIR) -> list[str]:
    """`dinet lab down`: stops a running lab (its runner ends and cleans up), or removes what a killed one left.
    Every lab when no name is given."""
    files = [state_dir / f"{name}.json"] if name else sorted(state_dir.glob("*.json"))
    done = []
    for f in files:
        if not f.exists():
            raise ConfigError(f"no lab {name!r} is up (no {f})")
        state = json.loads(f.read_text())
        pid = int(state.get("pid", 0))
        if pid and pid != os.getpid() and _alive(pid):
            os.kill(pid, signal.SIGTERM)  # the runner tears its lab down itself
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            done.append(f"runner {pid} stopped")
        done += clean(state)
        f.unlink(missing_ok=True)
    return done
