"""BIFT computation (RFC 8279 s6): from a topology of BFRs, each BFR's forwarding table per set.

For every BFR and every BFER it can reach, the next hop on a shortest path (ties broken by the
neighbour's name, so the table is the same on every run and F-BMs of different neighbours never
overlap); a neighbour's F-BM is the OR of the bits of the BFERs it is next hop for (s6.5). A BFR's own
bit is delivered locally. Pure Python: no kernel, no switch.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..rfc8296 import BSL_BITS, bift_id, si_bit


@dataclass(frozen=True)
class BierLink:
    a: str
    b: str
    cost: int = 1


@dataclass
class BierTopology:
    """BFRs by name (with their BFR-id if they are BFERs or BFIRs) and the links between them."""

    bfr_ids: dict[str, int | None] = field(default_factory=dict)
    links: list[BierLink] = field(default_factory=list)

    def add_node(self, name: str, bfr_id: int | None = None) -> None:
        if bfr_id is not None:
            owner = next((n for n, b in self.bfr_ids.items() if b == bfr_id and n != name), None)
            if owner:
                raise ConfigError(f"BFR-id {bfr_id} is already {owner}'s")
        self.bfr_ids[name] = bfr_id

    def add_link(self, a: str, b: str, cost: int = 1) -> None:
        for n in (a, b):
            if n not in self.bfr_ids:
                raise ConfigError(f"link {a}-{b}: no node {n!r}")
        if cost <= 0:
            raise ConfigError(f"link {a}-{b}: cost must be positive, not {cost}")
        self.links.append(BierLink(a, b, cost))

    def without_link(self, a: str, b: str) -> BierTopology:
        return BierTopology(dict(self.bfr_ids), [k for k in self.links if {k.a, k.b} != {a, b}])

    def without_node(self, n: str) -> BierTopology:
        return BierTopology(
            {k: v for k, v in self.bfr_ids.items() if k != n}, [k for k in self.links if n not in (k.a, k.b)]
        )

    def neighbors(self) -> dict[str, dict[str, int]]:
        adj: dict[str, dict[str, int]] = defaultdict(dict)
        for link in self.links:
            for x, y in ((link.a, link.b), (link.b, link.a)):
                adj[x][y] = min(link.cost, adj[x].get(y, link.cost))
        return adj


@dataclass(frozen=True)
class BiftSet:
    """One BFR's forwarding entry for one (BSL, SD, SI): F-BM per neighbour, and its own bits."""

    bift_id: int
    si: int
    fbm: dict[str, int]  # neighbour -> F-BM (bit i-1 = BFR-id si*BSL + i)
    local: int


def next_hops(topo: BierTopology, src: str) -> dict[str, str]:
    """BFR -> the neighbour of src on its shortest path (ties: the smallest neighbour name)."""
    adj = topo.neighbors()
    best: dict[str, tuple[int, str]] = {}
    heap: list[tuple[int, str, str]] = [(cost, nbr, nbr) for nbr, cost in adj.get(src, {}).items()]
    heapq.heapify(heap)
    while heap:
        dist, first, node = heapq.heappop(heap)
        if node in best or node == src:
            continue
        best[node] = (dist, first)
        for nxt, cost in adj.get(node, {}).items():
            if nxt not in best:
                heapq.heappush(heap, (dist + cost, first, nxt))
    return {n: first for n, (_, first) in best.items()}


def compute_bifts(topo: BierTopology, bsl_code: int, sd: int = 0) -> dict[str, dict[int, BiftSet]]:
    """Every BFR's BIFT: name -> SI -> BiftSet, for every set that holds a BFER."""
    bits = BSL_BITS[bsl_code]
    sets = sorted({si_bit(b, bits)[0] for b in topo.bfr_ids.values() if b is not None})
    out: dict[str, dict[int, BiftSet]] = {}
    for node, own in topo.bfr_ids.items():
        hops = next_hops(topo, node)
        table: dict[int, BiftSet] = {}
        for si in sets:
            fbm: dict[str, int] = defaultdict(int)
            for dest, bfr in topo.bfr_ids.items():
                if bfr is None or dest == node or dest not in hops:
                    continue
                s, pos = si_bit(bfr, bits)
                if s == si:
                    fbm[hops[dest]] |= 1 << (pos - 1)
            local = 0
            if own is not None:
                s, pos = si_bit(own, bits)
                if s == si:
                    local = 1 << (pos - 1)
            table[si] = BiftSet(bift_id(bsl_code, si, sd), si, dict(sorted(fbm.items())), local)
        out[node] = table
    return out


def check_disjoint(bifts: dict[str, dict[int, BiftSet]]) -> None:
    """Raises if any BFR's F-BMs overlap (a packet would be duplicated)."""
    for node, table in bifts.items():
        for si, entry in table.items():
            seen = entry.local
            for nbr, m in entry.fbm.items():
                if m & seen:
                    raise ConfigError(f"{node} SI {si}: F-BM of {nbr} overlaps another ({m & seen:#x})")
                seen |= m


@dataclass(frozen=True)
class Copy:
    """A copy crossing the link frm -> to, carrying `mask` (RFC 8279 s6.5) and `ttl` (RFC 8296)."""

    frm: str
    to: str
    mask: int
    ttl: int


def walk(
    bifts: dict[str, dict[int, BiftSet]], bfir: str, si: int, mask: int, ttl: int = 64
) -> tuple[list[Copy], set[str]]:
    """The copies RFC 8279's forwarding procedure makes for a packet entering at `bfir` with `mask`, and the
    BFRs that deliver it locally. What the data planes must do, and what bench/ counts bytes with."""
    copies: list[Copy] = []
    delivered: set[str] = set()
    todo = [(bfir, mask, ttl, True)]
    while todo:
        node, bits, t, at_bfir = todo.pop()
        entry = bifts[node].get(si)
        if entry is None:
            continue
        if bits & entry.local and not at_bfir:
            delivered.add(node)
        rem = bits & ~entry.local
        out_ttl = t if at_bfir else t - 1
        if not rem or (not at_bfir and t <= 1):
            continue
        for nbr, fbm in entry.fbm.items():
            if rem & fbm:
                copies.append(Copy(node, nbr, rem & fbm, out_ttl))
                todo.append((nbr, rem & fbm, out_ttl, False))
                rem &= ~fbm
    return copies, delivered


# ---- the domain's intent and the entries it asks of every node ----------------------------------------


@dataclass(frozen=True)
class Port:
    """A node's port toward a neighbour (an interface name on Linux, a port number on a switch) and its MAC."""

    ifname: str
    mac: str


@dataclass(frozen=True)
class BierGroup:
    """Traffic the BFIR `bfir` sends to the BFERs `to`: (S,G) with src, (*,G), or (*, dst, UDP port)."""

    bfir: str
    dst: str
    to: frozenset[str]
    src: str = ""
    udp_port: int = 0


@dataclass
class BierIntent:
    bsl_code: int
    topo: BierTopology
    ports: dict[tuple[str, str], Port]  # (node, neighbour) -> the node's port toward the neighbour
    groups: list[BierGroup] = field(default_factory=list)

    def check(self) -> None:
        for link in self.topo.links:
            for x, y in ((link.a, link.b), (link.b, link.a)):
                if (x, y) not in self.ports:
                    raise ConfigError(f"BIER link {link.a}-{link.b}: no port of {x} toward {y}")
        for g in self.groups:
            for n in (g.bfir, *g.to):
                if n not in self.topo.bfr_ids:
                    raise ConfigError(f"BIER group {g.dst}: no BFR {n!r}")
            if self.topo.bfr_ids.get(g.bfir) is None:
                raise ConfigError(f"BIER group {g.dst}: the BFIR {g.bfir} has no BFR-id")
            for n in g.to:
                if self.topo.bfr_ids[n] is None:
                    raise ConfigError(f"BIER group {g.dst}: {n} has no BFR-id, so it cannot receive")


@dataclass(frozen=True)
class BiftPort:
    """One neighbour in a BIFT entry: the node's port toward it (an interface name on Linux, a port number on
    a switch), the neighbour's MAC (dmac), the F-BM of the neighbour (RFC 8279 s6.1), and the port's own MAC
    (smac; a Linux target may read it from the interface)."""

    port: str
    dmac: str
    fbm: int
    smac: str = ""


@dataclass(frozen=True)
class BiftEntry:
    """A BFR's entry for one BIFT-id (BSL, SD and SI): its own bits (local delivery) and its neighbours."""

    bift_id: int
    local: int
    neighbors: tuple[BiftPort, ...]


@dataclass(frozen=True)
class BfirEntry:
    """Traffic a BFIR encapsulates: (S,G) with src, (*,G), or (*, dst, UDP port) with udp_port; `sets` maps
    each BIFT-id (one per SI) to the bitstring sent in it."""

    dst: str
    bfir_id: int
    bsl_code: int
    sets: tuple[tuple[int, int], ...]
    src: str = ""
    udp_port: int = 0

    @property
    def match(self) -> tuple[str, str, int]:
        return (self.dst, self.src, self.udp_port)


@dataclass
class NodePlan:
    """What one BFR must hold: its BIFT entries by BIFT-id and its BFIR entries by match."""

    bifts: dict[int, BiftEntry] = field(default_factory=dict)
    bfirs: dict[tuple[str, str, int], BfirEntry] = field(default_factory=dict)


def bfir_sets(bfr_ids: Iterable[int], bsl_code: int, sd: int = 0) -> dict[int, int]:
    """BIFT-id -> the bitstring (an integer) naming the given BFR-ids in that set: one per SI that holds
    one of them (RFC 8279 s3: a destination set spanning several sets is sent once per set). The one place
    BFR-ids become a BFIR's bitstrings (the controller, the CLI, the lab)."""
    bits = BSL_BITS[bsl_code]
    sets: dict[int, int] = {}
    for bfr in bfr_ids:
        si, pos = si_bit(bfr, bits)
        bid = bift_id(bsl_code, si, sd)
        sets[bid] = sets.get(bid, 0) | 1 << (pos - 1)
    return sets


def group_sets(intent: BierIntent, to: frozenset[str] | set[str]) -> tuple[tuple[int, int], ...]:
    """The bitstrings, per BIFT-id (one per SI), that name the BFERs `to`."""
    return tuple(sorted(bfir_sets((intent.topo.bfr_ids[name] or 0 for name in to), intent.bsl_code).items()))


def plan_domain(
    intent: BierIntent, down_links: set[frozenset[str]] | None = None, down_nodes: set[str] | None = None
) -> dict[str, NodePlan]:
    """Every live BFR's entries, for the topology without the failed links and nodes: BIFTs from shortest
    paths (RFC 8279 s6), checked disjoint, and every group's BFIR entry (the bitstring of all its BFERs:
    a BFER that cannot be reached is simply not forwarded to, and is there again when it returns)."""
    topo = intent.topo
    for n in sorted(down_nodes or ()):
        topo = topo.without_node(n)
    for link in sorted(down_links or (), key=sorted):
        a, b = sorted(link)
        topo = topo.without_link(a, b)
    bifts = compute_bifts(topo, intent.bsl_code)
    check_disjoint(bifts)
    plans: dict[str, NodePlan] = {}
    for name, table in bifts.items():
        plan = plans.setdefault(name, NodePlan())
        for entry in table.values():
            nbrs = tuple(
                BiftPort(
                    intent.ports[(name, nbr)].ifname, intent.ports[(nbr, name)].mac, fbm, intent.ports[(name, nbr)].mac
                )
                for nbr, fbm in entry.fbm.items()
            )
            plan.bifts[entry.bift_id] = BiftEntry(entry.bift_id, entry.local, nbrs)
    for g in intent.groups:
        if g.bfir not in plans:
            continue
        e = BfirEntry(
            g.dst, intent.topo.bfr_ids[g.bfir] or 0, intent.bsl_code, group_sets(intent, g.to), g.src, g.udp_port
        )
        plans[g.bfir].bfirs[e.match] = e
    return plans
