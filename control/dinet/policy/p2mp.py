"""Tree-based multicast as the baseline BIER is argued against (draft-liu-rtgwg-llmsync-multicast): an
SR-P2MP policy (draft-ietf-pim-sr-p2mp-policy) per model-sync job, computed by a controller, with a
replication segment at the root, at every branching node and at every leaf; a node that only passes the
tree on (one child, not a leaf) needs none, the replicas reaching the next replication node over SR unicast.
The per-node trees of PIM-SM or mLDP are the same trees with state at every node on them (`per_node`).

The trees follow the same shortest paths as the domain's BIFTs (BiftPlanner's next hops, the same tie-break),
so BIER and the tree carry the same bytes over the same links; they differ in state: a tree is state in the
network per job and destination set, written when the job starts and rewritten when a link under it fails,
where BIER keeps only its BIFTs (per set, whatever the jobs) and one entry at the BFIR per job. Pure Python:
this computes what each approach must hold and write; it forwards nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .bift import BiftPlanner


@dataclass(frozen=True)
class ReplicationSegment:
    """What one node holds for one tree: the tree, the downstream replication nodes its replicas go to
    (each over SR unicast along the shortest path), and whether it delivers locally (a leaf)."""

    tree: int
    node: str
    downstream: tuple[str, ...]
    local: bool


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

    return {
        n: ReplicationSegment(tree, n, tuple(sorted(next_replication(c) for c in children.get(n, ()))), n in leaves)
        for n in sorted(on_tree)
        if holds(n)
    }
