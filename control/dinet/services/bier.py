"""BIER in the controller: the domain's intent in, every BFR's BIFT and every BFIR's entries out, through each
node's BierTarget (a local TC node, a node agent, a P4Runtime switch).

It plans from its own record of what each node holds: a failed link or BFR (or one that returns) makes it
plan the domain again (dinet.policy.bift.DomainPlanner: incrementally, only the BFRs the change touches) and
write only the entries that changed. With BIER there is no tree to rebuild: the BFIR's bitstrings stay as
they are; only the BFRs whose shortest paths crossed the failure get other F-BMs. A node that does not
answer loses its record, and is written whole when it is back.

Fast reroute (intent.frr): every BIFT entry carries, per neighbour, the entry to use while the port toward
it is down (its BFERs moved to loop-free alternates); the node's data plane swaps to it as soon as its link
monitor sees the port go, and this controller's rewrite then makes the new primary paths."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from ..errors import DataPlaneError, DinetError, InterfaceError
from ..policy.bift import BierGroup, BierIntent, DomainPlanner, NodePlan, next_hops
from ..targets.base import BierTarget

log = logging.getLogger(__name__)


@dataclass
class Reconvergence:
    """One change of the domain's state, and what it took."""

    down_links: set[frozenset[str]]
    down_nodes: set[str]
    detected_at: float  # monotonic seconds
    written_at: float
    entries_written: int


def _key(g: BierGroup) -> tuple[str, str, str, int]:
    return (g.bfir, g.dst, g.src, g.udp_port)


@dataclass
class BierController:
    intent: BierIntent
    targets: dict[str, BierTarget]
    record: dict[str, NodePlan] = field(default_factory=dict)  # what each node holds, as written
    down_links: set[frozenset[str]] = field(default_factory=set)
    down_nodes: set[str] = field(default_factory=set)
    writes: int = 0
    history: list[Reconvergence] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _planner: DomainPlanner | None = None

    def __post_init__(self) -> None:
        self.intent.check()
        missing = set(self.intent.topo.bfr_ids) - set(self.targets)
        if missing:
            raise DinetError(f"no node programs BFR(s) {sorted(missing)}")

    def install(self) -> int:
        """Writes what differs from the record on every live node; returns the entries written."""
        with self._lock:
            if self._planner is None:
                self._planner = DomainPlanner(self.intent)
            plans = self._planner.plan(self.down_links, self.down_nodes)
            n = 0
            for name, plan in plans.items():
                try:
                    n += self._apply(name, plan)
                except DataPlaneError as e:
                    log.warning("BIER node %s: %s; written again once it answers", name, e)
                    self.record.pop(name, None)
            self.writes += n
            return n

    def _apply(self, name: str, plan: NodePlan) -> int:
        t = self.targets[name]
        if not getattr(t, "fast_reroute", False):  # written, and recorded, without the backups it cannot use
            plan = NodePlan({bid: replace(e, backups=()) for bid, e in plan.bifts.items()}, plan.bfirs)
        old = self.record.get(name)
        have = old or NodePlan()
        n = 0
        # new and changed entries first, so a packet always finds a path; stale ones after
        for bid, entry in plan.bifts.items():
            if old is None or have.bifts.get(bid) != entry:
                t.set_bift(entry)
                n += 1
        for key, bfir in plan.bfirs.items():
            if old is None or have.bfirs.get(key) != bfir:
                t.set_bfir(bfir)
                n += 1
        for bid in set(have.bifts) - set(plan.bifts):
            t.remove_bift(bid)
            n += 1
        for key in set(have.bfirs) - set(plan.bfirs):
            t.remove_bfir(have.bfirs[key])
            n += 1
        self.record[name] = plan
        return n

    def set_state(self, down_links: set[frozenset[str]], down_nodes: set[str], detected_at: float | None = None) -> int:
        """The links and BFRs that are down now (the rest is up). If that changed, the domain is planned
        again and the differences written; returns the entries written."""
        with self._lock:
            if down_links == self.down_links and down_nodes == self.down_nodes:
                return 0
            t0 = detected_at if detected_at is not None else time.monotonic()
            came_back = self.down_nodes - down_nodes
            for name in came_back:  # it may have lost its tables: write it whole
                self.record.pop(name, None)
            log.warning(
                "BIER domain: links down %s, BFRs down %s: BIFTs recomputed",
                sorted("-".join(sorted(k)) for k in down_links) or "none",
                sorted(down_nodes) or "none",
            )
            self.down_links, self.down_nodes = set(down_links), set(down_nodes)
            n = self.install()
            self.history.append(Reconvergence(set(down_links), set(down_nodes), t0, time.monotonic(), n))
            return n

    def open_group(self, group: BierGroup) -> int:
        """Adds a group (a model-sync job's multicast address and its BFERs) to the domain: its BFIR entry is
        written now and kept through failures like the intent's own groups. Returns the entries written."""
        with self._lock:
            if group.bfir not in self.intent.topo.bfr_ids:
                raise DinetError(f"no BFR {group.bfir!r} in the domain")
            unknown = sorted(set(group.to) - {n for n, b in self.intent.topo.bfr_ids.items() if b is not None})
            if unknown:
                raise DinetError(f"not BFERs of the domain: {', '.join(unknown)}")
            self.intent.groups = [g for g in self.intent.groups if _key(g) != _key(group)] + [group]
            return self.install()

    def close_group(self, group: BierGroup) -> int:
        """Removes a group added by open_group; its BFIR entry is deleted. Returns the entries written."""
        with self._lock:
            self.intent.groups = [g for g in self.intent.groups if _key(g) != _key(group)]
            return self.install()

    def reachable(self, bfir: str) -> set[str]:
        """The BFERs that `bfir` reaches now (the topology without the links and BFRs that are down)."""
        with self._lock:
            topo = self.intent.topo
            for n in sorted(self.down_nodes):
                topo = topo.without_node(n)
            for link in sorted(self.down_links, key=sorted):
                topo = topo.without_link(*sorted(link))
            if bfir not in topo.bfr_ids:
                return set()
            hops = next_hops(topo, bfir)
            return {n for n, b in topo.bfr_ids.items() if b is not None and (n in hops or n == bfir)}

    def link_down(self, a: str, b: str) -> int:
        return self.set_state(self.down_links | {frozenset((a, b))}, self.down_nodes)

    def link_up(self, a: str, b: str) -> int:
        return self.set_state(self.down_links - {frozenset((a, b))}, self.down_nodes)

    def observe(self) -> tuple[set[frozenset[str]], set[str]]:
        """Asks every node which of its ports are up: a link is down when either end's port is down or either
        end does not answer; a node that does not answer is down."""
        ports: dict[str, list[str]] = {}
        for (node, _), port in self.intent.ports.items():
            ports.setdefault(node, []).append(port.ifname)
        state: dict[str, dict[str, bool]] = {}
        nodes_down = set()
        for name, t in self.targets.items():
            try:
                state[name] = t.ports_up(sorted(set(ports.get(name, []))))
            except (DataPlaneError, InterfaceError) as e:
                log.debug("BIER node %s does not answer: %s", name, e)
                nodes_down.add(name)
        links_down = set()
        for link in self.intent.topo.links:
            ends = ((link.a, link.b), (link.b, link.a))
            if any(x in nodes_down or not state[x].get(self.intent.ports[(x, y)].ifname, False) for x, y in ends):
                links_down.add(frozenset((link.a, link.b)))
        return links_down, nodes_down

    def watch(self, interval: float, stop: threading.Event) -> None:
        """Observes the domain and reconverges on every change, until stopped: every `interval` seconds,
        and at once when a target that can (watch_links: a Linux node's link events) reports a change."""
        wake = threading.Event()
        watching = [t for t in self.targets.values() if hasattr(t, "watch_links")]
        for t in watching:
            t.watch_links(wake)  # type: ignore[attr-defined]
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    links, nodes = self.observe()
                    self.set_state(links, nodes, t0)
                except DinetError as e:
                    log.warning("BIER watch: %s", e)
                wake.wait(interval)
                wake.clear()
        finally:
            for t in watching:
                t.unwatch_links()  # type: ignore[attr-defined]
