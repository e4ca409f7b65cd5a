"""BIER in the controller: the domain's topology in, every BFR's BIFT and every BFIR's entries out, written
through whatever programs each node (a local TC node, a node agent). Recomputed when a link goes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError
from ..model import parse_address
from ..packets import BSL_BITS, bift_id, si_bit
from ..policy.bift import BierTopology, check_disjoint, compute_bifts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Port:
    """A node's interface toward a neighbour, and that interface's MAC address."""

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


class BierWriter(Protocol):
    def set_bift(self, bift_id: int, local: int, neighbors: list[tuple[str, str, int]]) -> None: ...
    def set_bfir(
        self, dst: str, bfir_id: int, bsl_code: int, sets: dict[int, int], src: str = "", udp_port: int = 0
    ) -> None: ...


class LocalBierWriter:
    """A TC BierNode on this host (in namespace `netns`), written with interface names like an agent."""

    def __init__(self, node: Any, netns: str | None = None):
        self.node, self.ns = node, netns

    def set_bift(self, bift_id: int, local: int, neighbors: list[tuple[str, str, int]]) -> None:
        from ..targets import netns
        from ..targets.tc import BiftNeighbor

        nbrs = [
            BiftNeighbor(netns.ifindex(i, self.ns), netns.mac_of(i, self.ns), mac, fbm) for i, mac, fbm in neighbors
        ]
        self.node.set_bift(bift_id, local, nbrs, self.ns)

    def set_bfir(
        self, dst: str, bfir_id: int, bsl_code: int, sets: dict[int, int], src: str = "", udp_port: int = 0
    ) -> None:
        from ..targets.tc import BfirMatch

        self.node.set_bfir(
            BfirMatch(parse_address(dst), parse_address(src) if src else None, udp_port), bfir_id, bsl_code, sets
        )

    def stale(self, keep: set[int]) -> None:
        for bid in set(self.node.bifts()) - keep:
            self.node.remove_bift(bid)


class BierController:
    def __init__(self, intent: BierIntent, writers: dict[str, BierWriter]):
        intent.check()
        missing = set(intent.topo.bfr_ids) - set(writers)
        if missing:
            raise ConfigError(f"no node programs BFR(s) {sorted(missing)}")
        self.intent, self.writers = intent, writers

    def install(self) -> int:
        """Writes every BFR's BIFT, then every group's BFIR entries; returns the entries written."""
        i = self.intent
        bifts = compute_bifts(i.topo, i.bsl_code)
        check_disjoint(bifts)
        n = 0
        for name, table in bifts.items():
            w = self.writers[name]
            for entry in table.values():
                nbrs = [(i.ports[(name, nbr)].ifname, i.ports[(nbr, name)].mac, fbm) for nbr, fbm in entry.fbm.items()]
                w.set_bift(entry.bift_id, entry.local, nbrs)
                n += 1
            if hasattr(w, "stale"):
                w.stale({e.bift_id for e in table.values()})
        bits = BSL_BITS[i.bsl_code]
        for g in i.groups:
            sets: dict[int, int] = {}
            for name in g.to:
                si, pos = si_bit(i.topo.bfr_ids[name] or 0, bits)
                bid = bift_id(i.bsl_code, si)
                sets[bid] = sets.get(bid, 0) | 1 << (pos - 1)
            self.writers[g.bfir].set_bfir(g.dst, i.topo.bfr_ids[g.bfir] or 0, i.bsl_code, sets, g.src, g.udp_port)
            n += 1
        return n

    def link_down(self, a: str, b: str) -> int:
        """The link a-b is gone: every BIFT is computed again and written."""
        self.intent.topo = self.intent.topo.without_link(a, b)
        log.warning("BIER link %s-%s down: BIFTs recomputed", a, b)
        return self.install()
