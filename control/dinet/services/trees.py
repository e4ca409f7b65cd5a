"""The SR-P2MP tree baseline in the controller (draft-ietf-pim-sr-p2mp-policy, the trees draft-liu compares BIER
with): the domain's node-SID routes on every node (the IGP's state, whatever the jobs), and per model-sync job
a tree: a replication segment at its root, branching nodes and leaves (dinet.policy.p2mp), and the root's
entry for the job's traffic. Written through each node's TreeTarget (the TC program that also forwards BIER;
a P4Runtime switch running p4/dinet.p4).

It keeps its own record of what each node holds and writes only what changes: after a link fails, the
routes whose next hop changed and the segments of every tree the failure changed (tree repair), where BIER
rewrites BIFT entries only (dinet.services.bier). `writes` counts entries written, the figure the two are
compared by."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ..errors import ConfigError, DinetError
from ..policy.bift import BierIntent, BiftPlanner
from ..policy.p2mp import ReplicationSegment, node_routes, node_sid, p2mp_tree, rep_sid
from ..targets.base import TreeHopPort, TreeReplicaPort, TreeRoot, TreeTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TreeJob:
    """A job's tree: its id (the replication SID's offset), root, leaves and the traffic the root puts on it
    (a model-sync destination and UDP port, or (S,G) / (*,G))."""

    tree: int
    root: str
    leaves: frozenset[str]
    dst: str
    udp_port: int = 0
    src: str = ""


@dataclass
class TreeController:
    intent: BierIntent
    targets: dict[str, TreeTarget]
    writes: int = 0
    jobs: dict[int, TreeJob] = field(default_factory=dict)
    down_links: set[frozenset[str]] = field(default_factory=set)
    # what each node holds, as written: node -> destination -> next hop (None: own); node -> tree -> segment
    routes: dict[str, dict[str, str | None]] = field(default_factory=dict)
    segments: dict[str, dict[int, ReplicationSegment]] = field(default_factory=dict)
    last_change: dict[str, int] = field(default_factory=dict)  # what the last link change rewrote, by kind
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.intent.check()
        missing = set(self.intent.topo.bfr_ids) - set(self.targets)
        if missing:
            raise DinetError(f"no node programs tree node(s) {sorted(missing)}")
        self.index = {n: i for i, n in enumerate(self.intent.topo.bfr_ids)}
        self.planner = BiftPlanner(self.intent.topo, self.intent.bsl_code)

    def _hop(self, node: str, nbr: str) -> TreeHopPort:
        mine, theirs = self.intent.ports[(node, nbr)], self.intent.ports[(nbr, node)]
        return TreeHopPort(mine.ifname, theirs.mac, mine.mac)

    # ---- the IGP's state: node SIDs ---------------------------------------------------------------------
    def install_routes(self) -> int:
        """Every node's route to every node SID (its own: to its segments); only what differs from the
        record is written, and a route to a node no longer reachable is removed. Returns the entries written."""
        with self._lock:
            want = node_routes(self.planner, self.intent.topo.bfr_ids)
            n = 0
            for node, table in want.items():
                held = self.routes.setdefault(node, {})
                for dest, hop in table.items():
                    if dest in held and held[dest] == hop:
                        continue
                    sid = node_sid(self.index[dest])
                    self.targets[node].set_tree_node(sid, None if hop is None else self._hop(node, hop))
                    held[dest] = hop
                    n += 1
                for dest in sorted(set(held) - set(table)):
                    self.targets[node].remove_tree_node(node_sid(self.index[dest]))
                    del held[dest]
                    n += 1
            self.writes += n
            return n

    # ---- jobs ---------------------------------------------------------------------------------------------
    def _plan(self, job: TreeJob) -> dict[str, ReplicationSegment]:
        return p2mp_tree(self.planner, job.tree, job.root, job.leaves)

    def _write_segment(self, seg: ReplicationSegment) -> None:
        sid = rep_sid(seg.tree)
        replicas = [
            TreeReplicaPort(node_sid(self.index[d]), sid, self._hop(seg.node, via))
            for d, via in zip(seg.downstream, seg.via, strict=True)
        ]
        self.targets[seg.node].set_tree_segment(sid, replicas, seg.local)
        self.segments.setdefault(seg.node, {})[seg.tree] = seg
        self.writes += 1

    def _root(self, job: TreeJob) -> TreeRoot:
        return TreeRoot(job.dst, rep_sid(job.tree), job.src, job.udp_port)

    def start(self, job: TreeJob) -> int:
        """Sets up a job's tree: every segment (the root's last), then the root's entry (no packet is put on
        a tree before every node of it holds its segment). Returns the entries written."""
        with self._lock:
            for n in (job.root, *job.leaves):
                if n not in self.index:
                    raise ConfigError(f"tree {job.tree}: no node {n!r} in the domain")
            if job.tree in self.jobs:
                raise ConfigError(f"tree {job.tree} is set up already")
            plan = self._plan(job)
            for seg in sorted(plan.values(), key=lambda s: s.node == job.root):
                self._write_segment(seg)
            self.targets[job.root].set_tree_root(self._root(job))
            self.jobs[job.tree] = job
            self.writes += 1
            return len(plan) + 1

    def stop(self, tree: int) -> int:
        """Tears a job's tree down: the root's entry first, then every segment."""
        with self._lock:
            job = self.jobs.pop(tree, None)
            if job is None:
                raise ConfigError(f"no tree {tree}")
            self.targets[job.root].remove_tree_root(self._root(job))
            n = 1
            for node, held in self.segments.items():
                if held.pop(tree, None) is not None:
                    self.targets[node].remove_tree_segment(rep_sid(tree))
                    n += 1
            self.writes += n
            return n

    def free_id(self) -> int:
        """The lowest tree id no job holds."""
        with self._lock:
            return next(i for i in range(1, 1 << 16) if i not in self.jobs)

    # ---- failures: tree repair ----------------------------------------------------------------------------
    def link_down(self, a: str, b: str) -> int:
        return self._set_links(self.down_links | {frozenset((a, b))})

    def link_up(self, a: str, b: str) -> int:
        return self._set_links(self.down_links - {frozenset((a, b))})

    def _set_links(self, down: set[frozenset[str]]) -> int:
        """The domain's links changed: routes whose next hop changed, and the segments of every tree whose
        plan changed (new, changed, gone). Returns the entries written."""
        with self._lock:
            self.down_links = set(down)
            self.planner.set_state(self.down_links, set())
            before = self.writes
            routes = self.install_routes()
            for job in self.jobs.values():
                plan = self._plan(job)
                for node, seg in plan.items():
                    if self.segments.get(node, {}).get(job.tree) != seg:
                        self._write_segment(seg)
                for node, held in self.segments.items():
                    if job.tree in held and node not in plan:
                        del held[job.tree]
                        self.targets[node].remove_tree_segment(rep_sid(job.tree))
                        self.writes += 1
            n = self.writes - before
            self.last_change = {"routes": routes, "segments": n - routes}
            log.info(
                "trees: links down %s: %d routes and %d segments written", sorted(map(sorted, down)), routes, n - routes
            )
            return n
