"""The BIER target on Linux hosts: ebpf/bier.bpf.c at TC ingress, its maps pinned under
BPFFS_ROOT/<node>/bier. Writes BIFT and BFIR entries, reads them and the counters back."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import consts
from ..errors import ConfigError, DataPlaneError, TableFullError
from ..model import IPAddress, parse_address
from ..paths import BPFFS_ROOT
from ..policy.bift import BfirEntry, BiftEntry, BiftPort
from ..rfc8296 import bitstring_bytes, split_bift_id
from .base import TreeHopPort, TreeReplicaPort, TreeRoot
from .bcc_program import BccProgram, ProgramNode, update
from .netns import LinkEvents, PortMonitor, links_up

log = logging.getLogger(__name__)
C = consts.load()
MAX_NBR = C["BIER_MAX_NEIGHBORS"]
MAX_SETS = C["BIER_MAX_SI_PER_GROUP"]
FRR_SHIFT = C["BIER_FRR_KEY_SHIFT"]
FRR_MASK = (1 << FRR_SHIFT) - 1
MAX_REPLICAS = C["TREE_MAX_REPLICAS"]
BPF_XDP_DEVMAP = 33  # enum bpf_attach_type: a devmap's per-port program
#: BSL codes the TC program forwards (RFC 8296 s2.1.2: 1 = 64, 2 = 128, 3 = 256 bits)
SUPPORTED_BSL = (C["BIER_BSL_64"], C["BIER_BSL_128"], C["BIER_BSL_256"])


def _supported(bsl_code: int) -> None:
    if bsl_code not in SUPPORTED_BSL:
        raise ConfigError(f"this data plane forwards BSL 64, 128 and 256 bits (codes 1-3), not code {bsl_code}")


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ConfigError(f"not a MAC address: {text!r}")
    return raw


def _fmt_mac(raw: Any) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def _put_bits(dst: Any, mask: int, bsl_code: int) -> None:
    n = bitstring_bytes(bsl_code)
    if mask >> (n * 8):
        raise ConfigError(f"bit mask {mask:#x} does not fit a {n * 8}-bit bitstring")
    ctypes.memmove(ctypes.addressof(dst), mask.to_bytes(n, "big").ljust(ctypes.sizeof(dst), b"\0"), ctypes.sizeof(dst))


def _get_bits(src: Any, bsl_code: int) -> int:
    return int.from_bytes(bytes(src)[: bitstring_bytes(bsl_code)], "big")


@dataclass(frozen=True)
class BiftNeighbor:
    """Where copies for `fbm` go: out of ifindex, from smac to dmac."""

    ifindex: int
    smac: str
    dmac: str
    fbm: int


@dataclass(frozen=True)
class BiftReadback:
    bift_id: int
    local: int
    neighbors: tuple[BiftNeighbor, ...]


@dataclass(frozen=True)
class TreeReplica:
    """One replica of an SR-P2MP replication segment: the downstream replication node's node SID and
    replication SID (its two labels), sent out of ifindex from smac to dmac (the first hop toward it)."""

    node_sid: int
    rep_sid: int
    ifindex: int
    smac: str
    dmac: str


@dataclass(frozen=True)
class TreeHop:
    """How a node forwards a frame whose top label is a node SID: out of ifindex toward it, or (local: the
    node's own SID) to its replication segments."""

    ifindex: int = 0
    smac: str = "00:00:00:00:00:00"
    dmac: str = "00:00:00:00:00:00"
    local: bool = False


def _label(value: int, what: str) -> int:
    if not 0 <= value < 1 << 20:
        raise ConfigError(f"{what} must be an MPLS label (0..{(1 << 20) - 1}), not {value}")
    return value


@dataclass(frozen=True)
class BfirMatch:
    """Traffic a BFIR encapsulates: (S,G) with src, (*,G) without, or (*, dst, UDP port) for model sync."""

    dst: IPAddress
    src: IPAddress | None = None
    udp_port: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dst", parse_address(self.dst))
        if self.src is not None:
            object.__setattr__(self, "src", parse_address(self.src))
            if self.src.version != self.dst.version:
                raise ConfigError(f"source {self.src} and destination {self.dst} are of different families")
            if self.udp_port:
                raise ConfigError("a match has a source (S,G) or a UDP port (model sync), not both")
        if not 0 <= self.udp_port <= 65535:
            raise ConfigError(f"UDP port must be 0-65535, not {self.udp_port}")

    def __str__(self) -> str:
        if self.udp_port:
            return f"(*, {self.dst}, udp {self.udp_port})"
        return f"({self.src or '*'}, {self.dst})"


class BierNode(ProgramNode):
    """The BIER program of one BFR and its pinned maps."""

    PROGRAM = "tc_bier"
    PROG_TYPE = "sched_cls"

    def __init__(self, node: str = "default", bpffs_root: Path = BPFFS_ROOT, bench: bool = False):
        # bench: with ebpf/bench_bier.bpf.c's wrappers (bench/ only)
        super().__init__(
            node,
            BccProgram(
                "bier.bpf.c",
                bpffs_root / node / "bier",
                {"DINET_BIER_NO_ENTRY": 1} if bench else None,
                after=["bench_bier.bpf.c"] if bench else [],
            ),
        )
        t = self.prog.table
        self.bift_t, self.bfir_t, self.counters_t, self.if_tx_t = t("bift"), t("bfir"), t("bier_counters"), t("if_tx")
        self.ports_t, self.cfg_t = t("bier_ports"), t("bier_cfg")
        self.down_t = t("bier_port_down")
        self.seg_t, self.tnode_t, self.troot_t = t("tree_segment"), t("tree_node"), t("tree_root")
        self.netns: str | None = None  # where the node's interfaces are (set by attach)
        self._port_fn: Any = None
        self._monitor: PortMonitor | None = None
        self.ports: set[int] = set()  # the ifindexes the program is attached to (the ports the monitor watches)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        super().close()

    def attach(self, ifname: str, netns: str | None = None, xdp: bool = True) -> None:
        """tc_bier at ifname's ingress, and (xdp) the XDP fast path for transit frames in front of it."""
        self.netns = netns
        self.prog.attach_tc_ingress(self.PROGRAM, ifname, netns)
        if xdp:
            self.prog.attach("xdp_bier", ifname, netns, "native")
        from . import netns as ns_mod

        self.watch_ports({ns_mod.ifindex(ifname, netns)}, netns)

    def watch_ports(self, ifindexes: set[int], netns: str | None) -> None:
        """The node's link monitor (fast reroute) watches these ports too; started with the first."""
        new = ifindexes - self.ports
        self.ports |= ifindexes
        if self._monitor is None or self._monitor.netns != netns:
            if self._monitor is not None:
                self._monitor.stop()
            self._monitor = PortMonitor(self.node, netns, self.mark_port)
        elif new:
            self._monitor.seed()

    def mark_port(self, ifindex: int, down: bool) -> None:
        """The link monitor's word on one of the node's ports: bier_port_down holds it (with the time)."""
        if ifindex not in self.ports:
            return
        t, cfg = self.down_t, self.cfg_t
        # the programs look at the ports only while cfg[1] says one is down: it counts a port before its mark
        # is written and after its mark is gone, so whoever sees a mark sees the programs reading it
        try:
            if down:
                if t.Key(ifindex) not in t:
                    cfg[cfg.Key(1)] = cfg.Leaf(len(t) + 1)
                    t[t.Key(ifindex)] = t.Leaf(time.monotonic_ns())
            else:
                del t[t.Key(ifindex)]
        except KeyError:
            pass
        except Exception as e:  # bcc raises a bare Exception (a full map)
            log.warning("node %s: cannot mark port %d %s: %s", self.node, ifindex, "down" if down else "up", e)
        cfg[cfg.Key(1)] = cfg.Leaf(len(t))

    def detach(self, ifname: str, netns: str | None = None) -> None:
        self.prog.detach_tc(ifname, netns)
        self.prog.detach(ifname, netns)

    def set_xdp_min_fanout(self, n: int) -> None:
        """The smallest number of copies a transit frame needs to take the XDP fast path (1: every transit
        frame; 0: the default, BIER_XDP_MIN_FANOUT)."""
        if not 0 <= n <= MAX_NBR + 1:
            raise ConfigError(f"the XDP fan-out threshold is 0..{MAX_NBR + 1}, not {n}")
        self.cfg_t[self.cfg_t.Key(0)] = self.cfg_t.Leaf(n)

    def _ensure_ports(self, ifindexes: set[int], netns: str | None) -> None:
        """Every neighbour's port in bier_ports (the XDP fast path's broadcast set), with xdp_bier_port."""
        from bcc import BPF

        from . import netns as ns_mod

        slots: dict[int, int] = {}  # slot -> ifindex; an empty devmap slot reads as missing
        for i in range(self.ports_t.max_entries):
            try:
                slots[i] = int(self.ports_t[self.ports_t.Key(i)].ifindex)
            except KeyError:
                slots[i] = 0
        missing = sorted(ifindexes - set(slots.values()))
        if not missing:
            return
        if self._port_fn is None:
            self._port_fn = self.prog.bpf.load_func(b"xdp_bier_port", BPF.XDP, None, BPF_XDP_DEVMAP)
        free = [i for i, ifindex in slots.items() if not ifindex]
        if len(free) < len(missing):
            raise TableFullError(f"node {self.node!r}: no room for {len(missing)} more BIER ports")
        with ns_mod.entered(netns):  # the kernel resolves a devmap's ifindex in the writer's namespace
            for slot, ifindex in zip(free, missing, strict=False):
                v = self.ports_t.Leaf()
                v.ifindex = ifindex
                v.bpf_prog.fd = self._port_fn.fd
                try:
                    self.ports_t[self.ports_t.Key(slot)] = v
                except Exception as e:  # bcc raises a bare Exception
                    where = f" in namespace {netns}" if netns else ""
                    raise DataPlaneError(
                        f"node {self.node!r}: cannot add port {ifindex}{where} to the XDP fast path: {e}"
                    ) from None

    # ---- BIFT ------------------------------------------------------------------------------------------
    def set_bift(
        self, bift_id: int, local: int, neighbors: list[BiftNeighbor], netns: str | None = None, down_slot: int = -1
    ) -> None:
        """Installs (or replaces, in one write) this BFR's entry for a BIFT-id; ifindexes are those of the
        node's namespace (`netns`, else where it was attached). down_slot=i: instead, the entry to use while
        the port of the BIFT-id's neighbour i is down (fast reroute)."""
        if bift_id >> FRR_SHIFT:
            raise ConfigError(f"a BIFT-id has 20 bits, not {bift_id:#x}")
        if not -1 <= down_slot < MAX_NBR:
            raise ConfigError(f"a neighbour slot is 0..{MAX_NBR - 1}, not {down_slot}")
        key = (down_slot + 1) << FRR_SHIFT | bift_id
        bsl, _, _ = split_bift_id(bift_id)
        _supported(bsl)
        if len(neighbors) > MAX_NBR:
            raise TableFullError(f"BIFT-id {bift_id:#x} has {len(neighbors)} neighbours; at most {MAX_NBR}")
        v = self.bift_t.Leaf()
        _put_bits(v.local, local, bsl)
        v.n_nbr = len(neighbors)
        for i, n in enumerate(neighbors):
            e = v.nbr[i]
            _put_bits(e.fbm, n.fbm, bsl)
            e.ifindex = n.ifindex
            e.smac[:] = list(_mac(n.smac))
            e.dmac[:] = list(_mac(n.dmac))
        what = f"BIFT-id {bift_id:#x}" + (f" while neighbour {down_slot}'s port is down" if down_slot >= 0 else "")
        update(self.bift_t, self.bift_t.Key(key), v, what)
        self._ensure_ports({n.ifindex for n in neighbors}, netns if netns is not None else self.netns)

    def remove_bift(self, bift_id: int, down_slot: int = -1) -> None:
        try:
            del self.bift_t[self.bift_t.Key((down_slot + 1) << FRR_SHIFT | bift_id)]
        except KeyError:
            what = f" for neighbour {down_slot}'s port down" if down_slot >= 0 else ""
            raise ConfigError(f"node {self.node!r} has no BIFT-id {bift_id:#x}{what}") from None

    # ---- fast reroute --------------------------------------------------------------------------------------
    def frr_entries(self) -> dict[tuple[int, int], BiftReadback]:
        """(BIFT-id, neighbour slot) -> the entry used while that neighbour's port is down."""
        return {(bid & FRR_MASK, (bid >> FRR_SHIFT) - 1): e for bid, e in self._entries().items() if bid >> FRR_SHIFT}

    def ports_down(self) -> dict[int, int]:
        """ifindex -> when it went down (CLOCK_MONOTONIC ns), as the program sees it."""
        return {int(k.value): int(v.value) for k, v in self.down_t.items()}

    def bifts(self) -> dict[int, BiftReadback]:
        return {bid: e for bid, e in self._entries().items() if not bid >> FRR_SHIFT}

    def _entries(self) -> dict[int, BiftReadback]:
        out = {}
        for k, v in self.bift_t.items():
            bsl, _, _ = split_bift_id(k.value & FRR_MASK)
            nbrs = tuple(
                BiftNeighbor(int(n.ifindex), _fmt_mac(n.smac), _fmt_mac(n.dmac), _get_bits(n.fbm, bsl))
                for n in list(v.nbr)[: v.n_nbr]
            )
            out[int(k.value)] = BiftReadback(int(k.value) & FRR_MASK, _get_bits(v.local, bsl), nbrs)
        return dict(sorted(out.items()))

    # ---- BFIR ------------------------------------------------------------------------------------------
    def _bfir_key(self, m: BfirMatch) -> Any:
        k = self.bfir_t.Key()
        fam = socket.AF_INET if m.dst.version == 4 else socket.AF_INET6
        raw_dst = m.dst.packed.ljust(16, b"\0")
        ctypes.memmove(ctypes.addressof(k.dst), raw_dst, 16)
        if m.src is not None:
            ctypes.memmove(ctypes.addressof(k.src), m.src.packed.ljust(16, b"\0"), 16)
        k.family = C["DINET_AF_INET"] if fam == socket.AF_INET else C["DINET_AF_INET6"]
        if m.udp_port:
            k.dport = socket.htons(m.udp_port)
            k.proto = C["DINET_IPPROTO_UDP"]
        return k

    def set_bfir(self, match: BfirMatch, bfir_id: int, bsl_code: int, sets: dict[int, int]) -> None:
        """Traffic matching `match` is sent to the BFERs of `sets` (BIFT-id -> bit mask)."""
        _supported(bsl_code)
        if not sets:
            raise ConfigError(f"{match}: no set to send to")
        if len(sets) > MAX_SETS:
            raise TableFullError(f"{match} spans {len(sets)} sets; a BFIR entry holds at most {MAX_SETS}")
        if not 1 <= bfir_id <= 0xFFFF:
            raise ConfigError(f"BFIR-id must be 1..65535, not {bfir_id}")
        v = self.bfir_t.Leaf()
        v.n_sets, v.bfir_id, v.bsl = len(sets), bfir_id, bsl_code
        for i, (bid, mask) in enumerate(sorted(sets.items())):
            if split_bift_id(bid)[0] != bsl_code:
                raise ConfigError(f"BIFT-id {bid:#x} is not of BSL code {bsl_code}")
            if not mask:
                raise ConfigError(f"{match}: empty bitstring for BIFT-id {bid:#x}")
            v.sets[i].bift_id = bid
            _put_bits(v.sets[i].bits, mask, bsl_code)
        update(self.bfir_t, self._bfir_key(match), v, f"BFIR entry {match}")

    def remove_bfir(self, match: BfirMatch) -> None:
        try:
            del self.bfir_t[self._bfir_key(match)]
        except KeyError:
            raise ConfigError(f"node {self.node!r} has no BFIR entry {match}") from None

    @staticmethod
    def _match_of(k: Any) -> BfirMatch:
        n = 4 if k.family == C["DINET_AF_INET"] else 16
        src = bytes(k.src)[:n]
        return BfirMatch(
            ipaddress.ip_address(bytes(k.dst)[:n]),
            ipaddress.ip_address(src) if any(src) else None,
            socket.ntohs(k.dport),
        )

    def bfir_entries(self) -> dict[BfirMatch, dict[int, int]]:
        return {
            self._match_of(k): {int(s.bift_id): _get_bits(s.bits, v.bsl) for s in list(v.sets)[: v.n_sets]}
            for k, v in self.bfir_t.items()
        }

    # ---- SR-P2MP trees (the baseline) ---------------------------------------------------------------------
    def set_tree_segment(self, rep_sid: int, replicas: list[TreeReplica], local: bool) -> None:
        """This node's replication segment of one tree (replication SID rep_sid), in one write."""
        _label(rep_sid, "a replication SID")
        if len(replicas) > MAX_REPLICAS:
            raise TableFullError(f"replication SID {rep_sid}: {len(replicas)} replicas; at most {MAX_REPLICAS}")
        v = self.seg_t.Leaf()
        v.n, v.local = len(replicas), int(local)
        for i, r in enumerate(replicas):
            e = v.r[i]
            e.node_sid, e.rep_sid = _label(r.node_sid, "a node SID"), _label(r.rep_sid, "a replication SID")
            e.ifindex = r.ifindex
            e.smac[:] = list(_mac(r.smac))
            e.dmac[:] = list(_mac(r.dmac))
        update(self.seg_t, self.seg_t.Key(rep_sid), v, f"replication segment {rep_sid}")

    def remove_tree_segment(self, rep_sid: int) -> None:
        try:
            del self.seg_t[self.seg_t.Key(rep_sid)]
        except KeyError:
            raise ConfigError(f"node {self.node!r} has no replication segment {rep_sid}") from None

    def tree_segments(self) -> dict[int, tuple[tuple[TreeReplica, ...], bool]]:
        """Replication SID -> (replicas, leaf), as the program holds them."""
        out = {}
        for k, v in self.seg_t.items():
            reps = tuple(
                TreeReplica(int(r.node_sid), int(r.rep_sid), int(r.ifindex), _fmt_mac(r.smac), _fmt_mac(r.dmac))
                for r in list(v.r)[: v.n]
            )
            out[int(k.value)] = (reps, bool(v.local))
        return dict(sorted(out.items()))

    def set_tree_node(self, node_sid: int, hop: TreeHop) -> None:
        """How this node forwards frames whose top label is node_sid (its own: hop.local)."""
        _label(node_sid, "a node SID")
        v = self.tnode_t.Leaf()
        v.ifindex, v.local = hop.ifindex, int(hop.local)
        v.smac[:] = list(_mac(hop.smac))
        v.dmac[:] = list(_mac(hop.dmac))
        update(self.tnode_t, self.tnode_t.Key(node_sid), v, f"node SID {node_sid}")

    def remove_tree_node(self, node_sid: int) -> None:
        try:
            del self.tnode_t[self.tnode_t.Key(node_sid)]
        except KeyError:
            raise ConfigError(f"node {self.node!r} has no route for node SID {node_sid}") from None

    def tree_nodes(self) -> dict[int, TreeHop]:
        out = {
            int(k.value): TreeHop(int(v.ifindex), _fmt_mac(v.smac), _fmt_mac(v.dmac), bool(v.local))
            for k, v in self.tnode_t.items()
        }
        return dict(sorted(out.items()))

    def set_tree_root(self, match: BfirMatch, rep_sid: int) -> None:
        """Traffic matching `match` is put on the tree whose root segment here is rep_sid (when no BIER
        BFIR entry takes it first)."""
        v = self.troot_t.Leaf()
        v.rep_sid = _label(rep_sid, "a replication SID")
        update(self.troot_t, self._bfir_key(match), v, f"tree root {match}")

    def remove_tree_root(self, match: BfirMatch) -> None:
        try:
            del self.troot_t[self._bfir_key(match)]
        except KeyError:
            raise ConfigError(f"node {self.node!r} is no tree root for {match}") from None

    def tree_roots(self) -> dict[BfirMatch, int]:
        return {self._match_of(k): int(v.rep_sid) for k, v in self.troot_t.items()}

    # ---- counters --------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        names = {
            v: k.removeprefix("BIER_EV_").removeprefix("BIER_").lower()
            for k, v in C.items()
            if k.startswith(("BIER_EV_", "BIER_DROP_"))
        }
        return {name: int(sum(self.counters_t.getvalue(self.counters_t.Key(i)))) for i, name in sorted(names.items())}

    def tx_copies(self) -> dict[int, int]:
        """Egress ifindex -> copies sent out of it."""
        return {int(k.value): int(sum(v)) for k, v in self.if_tx_t.items()}


class TcBierTarget:
    """The BierTarget of a TC BierNode on this host (in namespace `netns`): ports are interface names."""

    fast_reroute = True

    def __init__(self, node: BierNode, netns: str | None = None):
        self.node, self.ns = node, netns
        self._events = LinkEvents(netns)

    def set_bift(self, entry: BiftEntry) -> None:
        from . import netns as ns_mod

        def nbr(p: BiftPort) -> BiftNeighbor:
            return BiftNeighbor(
                ns_mod.ifindex(p.port, self.ns), p.smac or ns_mod.mac_of(p.port, self.ns), p.dmac, p.fbm
            )

        # the fast-reroute entries first: a port that goes down between the writes finds its backup there
        slot = {p.port: i for i, p in enumerate(entry.neighbors)}
        keep = set()
        for b in entry.backups:
            self.node.set_bift(entry.bift_id, entry.local, [nbr(p) for p in b.neighbors], self.ns, slot[b.port])
            keep.add(slot[b.port])
        primary = [nbr(p) for p in entry.neighbors]
        self.node.set_bift(entry.bift_id, entry.local, primary, self.ns)
        self._drop_frr(entry.bift_id, keep)
        if entry.backups:  # the ports whose loss the data plane must see at once
            self.node.watch_ports({n.ifindex for n in primary}, self.ns if self.ns is not None else self.node.netns)

    def _drop_frr(self, bift_id: int, keep: set[int]) -> None:
        for bid, i in self.node.frr_entries():
            if bid == bift_id and i not in keep:
                self.node.remove_bift(bid, i)

    def remove_bift(self, bift_id: int) -> None:
        self.node.remove_bift(bift_id)
        self._drop_frr(bift_id, set())

    @staticmethod
    def _match(e: BfirEntry | TreeRoot) -> BfirMatch:  # a BFIR's and a tree root's matches are alike
        return BfirMatch(parse_address(e.dst), parse_address(e.src) if e.src else None, e.udp_port)

    def set_bfir(self, entry: BfirEntry) -> None:
        self.node.set_bfir(self._match(entry), entry.bfir_id, entry.bsl_code, dict(entry.sets))

    def remove_bfir(self, entry: BfirEntry) -> None:
        self.node.remove_bfir(self._match(entry))

    # ---- TreeTarget: the SR-P2MP baseline on the same program --------------------------------------------
    def _hop(self, h: TreeHopPort) -> tuple[int, str, str]:
        from . import netns as ns_mod

        return ns_mod.ifindex(h.port, self.ns), h.smac or ns_mod.mac_of(h.port, self.ns), h.dmac

    def set_tree_node(self, node_sid: int, hop: TreeHopPort | None) -> None:
        self.node.set_tree_node(node_sid, TreeHop(local=True) if hop is None else TreeHop(*self._hop(hop)))

    def set_tree_segment(self, rep_sid: int, replicas: list[TreeReplicaPort], leaf: bool) -> None:
        reps = [TreeReplica(r.node_sid, r.rep_sid, *self._hop(r.hop)) for r in replicas]
        self.node.set_tree_segment(rep_sid, reps, leaf)

    def remove_tree_node(self, node_sid: int) -> None:
        self.node.remove_tree_node(node_sid)

    def remove_tree_segment(self, rep_sid: int) -> None:
        self.node.remove_tree_segment(rep_sid)

    def set_tree_root(self, root: TreeRoot) -> None:
        self.node.set_tree_root(self._match(root), root.rep_sid)

    def remove_tree_root(self, root: TreeRoot) -> None:
        self.node.remove_tree_root(self._match(root))

    def ports_up(self, ports: list[str]) -> dict[str, bool]:
        return links_up(ports, self.ns)

    def watch_links(self, wake: threading.Event) -> None:
        """Sets `wake` whenever an interface of the node's namespace changes, so a failure is seen at once."""
        self._events.start(wake)

    def unwatch_links(self) -> None:
        self._events.stop()

    def close(self) -> None:
        self.unwatch_links()
        self.node.close()
