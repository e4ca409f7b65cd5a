"""A BIER domain in network namespaces, on the eBPF data plane: one namespace per BFR, a veth per link,
the TC program of ebpf/bier.bpf.c on every BFR interface, a source host behind the BFIR, and UDP
receivers on the BFERs. BIFTs come from dinet.policy.bift and are installed through dinet.targets.tc.

    with BierDomain("bd", diamond(), bsl_code=1) as d:
        d.install_bfir(targets={"b", "d"})
        d.send(10); d.received()

Every namespace, program, pinned map and socket is removed on exit, also on error or Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from dinet.packets import BSL_BITS, bift_id, si_bit
from dinet.paths import BPFFS_ROOT
from dinet.policy.bift import BierIntent, BierTopology, Port
from dinet.services.bier import BierController
from dinet.targets import netns
from dinet.targets.tc import BfirMatch, BierNode, TcBierTarget
from topo.namespaces import Topology

SYNC_ADDR = ipaddress.ip_address("10.200.0.1")  # the model-sync destination, local on every BFER
SYNC_PORT = 9000
SOURCE_ADDR = "10.50.0.2"


def diamond() -> BierTopology:
    """a (the BFIR, BFR-id 10) linked to b and c, both linked to d; b, c, d are BFERs 1, 2, 3."""
    t = BierTopology()
    t.add_node("a", 10)
    t.add_node("b", 1)
    t.add_node("c", 2)
    t.add_node("d", 3)
    for x, y in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        t.add_link(x, y)
    return t


def tree(second_set_from: int | None = None, bsl_bits: int = 64) -> BierTopology:
    """Three levels below the BFIR r: m1, m2; n1..n4; eight leaf BFERs e1..e8 (BFR-ids 1..8). With
    second_set_from=k, leaves e_k..e8 get BFR-ids in the next set (SI 1)."""
    t = BierTopology()
    t.add_node("r", 100)
    for m in (1, 2):
        t.add_node(f"m{m}")
        t.add_link("r", f"m{m}")
    for n in range(1, 5):
        t.add_node(f"n{n}")
        t.add_link(f"m{(n + 1) // 2}", f"n{n}")
    for e in range(1, 9):
        bfr = e if second_set_from is None or e < second_set_from else bsl_bits + e
        t.add_node(f"e{e}", bfr)
        t.add_link(f"n{(e + 1) // 2}", f"e{e}")
    return t


@dataclass
class BierDomain:
    prefix: str
    topo: BierTopology
    bsl_code: int = 1
    bfir: str = ""
    bpffs_root: Path = BPFFS_ROOT
    net: Topology = field(init=False)
    nodes: dict[str, BierNode] = field(default_factory=dict)
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    ifname: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, neighbour) -> interface
    _ctl: BierController | None = None

    def __post_init__(self) -> None:
        self.net = Topology(self.prefix)
        if not self.bfir:
            self.bfir = next(iter(self.topo.bfr_ids))

    def __enter__(self) -> BierDomain:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        for name, bfr in self.topo.bfr_ids.items():
            node = BierNode(f"{self.prefix}{name}", bpffs_root=self.bpffs_root)
            self.nodes[name] = node
            for (owner, _), ifname in self.ifname.items():
                if owner == name:
                    node.attach(ifname, t.ns(name))
            if name == self.bfir:
                node.attach("src", t.ns(name))
            if bfr is not None and name != self.bfir:
                t.addr(name, "lo", f"{SYNC_ADDR}/32")
                with netns.entered(t.ns(name)):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((str(SYNC_ADDR), SYNC_PORT))
                    s.setblocking(False)
                self.sockets[name] = s
        self.install_bifts()

    def _link(self, a: str, b: str) -> None:
        self.net.link(a, b, b, a)  # the interface toward b is called b, and the other way round
        self.ifname[(a, b)] = b
        self.ifname[(b, a)] = a

    def remove_link(self, a: str, b: str) -> None:
        """Takes the link down for good; the controller routes around it (only changed entries written)."""
        self.net.sh(a, "ip", "link", "del", "dev", b)
        self.ctl().link_down(a, b)

    def ctl(self) -> BierController:
        """The domain's controller (one for the domain's life, so it writes only what changes): topology,
        ports (interface and MAC) and a TC BierTarget per BFR."""
        if self._ctl is None:
            ports = {
                (node, nbr): Port(ifname, netns.mac_of(ifname, self.net.ns(node)))
                for (node, nbr), ifname in self.ifname.items()
            }
            intent = BierIntent(self.bsl_code, self.topo, ports, [])
            self._ctl = BierController(
                intent, {n: TcBierTarget(node, self.net.ns(n)) for n, node in self.nodes.items()}
            )
        return self._ctl

    def install_bifts(self) -> None:
        """Computes every BFR's BIFT and writes it (dinet.services.bier)."""
        self.ctl().install()

    def install_bfir(self, targets: set[str], match: BfirMatch | None = None) -> BfirMatch:
        """The BFIR sends the model-sync UDP destination (or `match`) to `targets` (BFR names)."""
        bits = BSL_BITS[self.bsl_code]
        sets: dict[int, int] = {}
        for name in targets:
            bfr = self.topo.bfr_ids[name]
            assert bfr is not None, f"{name} is not a BFER"
            si, pos = si_bit(bfr, bits)
            bid = bift_id(self.bsl_code, si)
            sets[bid] = sets.get(bid, 0) | 1 << (pos - 1)
        match = match or BfirMatch(SYNC_ADDR, udp_port=SYNC_PORT)
        bfir_id = self.topo.bfr_ids[self.bfir] or 1
        self.nodes[self.bfir].set_bfir(match, bfir_id, self.bsl_code, sets)
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
        sequence number, and the times from the failure to the rewritten BIFTs and to the first datagram
        each BFER received that was sent after the failure."""
        import threading
        import time

        self.install_bfir(targets)
        ctl = self.ctl()
        stop = threading.Event()
        watcher = threading.Thread(target=ctl.watch, args=(watch_interval, stop), daemon=True)
        watcher.start()
        total = int((before_s + after_s) * rate_pps)
        fail_seq, t_fail = -1, 0.0
        arrivals: dict[str, list[tuple[int, float]]] = {n: [] for n in self.sockets}
        try:
            with netns.entered(self.net.ns("src")), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                t0 = time.monotonic()
                for i in range(total):
                    if i == int(before_s * rate_pps):  # the failure's time: when the command is issued
                        fail_seq, t_fail = i, time.monotonic()
                        self.net.sh(fail[0], "ip", "link", "set", "dev", self.ifname[fail], "down")
                    s.sendto(struct.pack("!I", i).ljust(64, b"m"), (str(SYNC_ADDR), SYNC_PORT))
                    for name, sock in self.sockets.items():  # read as we go: timestamps of arrival
                        while True:
                            try:
                                arrivals[name].append((struct.unpack("!I", sock.recv(65535)[:4])[0], time.monotonic()))
                            except BlockingIOError:
                                break
                    pause = t0 + (i + 1) / rate_pps - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
            for name, seqs in self.received({}, timeout=0.5).items():
                arrivals[name] += [(q, time.monotonic()) for q in seqs]
        finally:
            stop.set()
            watcher.join()
        rewrites = [h for h in ctl.history if h.detected_at >= t_fail - watch_interval]
        first_after = {
            n: next(((at - t_fail) * 1000 for q, at in a if q > fail_seq), None) for n, a in arrivals.items()
        }
        return {
            "fail_seq": fail_seq,
            "sent": total,
            "received": {n: sorted(q for q, _ in a) for n, a in arrivals.items()},
            "recompute_ms": (rewrites[0].written_at - t_fail) * 1000 if rewrites else None,
            "entries_rewritten": rewrites[0].entries_written if rewrites else 0,
            "first_packet_ms": first_after,
        }

    # ---- teardown ------------------------------------------------------------------------------------------
    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()
        self.net.close()
        for node in self.nodes.values():
            node.destroy()
        self.nodes.clear()
        root = self.bpffs_root
        if root.exists() and root != BPFFS_ROOT and not any(root.iterdir()):
            os.rmdir(root)
