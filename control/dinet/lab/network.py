"""A lab's network: the Mininet hosts, bridges and (with --target bmv2) BMv2 switches of a scenario, its links
(an emulated one through a link emulator node: dinet.lab.linkem), the address plan (dinet.lab.net's module
docstring), and the programs every lab has (the decap program on each instance host; with XDP, a pass program
beside each ingress router's links). A Lab holds one (`lab.network`); the steering programs and everything
that runs on the network are the lab's other parts'."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

from ..targets.bcc_program import BccProgram
from ..targets.xdp import DecapNode
from .context import LabContext
from .deciding import MGMT_ROOT
from .linkem import LinkEmulator
from .links import Links
from .scenario import LinkSpec

TUNNEL_SMAC = "02:00:00:00:00:fe"  # the P4 switch's source MAC toward its ingress router
FABRIC_MTU = 1600  # the tunnel's 20 bytes on top of a 1500-byte packet


class Network:
    def __init__(
        self,
        context: LabContext,
        target: str,
        links: Links,
        bpffs_root: Path,
        backend: str = "auto",
        pcap: bool = False,
    ):
        """The network adds its namespaces, root-namespace links, processes and pins to the lab's state
        record (context.state: what `dinet lab down` removes) as it makes them."""
        self.spec, self.target, self.tag, self.ns = context.spec, target, context.tag, context.ns
        self.instances, self.links = context.instances, links
        self.procs, self.state, self._save, self.workdir = context.procs, context.state, context.save, context.workdir
        self.bpffs_root, self.backend, self.pcap = bpffs_root, backend, pcap
        self.net: Any = None
        self.hosts: dict[str, Any] = {}  # scenario node name -> Mininet host
        self.ingress_intf: dict[str, str] = {}  # ingress name -> its client LAN interface
        self.next_hops: list[tuple[Any, Any, str]] = []  # (ingress interface, site router interface, its address)
        self.captures: list[subprocess.Popen[Any]] = []  # tcpdump per host (pcap=True)
        self.decap: DecapNode | None = None
        self.passprog: BccProgram | None = None

    def build(self) -> None:
        """The network up and addressed, its links' emulators running, pcaps (pcap=True) and programs on."""
        self._build()
        if self.pcap:
            self._capture()
        self._programs()

    def switch(self, k: int) -> Any:
        """target bmv2: the P4 switch in front of ingress node k (from 1)."""
        return self.net.get(f"{self.tag}p{k}")

    def client_lan_mac(self, ingress: str) -> str:
        """The ingress router's MAC on its client LAN (where the P4 switch sends what it tunnels)."""
        return str(self.hosts[ingress].intf(self.ingress_intf[ingress]).MAC())

    def close(self) -> None:
        """Its programs removed and the network stopped (a half-built one: what is there); the captures and
        emulators are stopped by the lab with every other process."""
        if self.decap is not None:
            self.decap.destroy()
            self.decap = None
        if self.passprog is not None:
            self.passprog.unpin()
            self.passprog.close()
            self.passprog = None
        if self.net is not None:
            with contextlib.suppress(Exception):  # a half-built network: remove what is there
                self.net.stop()
            self.net = None

    def _build(self) -> None:
        from mininet.net import Mininet
        from mininet.node import Node
        from mininet.nodelib import LinuxBridge

        from .mininet_nodes import Bmv2GrpcSwitch

        s = self.spec
        net = self.net = Mininet(controller=None, build=False, switch=LinuxBridge)
        add = lambda name: self.hosts.setdefault(name, net.addHost(name, ip=None))  # noqa: E731
        ends: list[tuple[Any, Any, str]] = []  # (interface a, interface b, subnet) to address after start
        root = Node(f"{self.tag}r", inNamespace=False)
        mgmt = net.addSwitch(f"{self.tag}m")
        root_link = net.addLink(root, mgmt)
        self.state["root_links"] += [root_link.intf1.name, f"{self.tag}m"]
        for k, ing in enumerate(s.ingress, 1):
            r = add(ing.name)
            lan = net.addSwitch(f"{self.tag}l{k}")
            self.state["root_links"].append(lan.name)
            if self.target == "bmv2":
                sw = net.addSwitch(f"{self.tag}p{k}", cls=Bmv2GrpcSwitch, device_id=k, pcap_dir=self._pcaps())
                net.addLink(lan, sw, port2=1)
                link = net.addLink(sw, r, port1=2)
                self.ingress_intf[ing.name] = link.intf2.name
                self.state["root_links"].append(sw.name)
            else:
                link = net.addLink(lan, r)
                self.ingress_intf[ing.name] = link.intf2.name
            for c in (c for c in s.clients if s.client_ingress(c) == ing.name):
                ends.append((*self._link(add(c.name), lan, c.link), f"10.0.{k}.0/24"))
                if c.local is not None:  # a device reads the controller's view on the management network
                    net.addLink(self.hosts[c.name], mgmt)
        for site in s.sites:
            add(site.name)
        for site in s.sites:
            for k, ing in enumerate(s.ingress, 1):
                path = s.path(site.name, ing.name)
                a, b = self._link(self.hosts[ing.name], self.hosts[site.name], path)
                ends.append((a, b, f"10.{k}.{site.id}.0/24"))
                self.next_hops.append((a, b, f"10.{k}.{site.id}.2"))
                self.links.paths.append((ing.name, site.name, f"10.{k}.{site.id}.2", path))
        for inst in self.instances.values():
            h = inst.host = add(inst.spec.name)
            a, b = self._link(self.hosts[inst.spec.site], h, inst.spec.link)
            ends.append((a, b, inst.endpoint.rsplit(".", 1)[0] + ".0/24"))
            net.addLink(h, mgmt)
        net.build()
        net.start()
        for name, h in list(self.hosts.items()) + [(e.name, e.host) for e in self.links.emulators]:
            subprocess.run(["ip", "netns", "attach", self.ns(name), str(h.pid)], check=True, capture_output=True)
            self.state["netns"].append(self.ns(name))
            self.state["pids"].append(h.pid)
            h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            # checksums filled in by the sender: a frame copied by an XDP tunnel, a BMv2 switch or a delay
            # line reaches its receiver without the offload's promise that the checksum will be done
            for intf in h.intfList():
                h.cmd(f"ethtool -K {intf.name} tx off tso off gso off >/dev/null 2>&1")
        self._save()
        root.cmd(f"ip addr add {MGMT_ROOT}/16 dev {root_link.intf1.name}")
        self._fabric_mtu()
        self._address(ends)
        for e in self.links.emulators:
            e.start(self.ns(e.name), self.backend, self.workdir / "logs")
        self.state["pids"] += [e.pid for e in self.links.emulators if e.pid]
        self._save()

    def _fabric_mtu(self) -> None:
        """Room for the tunnel header: FABRIC_MTU on every link between routers, switches and instances (the
        clients' side stays at 1500, and instances send at most 1500 themselves: see _address)."""
        clients = {c.name for c in self.spec.clients}
        edge = clients | {e.name for e in self.links.emulators if e.a in clients or e.b in clients}
        for link in self.net.links:
            nodes = {link.intf1.node.name, link.intf2.node.name}
            if nodes & edge or any(n.startswith(f"{self.tag}l") or n.startswith(f"{self.tag}m") for n in nodes):
                continue
            if any(n.startswith(f"{self.tag}r") for n in nodes):
                continue
            for intf in (link.intf1, link.intf2):
                intf.node.cmd(f"ip link set dev {intf.name} mtu {FABRIC_MTU}")

    def _capture(self) -> None:
        """A pcap per host (every interface: tcpdump -i any) in the work folder's pcap/."""
        d = Path(str(self._pcaps()))
        for name in self.hosts:
            p = self.procs.popen(
                name,
                ["tcpdump", "-i", "any", "-n", "-U", "-w", str(d / f"{name}.pcap")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.captures.append(p)
            self.state["pids"].append(p.pid)
        self._save()

    def _pcaps(self) -> str | None:
        if not self.pcap:
            return None
        d = self.workdir / "pcap"
        d.mkdir(parents=True, exist_ok=True)
        return str(d)

    def _link(self, a: Any, b: Any, spec: LinkSpec) -> tuple[Any, Any]:
        """A link from a to b; an emulated one through a link emulator node. Returns the two end interfaces."""
        if not spec.emulated:
            link = self.net.addLink(a, b)
            return link.intf1, link.intf2
        e = LinkEmulator(f"x{len(self.links.emulators) + 1}", spec, a.name, b.name)
        e.host = self.net.addHost(e.name, ip=None)
        la, lb = self.net.addLink(a, e.host), self.net.addLink(e.host, b)
        e.ends = (la.intf1, lb.intf2)
        e.wire = (la.intf2.name, lb.intf1.name)
        self.links.emulators.append(e)
        return la.intf1, lb.intf2

    def _address(self, ends: list[tuple[Any, Any, str]]) -> None:
        s = self.spec
        for k, ing in enumerate(s.ingress, 1):
            r = self.hosts[ing.name]
            r.cmd(f"ip addr add 10.0.{k}.1/24 dev {self.ingress_intf[ing.name]}")
            r.cmd("sysctl -qw net.ipv4.ip_forward=1")
            for n, c in enumerate((c for c in s.clients if s.client_ingress(c) == ing.name), 10):
                h = self.hosts[c.name]
                intf = next(i for i in ends if i[0].node is h)[0]
                h.cmd(f"ip addr add 10.0.{k}.{n}/24 dev {intf.name}")
                h.cmd(f"ip route add default via 10.0.{k}.1")
                if c.local is not None:
                    h.cmd(f"ip addr add 172.31.{k}.{n}/16 dev {c.name}-eth1")
        for a, b, subnet in ends:
            base = subnet.rsplit(".", 1)[0]
            if a.node.name in self.hosts and b.node.name in self.hosts and not subnet.startswith("10.0."):
                a.node.cmd(f"ip addr add {base}.1/24 dev {a.name}")
                b.node.cmd(f"ip addr add {base}.2/24 dev {b.name}")
        # the steering program's FIB lookup finds each site router's MAC from the first packet on (a missing
        # neighbour would send the tunnelled packet to the kernel, which drops it: its source is the router's)
        for a, b, addr in self.next_hops:
            a.node.cmd(f"ip neigh replace {addr} lladdr {b.MAC()} dev {a.name} nud permanent")
        for site in s.sites:
            h = self.hosts[site.name]
            h.cmd("sysctl -qw net.ipv4.ip_forward=1")
            for k, ing in enumerate(s.ingress, 1):
                h.cmd(f"ip route add 10.0.{k}.0/24 via 10.{k}.{site.id}.1")
                self.hosts[ing.name].cmd(f"ip route add 10.{100 + site.id}.0.0/16 via 10.{k}.{site.id}.2")
            # between sites (a prefill stage calling the decode stage's VIP): through the first ingress node,
            # whose steering node takes VIP traffic from the sites as from its clients
            h.cmd(f"ip route add default via 10.1.{site.id}.1")
        if self.target == "bmv2":  # the P4 switch sits on the LAN side: the router sends VIP traffic to it
            for k, ing in enumerate(s.ingress, 1):
                r, dev = self.hosts[ing.name], self.ingress_intf[ing.name]
                r.cmd(f"ip neigh replace 10.0.{k}.254 lladdr {TUNNEL_SMAC} dev {dev} nud permanent")
                for vip in sorted({svc.vip for svc in s.services}):
                    r.cmd(f"ip route add {vip}/32 via 10.0.{k}.254 dev {dev}")
        for inst in self.instances.values():
            h = inst.host
            h.cmd(f"ip route add default via {inst.gateway} mtu 1500")  # its own packets fit a tunnel
            h.cmd(f"ip addr add {inst.mgmt}/16 dev {inst.spec.name}-eth1")
            # its own services' VIPs only: another stage's VIP (decode, from a prefill instance) is steered
            for vip in sorted({s.service(x).vip for x in inst.spec.services}):
                h.cmd(f"ip addr add {vip}/32 dev lo")

    def _programs(self) -> None:
        """The decap program on every instance host; with XDP, a pass program on the far end of each of the
        ingress routers' links (XDP_REDIRECT and XDP_TX into a veth need one there)."""
        pins = self.bpffs_root / f"{self.tag}lab"
        self.state["pins"].append(str(pins))
        self._save()
        self.decap = DecapNode(f"{self.tag}lab", bpffs_root=self.bpffs_root)
        for inst in self.instances.values():
            self.decap.add_endpoint(inst.endpoint)
            self.decap.attach(f"{inst.spec.name}-eth0", self.ns(inst.spec.name))
        if self.target != "xdp":
            return
        self.passprog = BccProgram("xdp_pass.bpf.c", pins / "pass")
        for ing in self.spec.ingress:
            for intf in self.hosts[ing.name].intfList():
                peer = intf.link.intf2 if intf.link.intf1 is intf else intf.link.intf1
                where = None if peer.node.name not in self.named() else self.ns(peer.node.name)
                self.passprog.attach("xdp_pass", peer.name, where)

    def named(self) -> set[str]:
        return set(self.hosts) | {e.name for e in self.links.emulators}
