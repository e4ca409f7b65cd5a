"""The cloud-edge-device steering scenario in network namespaces, on the XDP data plane.

    client ── ingress (XDP steering) ──┬── site1 (edge)     ── s1a, s1b
     (or: client ── BMv2 switch ── ingress router, with --target bmv2)
                                       ├── site2 (regional) ── s2a, s2b
                                       └── site3 (cloud)    ── s3a, s3b

The client addresses the service VIP (10.99.0.1 / fd00:99::1). The ingress node steers each new flow to
an instance, keeps it there, and tunnels it (IP-in-IP) to the instance's endpoint through its site router;
the instance's XDP decap program delivers it to the VIP on the instance's loopback, and the instance
answers the client directly (direct server return). Every namespace, veth, program, pinned map and
process is removed on exit, also on error or Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dinet.lab.namespaces import Topology
from dinet.lab.rig import Rig
from dinet.model import Instance, ServiceKey
from dinet.paths import BPFFS_ROOT
from dinet.targets.base import SteerSizes
from dinet.targets.bcc_program import BccProgram
from dinet.targets.xdp import DecapNode, SteeringNode

log = logging.getLogger(__name__)

VIP4 = ipaddress.ip_address("10.99.0.1")
VIP6 = ipaddress.ip_address("fd00:99::1")
FABRIC_MTU = 1600  # room for the outer header on top of a 1500-byte client packet


@dataclass(frozen=True)
class InstanceHost:
    name: str  # namespace short name, also what the instance answers
    site: int
    instance_id: int
    endpoint4: ipaddress.IPv4Address
    endpoint6: ipaddress.IPv6Address

    def instance(self, weight: int = 1, v6: bool = False) -> Instance:
        return Instance(
            self.instance_id, self.endpoint6 if v6 else self.endpoint4, weight, site_id=self.site, name=self.name
        )


class CloudEdge(Rig):
    def __init__(
        self,
        prefix: str,
        sites: int = 3,
        per_site: int = 2,
        bpffs_root: Path = BPFFS_ROOT,
        sizes: SteerSizes | None = None,
        tcp_port: int = 80,
        udp_port: int = 53,
        target: str = "xdp",
        serve_profiles: dict[int, str] | None = None,
    ):
        """serve_profiles: site -> a `dinet serve` profile: every instance runs an OpenAI-compatible model
        server on tcp_port instead of the plain HTTP/UDP instance server."""
        self.serve_profiles = serve_profiles
        self.topo = Topology(prefix)
        self.prefix = prefix
        self.sites = sites
        self.bpffs_root = bpffs_root
        self.sizes = sizes or SteerSizes(max_services=64, max_instances=16, affinity_entries=65536)
        self.tcp_port, self.udp_port = tcp_port, udp_port
        self.hosts = [
            InstanceHost(
                f"s{k}{chr(ord('a') + j)}",
                k,
                10 * k + j + 1,
                ipaddress.IPv4Address(f"10.{10 + k}.{j + 1}.2"),
                ipaddress.IPv6Address(f"fd00:{10 + k}:{j + 1}::2"),
            )
            for k in range(1, sites + 1)
            for j in range(per_site)
        ]
        if target not in ("xdp", "bmv2"):
            raise ValueError(f"target must be xdp or bmv2, not {target!r}")
        self.target = target
        self.steer: Any = None  # SteeringNode (xdp) or P4Node (bmv2)
        self.switch: Any = None
        self.p4rt: Any = None
        self.decaps: list[DecapNode] = []
        self.passprog: BccProgram | None = None
        self.servers: list[subprocess.Popen[str]] = []

    @property
    def client_ns(self) -> str:
        return self.topo.ns("c")

    @property
    def ingress_ns(self) -> str:
        return self.topo.ns("in")

    # ---- construction ------------------------------------------------------------------------------
    def build(self) -> None:
        t = self.topo
        t.add_ns("c")
        t.add_ns("in")
        if self.target == "bmv2":  # the switch sits between the client and the ingress router
            t.add_ns("sw")
            t.sh("sw", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            t.link("c", "eth0", "sw", "p0", mtu=FABRIC_MTU)
            t.link("sw", "p1", "in", "eth0", mtu=FABRIC_MTU)
        else:
            t.link("c", "eth0", "in", "eth0")
        t.addr("c", "eth0", "10.0.0.2/24")
        t.addr("c", "eth0", "fd00::2/64")
        t.addr("in", "eth0", "10.0.0.1/24")
        t.addr("in", "eth0", "fd00::1/64")
        t.sh("c", "ip", "route", "add", "default", "via", "10.0.0.1")
        t.sh("c", "ip", "-6", "route", "add", "default", "via", "fd00::1")
        t.forwarding("in")
        for k in range(1, self.sites + 1):
            site = f"s{k}"
            t.add_ns(site)
            t.forwarding(site)
            t.link("in", site, site, "up0", mtu=FABRIC_MTU)
            t.addr("in", site, f"10.1.{k}.1/24")
            t.addr("in", site, f"fd00:1:{k}::1/64")
            t.addr(site, "up0", f"10.1.{k}.2/24")
            t.addr(site, "up0", f"fd00:1:{k}::2/64")
            t.sh(site, "ip", "route", "add", "default", "via", f"10.1.{k}.1")
            t.sh(site, "ip", "-6", "route", "add", "default", "via", f"fd00:1:{k}::1")
            t.sh("in", "ip", "route", "add", f"10.{10 + k}.0.0/16", "via", f"10.1.{k}.2")
            t.sh("in", "ip", "-6", "route", "add", f"fd00:{10 + k}::/32", "via", f"fd00:1:{k}::2")
        for h in self.hosts:
            site, j = f"s{h.site}", h.name[-1]
            t.add_ns(h.name)
            t.link(site, f"d{j}", h.name, "eth0", mtu=FABRIC_MTU)
            gw4 = str(h.endpoint4).rsplit(".", 1)[0] + ".1"
            gw6 = str(h.endpoint6).rsplit("::", 1)[0] + "::1"
            t.addr(site, f"d{j}", f"{gw4}/24")
            t.addr(site, f"d{j}", f"{gw6}/64")
            t.addr(h.name, "eth0", f"{h.endpoint4}/24")
            t.addr(h.name, "eth0", f"{h.endpoint6}/64")
            t.addr(h.name, "lo", f"{VIP4}/32")
            t.addr(h.name, "lo", f"{VIP6}/128")
            t.sh(h.name, "ip", "route", "add", "default", "via", gw4)
            t.sh(h.name, "ip", "-6", "route", "add", "default", "via", gw6)
        self._load_programs()
        self._start_servers()
        # resolve neighbours once so the first steered packets take the XDP fast path
        for h in self.hosts:
            t.sh("in", "ping", "-c1", "-W2", str(h.endpoint4))
            t.sh("in", "ping", "-6", "-c1", "-W2", str(h.endpoint6))

    def _load_programs(self) -> None:
        t = self.topo
        if self.target == "bmv2":
            from dinet.targets.bmv2 import Bmv2Switch, compile_p4
            from dinet.targets.netns import mac_of
            from dinet.targets.p4node import P4Node
            from dinet.targets.p4rt import P4RuntimeSwitch

            pipe = compile_p4(self.sizes.defines())
            self.switch = Bmv2Switch(f"{self.prefix}sw", {0: "p0", 1: "p1"}, t.ns("sw")).start()
            self.p4rt = P4RuntimeSwitch(self.switch.address, name=f"{self.prefix}sw").connect()
            self.p4rt.set_pipeline(pipe.p4info, pipe.json)
            self.steer = P4Node(self.p4rt, self.sizes)
            router = mac_of("eth0", self.ingress_ns)
            self.steer.configure(
                src4="10.0.0.254",
                src6="fd00::254",
                static_next_hop=(1, "02:00:00:00:00:fe", router),
                pass_ports={0: 1, 1: 0},
            )
        else:
            self.steer = SteeringNode(f"{self.prefix}in", self.sizes, bpffs_root=self.bpffs_root)
            self.steer.configure(src4="10.0.0.1", src6="fd00::1")
            self.steer.attach("eth0", self.ingress_ns)
        # XDP_REDIRECT into a veth needs an XDP program on the receiving end
        self.passprog = BccProgram("xdp_pass.bpf.c", self.bpffs_root / f"{self.prefix}pass" / "pass")
        for k in range(1, self.sites + 1):
            self.passprog.attach("xdp_pass", "up0", t.ns(f"s{k}"))
        if self.target == "xdp":  # and XDP_TX back to the client (an ICMP from the steering node)
            self.passprog.attach("xdp_pass", "eth0", self.client_ns)
        # One loaded decap program serves every emulated instance host (a real deployment loads one per
        # host): the same program attached in each host's namespace, its endpoint table naming them all.
        d = DecapNode(f"{self.prefix}decap", bpffs_root=self.bpffs_root)
        self.decaps.append(d)
        for h in self.hosts:
            d.add_endpoint(h.endpoint4)
            d.add_endpoint(h.endpoint6)
            d.attach("eth0", t.ns(h.name))

    def _start_servers(self) -> None:
        if self.serve_profiles is not None:
            for h in self.hosts:
                cmd = [sys.executable, "-m", "dinet.cli", "serve", "--listen", f"[::]:{self.tcp_port}"]
                cmd += ["--profile", self.serve_profiles[h.site], "--name", h.name]
                self.servers.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", self.topo.ns(h.name), *cmd], stdout=subprocess.PIPE, text=True
                    )
                )
            for h, p in zip(self.hosts, self.servers, strict=False):
                line = p.stdout.readline() if p.stdout else ""
                if not line.startswith("ready"):
                    raise RuntimeError(f"dinet serve on {h.name} did not start: {line!r}")
            return
        for h in self.hosts:
            p = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.topo.ns(h.name),
                    sys.executable,
                    str(Path(__file__).resolve().parents[1] / "topo" / "instance_server.py"),
                    "--name",
                    h.name,
                    "--tcp",
                    str(self.tcp_port),
                    "--udp",
                    str(self.udp_port),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.servers.append(p)
        for h, p in zip(self.hosts, self.servers, strict=False):
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"instance server {h.name} did not start: {line!r}")

    # ---- services -----------------------------------------------------------------------------------
    def services(self) -> dict[str, ServiceKey]:
        return {
            "web4": ServiceKey(VIP4, self.tcp_port, "tcp"),
            "web6": ServiceKey(VIP6, self.tcp_port, "tcp"),
            "udp4": ServiceKey(VIP4, self.udp_port, "udp"),
            "udp6": ServiceKey(VIP6, self.udp_port, "udp"),
        }

    def install(self, weights: dict[str, int] | None = None) -> None:
        """Installs every service with every instance (weight 1 unless given by instance name)."""
        assert self.steer
        for key, svc in self.services().items():
            self.steer.add_service(svc)
            self.steer.set_instances(
                svc, [h.instance((weights or {}).get(h.name, 1), v6=key.endswith("6")) for h in self.hosts]
            )

    def host(self, name: str) -> InstanceHost:
        return next(h for h in self.hosts if h.name == name)

    # ---- teardown -----------------------------------------------------------------------------------
    def close(self) -> None:
        for p in self.servers:
            p.terminate()
        for p in self.servers:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.servers.clear()
        if self.p4rt:
            self.p4rt.close()
            self.p4rt = None
        if self.switch:
            self.switch.stop()
            self.switch = None
        self.topo.close()  # interfaces go, and the programs attached to them
        for d in self.decaps:
            d.destroy()
        self.decaps.clear()
        if self.steer is not None and hasattr(self.steer, "destroy"):
            self.steer.destroy()
        self.steer = None
        if self.passprog:
            self.passprog.unpin()
            self.passprog.close()
            self.passprog = None
