"""The scenario runner: a scenario file (dinet.lab.scenario) brought up as a Mininet network with the steering
node on XDP or BMv2, `dinet serve` instances with metric agents, and `dinet run` on the scenario's intent.

    with Lab(load(Path("topo/scenarios/cloud-edge.yaml")), target="xdp") as lab:
        lab.links.measure_paths()               # RTT and loss achieved on each path, beside the configured
        recs = lab.load("dev1", "chat", rate=5, duration=2)
        lab.view.weights("chat")                # what `dinet run` installed, read from its Prometheus endpoint
        lab.engines.kill("edge1")               # an instance's model server dies (SIGKILL); restart() it
        lab.deciding.stop()                     # what decides dies; its nodes keep their last weights

The Lab brings its parts up in order and down again, and sends the clients' load; each part owns one concept,
built on the lab's `context` (the scenario, the address plan, names, processes, certificates, the state
record: dinet.lab.context): `network` (the Mininet hosts, links, addresses and the programs every lab has:
dinet.lab.network), `procs` (every process it starts, in a node's namespace, logged and recorded:
dinet.lab.processes), `pki` (the CA and the model servers' certificates: dinet.lab.pki), `engines` (the model
servers and their metrics agents: dinet.lab.engines), `deciding` (`dinet run` or the per-node deciders:
dinet.lab.deciding), `intent` (the intent file they run on, policy and placement changed at run time:
dinet.lab.intent), `node_agents` (a `dinet agent` per ingress node: dinet.lab.node_agents), `links` (emulated
links and paths: dinet.lab.links), `servers` (devices' own model servers and L7 routers: dinet.lab.servers)
and `view` (what decides, read from its Prometheus endpoints: dinet.lab.view).

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

from ..errors import ConfigError, DinetError
from ..netutil import dscp_of
from ..paths import BPFFS_ROOT
from ..targets.bcc_program import remove_pinned_tree
from .context import LabContext
from .deciding import Deciding
from .engines import Engines
from .intent import LabIntent
from .linkem import stop_processes
from .links import Links
from .network import Network
from .node_agents import NodeAgents
from .rig import Rig
from .scenario import ScenarioSpec
from .servers import Servers
from .view import ControllerView

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/dinet/lab")


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
        self.tls = tls
        if node_agents and target != "xdp":
            raise ConfigError("node agents hold XDP programs: a lab with node_agents has target xdp")
        self.spec, self.target, self.pcap, self.backend, self.agents = spec, target, pcap, backend, agents
        self.tag = lab_tag(spec.name)
        self.workdir = workdir or Path(f"/tmp/dinet-lab-{spec.name}")
        self.bpffs_root = bpffs_root
        self.state_path = state_dir / f"{spec.name}.json"
        self.context = ctx = LabContext(spec, self.tag, self.workdir, self.state_path, tls)
        # the context's, under the names the experiments and tests use
        self.instances, self.procs, self.pki, self.state = ctx.instances, ctx.procs, ctx.pki, ctx.state
        self.service_keys, self.ns, self.ingress_index = ctx.service_keys, ctx.ns, ctx.ingress_index
        self.links = Links(self.ns, lambda: self.intent.write())  # emulated links and paths, changed and measured
        self.network = Network(ctx, target, self.links, bpffs_root, backend, pcap)
        self.deciding = Deciding(mode, [i.name for i in spec.ingress], self.procs, spec.collector_timeout)
        self.servers = Servers(ctx)
        self.engines = Engines(ctx, self.deciding.collectors, agents)
        self.node_agents = NodeAgents(ctx, node_agents)
        self.view = ControllerView(
            self.deciding.metrics_urls,
            self.service_keys,
            {n: i.id for n, i in self.instances.items()},
            [ing.name for ing in spec.ingress],
            spec.collector_timeout / 2,
        )
        self.intent = LabIntent(
            ctx, (self.network, self.links, self.deciding, self.node_agents, self.view), target, policy, seed, probes
        )

    @property
    def hosts(self) -> dict[str, Any]:
        """Scenario node name -> its Mininet host."""
        return self.network.hosts

    @property
    def net(self) -> Any:
        """The Mininet network (None before build and after close)."""
        return self.network.net

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def ready(self) -> None:
        if self.state_path.exists():
            raise DinetError(f"a lab {self.spec.name!r} is up already ({self.state_path}): `dinet lab down` it first")

    def build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.context.save()
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
        self.node_agents.start_all(self.hosts)
        # its intent names the instances that run; they start meanwhile, their agents retry until it is up
        self.deciding.start(self.intent.checked(), meanwhile=lambda: self.engines.ready(engines))
        if self.agents:
            self.view.wait_reports({n for n, i in self.instances.items() if i.running})

    # ---- run time -----------------------------------------------------------------------------------------
    def set_policy(self, policy: str | None, timeout: float = 20.0) -> None:
        """Every service's policy, changed at run time and waited for (LabIntent.set_policy)."""
        self.intent.set_policy(policy, timeout)

    def set_placement(self, placement: str | None, timeout: float = 20.0) -> None:
        """Every service's placement, changed at run time and waited for (LabIntent.set_placement)."""
        self.intent.set_placement(placement, timeout)

    def wait_until(self, cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        self.context.wait_until(cond, what, timeout)

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
        self.node_agents.close()
        for e in self.links.emulators:
            e.stop()
        self.network.close()
        clean(self.state, self.bpffs_root)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()


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
