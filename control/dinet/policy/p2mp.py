"""Tree-based multicast as the baseline BIER is argued against (draft-liu-rtgwg-llmsync-multicast): an
SR-P2MP policy (draft-ietf-pim-sr-p2mp-policy) per model-sync job, computed by a controller, with a
replication segment at the root, at every branching node and at every leaf; a node that only passes the
tree on (one child, not a leaf) needs none, the replicas reaching the next replication node over SR unicast.
The per-node trees of PIM-SM or mLDP are the same trees with state at every node on them (`per_node`).

The trees follow the same shortest paths as the domain's BIFTs (BiftPlanner's next hops, the same tie-break),
so BIER and the tree carry the same bytes over the same links; they differ in state: a tree is state in the
network per job and destination set, written when the job starts and rewritten when a link under it fails,
where BIER keeps only its BIFTs (per set, whatever the jobs) and one entry at the BFIR per job. Pure Python:
this computes what each approach must hold and write; dinet.services.trees writes it to the data planes, which
forward it (ebpf/bier.bpf.c's tree section, p4/tree.p4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import consts
from ..errors import ConfigError
from .bift import BiftPlanner

C = consts.load()


@dataclass(frozen=True)
class ReplicationSegment:
    """What one node holds for one tree: the tree, the downstream replication nodes its replicas go to
    (each over SR unicast along the shortest path), and whether it delivers locally (a leaf). via: the
    neighbour each replica leaves toward (the tree's child on the way to that downstream node)."""

    tree: int
    node: str
    downstream: tuple[str, ...]
    local: bool
    via: tuple[str, ...] = ()


def tree_links(
    planner: BiftPlanner, root: str, leaves: Iterable[str], toward: dict[str, dict[str, str]] | None = None
) -> set[tuple[str, str]]:
    """The links (parent, child) of the shortest-path tree from root to the leaves (the BIFTs' next hops).
    `toward`: a cache of next_hops_toward per leaf, for many trees over one state of the domain."""
    links: set[tuple[str, str]] = set()
    cache = toward if toward is not None else {}
    for leaf in leaves:
        if leaf not in cache:
            cache[leaf] = planner.next_hops_toward(leaf)
        toward_leaf = cache[leaf]
        node = root
        while node != leaf:
            nxt = toward_leaf.get(node)
            if nxt is None:  # not reachable now: no branch toward it
                break
            links.add((node, nxt))
            node = nxt
    return links


def p2mp_tree(
    planner: BiftPlanner,
    tree: int,
    root: str,
    leaves: Iterable[str],
    per_node: bool = False,
    toward: dict[str, dict[str, str]] | None = None,
) -> dict[str, ReplicationSegment]:
    """The replication segments of one tree: node -> its segment. SR-P2MP (default): the root, branching
    nodes and leaves; per_node: every node on the tree (PIM-SM, mLDP)."""
    leaves = set(leaves) - {root}
    links = tree_links(planner, root, leaves, toward)
    children: dict[str, list[str]] = {}
    for parent, child in links:
        children.setdefault(parent, []).append(child)
    on_tree = {root} | {c for _, c in links}

    def holds(n: str) -> bool:
        return per_node or n == root or n in leaves or len(children.get(n, ())) > 1

    def next_replication(child: str) -> str:
        while not holds(child):  # a pass-through node: the replica goes on over unicast
            (child,) = children[child]
        return child

    out = {}
    for n in sorted(on_tree):
        if holds(n):
            pairs = sorted((next_replication(c), c) for c in children.get(n, ()))
            out[n] = ReplicationSegment(tree, n, tuple(d for d, _ in pairs), n in leaves, tuple(c for _, c in pairs))
    return out


# ---- the SIDs and the IGP's state of the data-plane trees (ebpf/bier.bpf.c's tree section, p4/tree.p4) ----
def node_sid(index: int) -> int:
    """The node SID of the domain's index-th node (an SRGB from TREE_NODE_SID_BASE)."""
    return C["TREE_NODE_SID_BASE"] + index


def rep_sid(tree: int) -> int:
    """The replication SID of a tree, the same at every node of it (the tree's id, as the SR-P2MP policy's
    <root, tree-id> names it)."""
    sid = C["TREE_REP_SID_BASE"] + tree
    if not 0 <= tree or sid >= 1 << 20:
        raise ConfigError(f"a tree id is 0..{(1 << 20) - 1 - C['TREE_REP_SID_BASE']}, not {tree}")
    return sid


def node_routes(planner: BiftPlanner, nodes: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """node -> {destination node: the neighbour toward it, None for the node itself}: what every node needs
    to pass a replica on by node SID (SR unicast). Per destination, whatever the trees (the IGP's state);
    unreachable destinations are left out."""
    names = list(nodes)
    out: dict[str, dict[str, str | None]] = {n: {n: None} for n in names}
    for dest in names:
        for n, hop in planner.next_hops_toward(dest).items():
            if n != dest and n in out:
                out[n][dest] = hop
    return out
