"""A BIER domain in network namespaces, on the eBPF data plane: one namespace per BFR, a veth per link,
the TC program of ebpf/bier.bpf.c on every BFR interface, a source host behind the BFIR, and UDP
receivers on the BFERs. BIFTs come from ..policy.bift and are installed through dinet.targets.tc.

    with BierDomain("bd", diamond(), bsl_code=1) as d:
        d.install_bfir(targets={"b", "d"})
        d.send(10); d.received()

Every namespace, program, pinned map and socket is removed on exit, also on error or Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import os
import random
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InterfaceError
from ..paths import BPFFS_ROOT
from ..policy.bift import BfirEntry, BierIntent, BierTopology, Port, bfir_sets, next_hops
from ..services.bier import BierController
from ..services.trees import TreeController
from ..targets import netns
from ..targets.base import SteerSizes
from ..targets.tc import BfirMatch, BierNode, TcBierTarget
from .namespaces import Topology
from .rig import Rig

SYNC_ADDR = ipaddress.ip_address("10.200.0.1")  # the model-sync destination, local on every BFER
SYNC_PORT = 9000
SOURCE_ADDR = "10.50.0.2"
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>: receive times in a control message (Python's socket lacks it)
BMV2_SIZES = SteerSizes(max_services=4, max_instances=4, ring_size=13, affinity_entries=1024)


def diamond(rung: bool = False) -> BierTopology:
    """a (the BFIR, BFR-id 10) linked to b and c, both linked to d; b, c, d are BFERs 1, 2, 3. rung: also
    the link b-c (then b's link to d has a loop-free alternate, c: fast reroute can protect it)."""
    t = BierTopology()
    t.add_node("a", 10)
    t.add_node("b", 1)
    t.add_node("c", 2)
    t.add_node("d", 3)
    for x, y in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")) + ((("b", "c"),) if rung else ()):
        t.add_link(x, y)
    return t


def tree(
    second_set_from: int | None = None, bsl_bits: int = 64, redundant: bool = False, leaves: int = 8
) -> BierTopology:
    """Three levels below the BFIR r: m1, m2; n1..n(leaves/2); leaf BFERs e1..e<leaves> (BFR-ids 1..leaves,
    two per n, the n split between the m). With second_set_from=k, leaves e_k.. get BFR-ids in the next set
    (SI 1). redundant: also the links m1-m2 and n1-n2, n3-n4, ... (cost 2), so any one failure of a link
    above the leaves leaves a path."""
    if leaves < 4 or leaves % 4:
        raise ValueError(f"a tree has a multiple of 4 leaves, not {leaves}")
    t = BierTopology()
    t.add_node("r", 100)
    for m in (1, 2):
        t.add_node(f"m{m}")
        t.add_link("r", f"m{m}")
    half = leaves // 4  # n per m
    for n in range(1, leaves // 2 + 1):
        t.add_node(f"n{n}")
        t.add_link(f"m{(n - 1) // half + 1}", f"n{n}")
    for e in range(1, leaves + 1):
        bfr = e if second_set_from is None or e < second_set_from else bsl_bits + e
        t.add_node(f"e{e}", bfr)
        t.add_link(f"n{(e + 1) // 2}", f"e{e}")
    if redundant:
        t.add_link("m1", "m2", cost=2)
        for n in range(1, leaves // 2, 2):
            t.add_link(f"n{n}", f"n{n + 1}", cost=2)
    return t


def random_domain(bfrs: int, links: int, seed: int = 8279, bfer_every: int = 1) -> BierTopology:
    """A connected domain for planning at scale: a random tree over `bfrs` BFRs r0.. plus random links up
    to `links`, costs 1-3 (so equal-cost paths, where the tie-break decides, are common). Every
    `bfer_every`-th BFR is a BFER (BFR-id its number + 1). Seeded: the same arguments, the same domain."""
    if links < bfrs - 1 or links > bfrs * (bfrs - 1) // 2:
        raise ValueError(f"{bfrs} BFRs cannot have {links} links and be connected")
    rng = random.Random(seed)
    t = BierTopology()
    for i in range(bfrs):
        t.add_node(f"r{i}", i + 1 if i % bfer_every == 0 else None)
    pairs: set[tuple[int, int]] = set()
    for i in range(1, bfrs):
        j = rng.randrange(i)
        pairs.add((j, i))
        t.add_link(f"r{j}", f"r{i}", rng.choice((1, 1, 2, 3)))
    while len(pairs) < links:
        x, y = sorted(rng.sample(range(bfrs), 2))
        if (x, y) not in pairs:
            pairs.add((x, y))
            t.add_link(f"r{x}", f"r{y}", rng.choice((1, 1, 2, 3)))
    return t


@dataclass
class BierDomain(Rig):
    prefix: str
    topo: BierTopology
    bsl_code: int = 1
    bfir: str = ""
    bpffs_root: Path = BPFFS_ROOT
    net: Topology = field(init=False)
    nodes: dict[str, BierNode] = field(default_factory=dict)
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    ifname: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, neighbour) -> interface
    target: str = "tc"  # or "bmv2": every BFR a BMv2 switch running p4/dinet.p4, programmed over P4Runtime
    unicast: bool = False  # tc: also route unicast IPv4 between the BFRs and the source (see route_unicast)
    xdp: bool = True  # tc: the XDP fast path for transit frames (it bypasses qdiscs: off to shape links)
    link_mbit: float = 0.0  # tc: every link shaped to this rate in each direction (TBF; 0: not shaped)
    frr: bool = True  # backup neighbours in the BIFTs (fast reroute; the TC nodes' link monitors use them)
    switches: dict[str, Any] = field(default_factory=dict)  # bmv2: name -> (Bmv2Switch, P4RuntimeSwitch, P4Node)
    port_no: dict[tuple[str, str], int] = field(default_factory=dict)  # bmv2: (node, neighbour) -> port
    _ctl: BierController | None = None
    _trees: TreeController | None = None
    _peer: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, neighbour) -> its address
    _down: set[frozenset[str]] = field(default_factory=set)  # links failed by fail_link

    def __post_init__(self) -> None:
        self.net = Topology(self.prefix)
        if not self.bfir:
            self.bfir = next(iter(self.topo.bfr_ids))

    # ---- construction ------------------------------------------------------------------------------
    def build(self) -> None:
        t = self.net
        for name in self.topo.bfr_ids:
            t.add_ns(name)
        for link in self.topo.links:
            self._link(link.a, link.b)
        t.add_ns("src")
        t.link("src", "eth0", self.bfir, "src")
        t.addr("src", "eth0", f"{SOURCE_ADDR}/24")
        t.addr(self.bfir, "src", "10.50.0.1/24")
        t.sh("src", "ip", "route", "add", "default", "via", "10.50.0.1")
        t.sh(
            "src", "ip", "neigh", "replace", "10.50.0.1", "lladdr", netns.mac_of("src", t.ns(self.bfir)), "dev", "eth0"
        )
        if self.target == "bmv2":
            self._build_bmv2()
        else:
            self._build_tc()
            if self.unicast:
                self.route_unicast()
        self.install_bifts()

    def _build_tc(self) -> None:
        t = self.net
        for name, bfr in self.topo.bfr_ids.items():
            node = BierNode(f"{self.prefix}{name}", bpffs_root=self.bpffs_root)
            self.nodes[name] = node
            for (owner, _), ifname in self.ifname.items():
                if owner == name:
                    node.attach(ifname, t.ns(name), xdp=self.xdp)
                    self._shape(name, ifname)
            if name == self.bfir:
                node.attach("src", t.ns(name), xdp=self.xdp)
                self._shape(name, "src")
                self._shape("src", "eth0")  # the repository's uplink
            if bfr is not None and name != self.bfir:
                t.addr(name, "lo", f"{SYNC_ADDR}/32")
                with netns.entered(t.ns(name)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((str(SYNC_ADDR), SYNC_PORT))
                    s.setblocking(False)
                self.sockets[name] = s

    def router_addr(self, name: str) -> str:
        """A BFR's unicast address (on its loopback when the domain routes unicast)."""
        return f"10.60.0.{list(self.topo.bfr_ids).index(name) + 1}"

    def route_unicast(self, down_links: set[frozenset[str]] | None = None) -> None:
        """Unicast IPv4 across the domain, as the IGP beside BIER gives it (the replies of a reliable multicast,
        a receiver's status endpoint): every BFR gets a /32 on its loopback and a /30 per link; every node
        routes every other node's /32, and the source's subnet, through its shortest-path neighbour. Called
        again with the links that are down, it reconverges (fail_link and restore_link do), as an IGP would."""
        t = self.net
        names = list(self.topo.bfr_ids)
        if not self._peer:
            for name in names:
                t.forwarding(name)
                t.addr(name, "lo", f"{self.router_addr(name)}/32")
            for i, link in enumerate(self.topo.links):
                t.addr(link.a, self.ifname[(link.a, link.b)], f"10.61.{i}.1/30")
                t.addr(link.b, self.ifname[(link.b, link.a)], f"10.61.{i}.2/30")
                self._peer[(link.a, link.b)], self._peer[(link.b, link.a)] = f"10.61.{i}.2", f"10.61.{i}.1"
        topo = self.topo
        for cut in sorted(down_links or (), key=sorted):
            topo = topo.without_link(*sorted(cut))
        for name in names:
            hops = next_hops(topo, name)
            for dst in names:
                if dst == name:
                    continue
                prefixes = [f"{self.router_addr(dst)}/32"] + (["10.50.0.0/24"] if dst == self.bfir else [])
                for prefix in prefixes:
                    if dst in hops:
                        nbr = hops[dst]
                        t.route(
                            name,
                            prefix,
                            self._peer[(name, nbr)],
                            "dev",
                            self.ifname[(name, nbr)],
                            "src",
                            self.router_addr(name),
                        )  # fmt: skip  (what a BFR sends itself comes from its loopback, which every node routes)
                    else:
                        t.sh(name, "ip", "route", "del", prefix, check=False)

    def _shape(self, name: str, ifname: str) -> None:
        """TBF at the interface's egress at link_mbit (a burst of 4 ms at the rate), if links are shaped."""
        if self.link_mbit:
            burst = max(32_000, int(self.link_mbit * 1e6 / 8 / 250))
            self.net.sh(
                name, "tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", f"{self.link_mbit}mbit",
                "burst", str(burst), "latency", "50ms",
            )  # fmt: skip

    def tx_bytes(self) -> dict[tuple[str, str], int]:
        """Bytes sent so far by every interface of the domain and the source: (namespace, interface) -> bytes."""
        import json

        out: dict[tuple[str, str], int] = {}
        for name in [*self.topo.bfr_ids, "src"]:
            for link in json.loads(self.net.sh(name, "ip", "-j", "-s", "link", "show").stdout):
                if link["ifname"] != "lo":
                    out[(name, link["ifname"])] = int(link["stats64"]["tx"]["bytes"])
        return out

    def _build_bmv2(self) -> None:
        """Every BFR a BMv2 switch in its namespace: port 0 toward its host (the source's namespace for the
        BFIR; for a BFER, a host namespace h<name> holding the receiver), ports 1.. its links. A switch has one
        MAC on all its ports, which its host's interface also has, so a local copy (which keeps the Ethernet
        header it arrived with) is addressed to the host."""
        from ..targets.bmv2 import Bmv2Switch, compile_p4
        from ..targets.p4node import P4Node
        from ..targets.p4rt import P4RuntimeSwitch

        t = self.net
        pipe = compile_p4(BMV2_SIZES.defines())
        for k, (name, bfr) in enumerate(self.topo.bfr_ids.items()):
            mac = f"02:00:00:00:{k + 1:02x}:00"
            ports = {0: "src" if name == self.bfir else "host"}
            for (owner, nbr), ifname in sorted(self.ifname.items()):
                if owner == name:
                    ports[len(ports)] = ifname
                    self.port_no[(owner, nbr)] = len(ports) - 1
            if name != self.bfir:
                host = f"h{name}"
                t.add_ns(host)
                t.link(name, "host", host, "eth0", mtu=1600)
                t.sh(host, "ip", "link", "set", "dev", "eth0", "address", mac)
            for ifname in ports.values():
                if ifname != "src":
                    t.sh(name, "ip", "link", "set", "dev", ifname, "address", mac)
            if name != self.bfir:
                if bfr is not None:
                    t.addr(host, "lo", f"{SYNC_ADDR}/32")
                    with netns.entered(t.ns(host)):
                        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        s.bind((str(SYNC_ADDR), SYNC_PORT))
                        s.setblocking(False)
                    self.sockets[name] = s
            sw = Bmv2Switch(f"{self.prefix}{name}", ports, t.ns(name), device_id=k).start()
            self.switches[name] = (sw, None, None)
            p4rt = P4RuntimeSwitch(sw.address, device_id=k, name=f"{self.prefix}{name}")
            p4rt.connect()
            p4rt.set_pipeline(pipe.p4info, pipe.json)
            node = P4Node(p4rt, BMV2_SIZES)
            node.local_port = 0
            node.port_names, node.port_netns = dict(ports), t.ns(name)
            node.configure(host_port=0)
            node.monitor_ports()  # fast reroute: the switch's own link monitor
            self.switches[name] = (sw, p4rt, node)

    def _link(self, a: str, b: str) -> None:
        if self.target == "bmv2":
            # a BMv2 switch stops reading all its ports when one of them is set down (seen with 1.15), so
            # its links run through a "cable" namespace: a failure is a carrier loss at both switches, as a
            # cut fibre is, never an interface taken down under the switch
            if "wire" not in {n.removeprefix(self.prefix) for n in self.net.namespaces}:
                self.net.add_ns("wire")
            self.net.link(a, b, "wire", f"{a}-{b}.a")
            self.net.link(b, a, "wire", f"{a}-{b}.b")
            self.net.sh("wire", "ip", "link", "add", f"{a}-{b}", "type", "bridge")
            for end in ("a", "b"):
                self.net.sh("wire", "ip", "link", "set", f"{a}-{b}.{end}", "master", f"{a}-{b}")
            self.net.sh("wire", "ip", "link", "set", f"{a}-{b}", "up")
        else:
            self.net.link(a, b, b, a)  # the interface toward b is called b, and the other way round
        self.ifname[(a, b)] = b
        self.ifname[(b, a)] = a

    def fail_link(self, a: str, b: str) -> None:
        """The link a-b fails: on TC nodes a's interface goes down; between BMv2 switches the cable is cut
        (both switches lose carrier)."""
        self._set_link(a, b, "down")

    def restore_link(self, a: str, b: str) -> None:
        """Undoes fail_link (the controller sees the link back on its next watch, or on link_up)."""
        self._set_link(a, b, "up")

    def _set_link(self, a: str, b: str, state: str) -> None:
        if self.target == "bmv2":
            cable = self._cable(a, b)
            for end in ("a", "b"):
                self.net.sh("wire", "ip", "link", "set", f"{cable}.{end}", state)
        else:  # over netlink from this process: the failure's time is when the kernel is told, not a fork later
            self._link_request(a, b, state == "up")()
        (self._down.add if state == "down" else self._down.discard)(frozenset((a, b)))
        if self._peer:  # the domain routes unicast: the IGP reconverges too
            self.route_unicast(self._down)

    def _cable(self, a: str, b: str) -> str:
        """The bridge in the wire namespace that carries the link a-b between BMv2 switches ("x-y", x the link's
        first end; its ends x-y.a toward x and x-y.b toward y)."""
        x, y = (a, b) if (a, b) in {(k.a, k.b) for k in self.topo.links} else (b, a)
        return f"{x}-{y}"

    def _link_request(self, a: str, b: str, up: bool) -> Callable[[], None]:
        """One netlink request, built ahead, that sets a's port toward b up or down (TC nodes)."""
        return self._netlink_set(a, self.ifname[(a, b)], up)

    def _netlink_set(self, ns: str, ifname: str, up: bool) -> Callable[[], None]:
        """One netlink request, built ahead, that sets the interface ifname of namespace ns up or down."""
        with netns.entered(self.net.ns(ns)):  # a netlink socket belongs to the namespace it was made in
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        index = netns.ifindex(ifname, self.net.ns(ns))
        # RTM_NEWLINK (16), NLM_F_REQUEST | NLM_F_ACK; ifinfomsg: this index, IFF_UP set or not under its mask
        request = struct.pack("=IHHII", 32, 16, 0x5, 1, 0) + struct.pack("=BBHiII", 0, 0, 0, index, int(up), 0x1)

        def send() -> None:
            try:
                nl.send(request)
                err = struct.unpack_from("=i", nl.recv(4096), 16)[0]  # NLMSG_ERROR with error 0: done
                if err:
                    raise InterfaceError(f"cannot set {ifname} in {ns} {'up' if up else 'down'}: {os.strerror(-err)}")
            finally:
                nl.close()

        return send

    def _cutter(self, a: str, b: str) -> Callable[[], None]:
        """fail_link(a, b) made ready ahead (netlink sockets open and the requests built: on TC nodes for a's
        port; between BMv2 switches for the cable's two ends in the wire namespace, a's end first), so that
        calling it is one request to the kernel per end: what a failover measures starts there."""
        if self.target == "bmv2":
            cable = self._cable(a, b)
            order = ("a", "b") if cable == f"{a}-{b}" else ("b", "a")
            downs = [self._netlink_set("wire", f"{cable}.{end}", False) for end in order]
        else:
            downs = [self._link_request(a, b, up=False)]

        def cut() -> None:
            for down in downs:
                down()
            self._down.add(frozenset((a, b)))
            if self._peer:
                self.route_unicast(self._down)

        return cut

    def remove_link(self, a: str, b: str) -> None:
        """Takes the link down for good; the controller routes around it (only changed entries written)."""
        self.net.sh(a, "ip", "link", "del", "dev", b)
        self.ctl().link_down(a, b)

    def ctl(self) -> BierController:
        """The domain's controller (one for the domain's life, so it writes only what changes): topology,
        ports (interface and MAC) and a TC BierTarget per BFR."""
        if self._ctl is None:
            ports = {
                (node, nbr): Port(
                    str(self.port_no[(node, nbr)]) if self.target == "bmv2" else ifname,
                    netns.mac_of(ifname, self.net.ns(node)),
                )
                for (node, nbr), ifname in self.ifname.items()
            }
            intent = BierIntent(self.bsl_code, self.topo, ports, [], frr=self.frr)
            targets: dict[str, Any] = (
                {n: s[2] for n, s in self.switches.items()}
                if self.target == "bmv2"
                else {n: TcBierTarget(node, self.net.ns(n)) for n, node in self.nodes.items()}
            )
            self._ctl = BierController(intent, targets)
        return self._ctl

    def trees(self) -> TreeController:
        """The SR-P2MP tree baseline's controller over the same nodes (each node's program, or switch,
        forwards both), its node-SID routes written on first use."""
        if self._trees is None:
            ctl = self.ctl()
            targets: dict[str, Any] = dict(ctl.targets)  # each TC target and P4Node is a TreeTarget too
            self._trees = TreeController(ctl.intent, targets)
            self._trees.install_routes()
        return self._trees

    def install_bifts(self) -> None:
        """Computes every BFR's BIFT and writes it (dinet.services.bier)."""
        self.ctl().install()

    def install_bfir(self, targets: set[str], match: BfirMatch | None = None) -> BfirMatch:
        """The BFIR sends the model-sync UDP destination (or `match`) to `targets` (BFR names)."""
        ids = [self.topo.bfr_ids[name] for name in targets]
        assert None not in ids, f"{targets} are not all BFERs"
        sets = bfir_sets((b for b in ids if b is not None), self.bsl_code)
        match = match or BfirMatch(SYNC_ADDR, udp_port=SYNC_PORT)
        bfir_id = self.topo.bfr_ids[self.bfir] or 1
        entry = BfirEntry(
            str(match.dst),
            bfir_id,
            self.bsl_code,
            tuple(sorted(sets.items())),
            str(match.src) if match.src else "",
            match.udp_port,
        )
        self.ctl().targets[self.bfir].set_bfir(entry)  # the BierTarget of either data plane
        return match

    # ---- traffic -----------------------------------------------------------------------------------------
    def send(self, count: int, start: int = 0, size: int = 64) -> None:
        """`count` UDP datagrams from the source to the model-sync destination, numbered from `start`."""
        with netns.entered(self.net.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(start, start + count):
                s.sendto(struct.pack("!I", i).ljust(size, b"m"), (str(SYNC_ADDR), SYNC_PORT))

    def received(self, expect: dict[str, int], timeout: float = 3.0) -> dict[str, list[int]]:
        """Sequence numbers each BFER got. Reads until every BFER in `expect` has its count (or the
        timeout passes with nothing new), then once more to catch extras (duplicates, strays)."""
        got: dict[str, list[int]] = {n: [] for n in self.sockets}

        def drain() -> bool:
            any_new = False
            for name, s in self.sockets.items():
                while True:
                    try:
                        data = s.recv(65535)
                    except BlockingIOError:
                        break
                    got[name].append(struct.unpack("!I", data[:4])[0])
                    any_new = True
            return any_new

        while any(len(got[n]) < c for n, c in expect.items()):
            if not select.select(list(self.sockets.values()), [], [], timeout)[0]:
                break
            drain()
        drain()
        return got

    # ---- a link failure during a stream ------------------------------------------------------------------
    def failover(
        self,
        targets: set[str],
        fail: tuple[str, str],
        watch_interval: float = 0.1,
        rate_pps: int = 1000,
        before_s: float = 0.5,
        after_s: float = 1.5,
    ) -> dict[str, object]:
        """Streams numbered datagrams to `targets` at `rate_pps` while the controller watches the domain
        (every `watch_interval` s); after `before_s` the link `fail` goes down (its interface on fail[0]'s
        side); the stream runs on `after_s`. Returns, per BFER, the sequence numbers received, the failure's
        sequence number, and the times from the failure (the request to take the port down; the stream goes on
        meanwhile) to the rewritten BIFTs, to the failed port's mark by its node's link monitor (what fast
        reroute reads; on BMv2 when the switch acknowledged it), and to the first datagram each BFER received
        (the kernel's arrival time) of those sent once the failure took effect (after the mark)."""
        import threading
        import time

        self.install_bfir(targets)
        ctl = self.ctl()
        stop = threading.Event()
        watcher = threading.Thread(target=ctl.watch, args=(watch_interval, stop), daemon=True)
        watcher.start()
        total = int((before_s + after_s) * rate_pps)
        fail_seq, t_fail = -1, 0.0
        cut = self._cutter(*fail)
        cutter: threading.Thread | None = None
        sent_at: list[float] = []
        arrivals: dict[str, list[tuple[int, float]]] = {n: [] for n in self.sockets}
        # arrival times from the kernel (SO_TIMESTAMPNS, the wall clock), not from when this loop reads
        for sock in self.sockets.values():
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        wall = time.time() - time.monotonic()

        def drain(name: str, sock: socket.socket) -> None:
            while True:
                try:
                    data, anc, _, _ = sock.recvmsg(65535, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    return
                stamp = next((struct.unpack("=qq", d[:16]) for lvl, kind, d in anc if kind == SO_TIMESTAMPNS), None)
                at = stamp[0] + stamp[1] / 1e9 - wall if stamp else time.monotonic()
                arrivals[name].append((struct.unpack("!I", data[:4])[0], at))

        try:
            with netns.entered(self.net.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                t0 = time.monotonic()
                for i in range(total):
                    if i == int(before_s * rate_pps):  # the failure's time: when the request is made; the
                        fail_seq, t_fail = i, time.monotonic()  # stream goes on while the kernel takes it
                        cutter = threading.Thread(target=cut, name="cut")
                        cutter.start()
                    sent_at.append(time.monotonic())
                    s.sendto(struct.pack("!I", i).ljust(64, b"m"), (str(SYNC_ADDR), SYNC_PORT))
                    for name, sock in self.sockets.items():  # read as we go (the socket buffers are small)
                        drain(name, sock)
                    pause = t0 + (i + 1) / rate_pps - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            if cutter is not None:
                cutter.join()
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:  # the last datagrams still on their way
                if select.select(list(self.sockets.values()), [], [], 0.1)[0]:
                    for name, sock in self.sockets.items():
                        drain(name, sock)
        finally:
            for sock in self.sockets.values():
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
            stop.set()
            watcher.join()
        rewrites = [h for h in ctl.history if h.detected_at >= t_fail - watch_interval]
        marked = None
        if self.target == "tc":  # when the failed port's node saw it down (its link monitor's mark)
            port = netns.ifindex(self.ifname[fail], self.net.ns(fail[0]))
            at = self.nodes[fail[0]].ports_down().get(port)
        else:  # when the switch was told (its link monitor's write of bier_port_state came back)
            node = self.switches[fail[0]][2]
            at = node.ports_told_ns if self.port_no[fail] in node.ports_down() else None
        marked = (at / 1e9 - t_fail) * 1000 if at else None
        # the first datagram each BFER got of those sent once the failure took effect (the port marked down,
        # or the switch told): through the backup or the new path, never the failed link
        since = t_fail + (marked or 0) / 1000
        first_after = {
            n: min(((at, q) for q, at in a if sent_at[q] >= since), default=None) for n, a in arrivals.items()
        }
        return {
            "fail_seq": fail_seq,
            "sent": total,
            "received": {n: sorted(q for q, _ in a) for n, a in arrivals.items()},
            "recompute_ms": (rewrites[0].written_at - t_fail) * 1000 if rewrites else None,
            "entries_rewritten": rewrites[0].entries_written if rewrites else 0,
            "first_packet_ms": {n: None if f is None else (f[0] - t_fail) * 1000 for n, f in first_after.items()},
            # that datagram's own time on the way (arrival less its sending): the stream's spacing apart, the new
            # path was ready this long after the mark (or the switch told)
            "first_transit_ms": {
                n: None if f is None else (f[0] - sent_at[f[1]]) * 1000 for n, f in first_after.items()
            },
            "port_marked_ms": marked,
        }

    # ---- teardown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()
        for sw, p4rt, node in self.switches.values():
            if node is not None:
                node.close()
            elif p4rt is not None:
                p4rt.close()
            sw.stop()
        self.switches.clear()
        self.net.close()
        for node in self.nodes.values():
            node.destroy()
        self.nodes.clear()
        root = self.bpffs_root
        if root.exists() and root != BPFFS_ROOT and not any(root.iterdir()):
            os.rmdir(root)


def failover_demo(target: str = "tc") -> None:
    """A diamond domain: a stream to every BFER, the link b-d failing in the middle; prints who got what and
    how long the reroute took (`dinet lab bier-failover [--target tc|bmv2]`)."""
    with BierDomain(f"bd{os.getpid() % 1000}", diamond(), 1, target=target) as d:
        d.install_bifts()
        res = d.failover({"b", "c", "d"}, ("b", "d"), watch_interval=0.5, rate_pps=500, before_s=0.5, after_s=1.0)
        got = res["received"]
        assert isinstance(got, dict)
        print(f"{target}: {res['sent']} datagrams, the link b-d failed at #{res['fail_seq']}")
        for name in sorted(got):
            seqs = got[name]
            print(
                f"  {name}: {len(seqs)} received, {len(seqs) - len(set(seqs))} duplicates, "
                f"last #{max(seqs, default=-1)}"
            )
        print(
            f"  BIFTs rewritten {res['recompute_ms']:.1f} ms after the failure ({res['entries_rewritten']} entries); "
            f"first datagram at d through c after {res['first_packet_ms']['d']:.1f} ms"  # type: ignore[index]
        )
