"""BIFT computation (RFC 8279 s6): from a topology of BFRs, each BFR's forwarding table per set.

For every BFR and every BFER it can reach, the next hop on a shortest path (ties broken by the
neighbour's name, so the table is the same on every run and F-BMs of different neighbours never
overlap); a neighbour's F-BM is the OR of the bits of the BFERs it is next hop for (s6.5). A BFR's own
bit is delivered locally. Pure Python: no kernel, no switch.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # scipy is imported where a plan is made: every `dinet` command imports this module
    from scipy.sparse import csr_matrix

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


@dataclass(frozen=True, slots=True)
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


class BiftPlanner:
    """Every BFR's BIFT (RFC 8279 s6) for a topology whose links and BFRs go down and come back.

    The next hop from s toward d is, of s's neighbours n with cost(s, n) + dist(n, d) = dist(s, d), the one
    with the smallest name (what next_hops gives, one source at a time). All-pairs distances come from
    scipy's Dijkstra (C), the next hops and F-BMs from numpy, so a 1,000-BFR domain is planned in well
    under a second. After a change of one link only the distance rows the link can touch are computed
    again (the sources with a shortest path over it, or one the new link shortens or ties), and only the
    BFRs whose next hops read those rows get new tables: `set_state` names them. Within a BFR's table only
    the sets (SIs) whose BFERs' next hops moved are made again; the others stay the very objects they were
    (a BFER cut off changes one set of every table, not all four)."""

    def __init__(self, topo: BierTopology, bsl_code: int, sd: int = 0):
        self.topo, self.bsl_code, self.sd = topo, bsl_code, sd
        self.bits = BSL_BITS[bsl_code]
        self.names = list(topo.bfr_ids)
        self._index = {n: i for i, n in enumerate(self.names)}
        rank = {n: r for r, n in enumerate(sorted(self.names))}
        # each BFR's place in name order (ties between neighbours go to the smallest name), and its inverse
        self._rank = np.array([rank[n] for n in self.names], dtype=np.int64)
        self._by_rank = np.argsort(self._rank)
        self._rank_of = self._rank.tolist()  # the same, as a list (a key for sorted)
        size = len(self.names)
        self._si = np.full(size, -1, dtype=np.int64)
        self._pos = np.zeros(size, dtype=np.int64)
        for name, bfr in topo.bfr_ids.items():
            if bfr is not None:
                self._si[self._index[name]], self._pos[self._index[name]] = si_bit(bfr, self.bits)
        self._base: dict[int, dict[int, int]] = {i: {} for i in range(size)}  # every link, up or down
        for x, nbrs in topo.neighbors().items():
            for y, cost in nbrs.items():
                self._base[self._index[x]][self._index[y]] = cost
        self._adj = {i: dict(nbrs) for i, nbrs in self._base.items()}  # the links that are up
        self.down_links: set[frozenset[str]] = set()
        self.down_nodes: set[str] = set()
        # fast reroute: per (BFR, BFER) the backup neighbour (-1: none), made by the first backups_of and then
        # kept up to date as next hops are. What the last set_state moved, per BFR the SIs: of its next hops
        # (its table), and of its next hops or backup neighbours (its backups: they are per primary neighbour)
        self._alt: np.ndarray | None = None
        self._hop_moved: dict[int, set[int]] = {}
        self._alt_moved: dict[int, set[int]] = {}
        self._back: set[str] = set()
        self._sets = self._live_sets()
        self._dist = _dijkstra(self._graph()) if size else np.zeros((0, 0))
        every = np.arange(size)
        self._hop = self._hops(every, every)
        self._tables = self._tables_of(list(range(size)))

    # ---- the state ----------------------------------------------------------------------------------------
    def tables(self) -> dict[str, dict[int, BiftSet]]:
        """Every live BFR's BIFT: name -> SI -> BiftSet, for every set that holds a live BFER."""
        return {self.names[i]: t for i, t in self._tables.items() if self.names[i] not in self.down_nodes}

    def set_state(self, down_links: set[frozenset[str]], down_nodes: set[str]) -> set[str]:
        """Moves to the state where exactly these links and BFRs are down; returns the live BFRs whose
        tables changed (a BFR that came back is among them). No cyclic garbage collection meanwhile (see
        DomainPlanner.plan)."""
        with _gc_paused():
            return self._set_state(down_links, down_nodes)

    def _set_state(self, down_links: set[frozenset[str]], down_nodes: set[str]) -> set[str]:
        for n in set(down_nodes) | {x for link in down_links for x in link}:
            if n not in self._index:
                raise ConfigError(f"BIER state: no BFR {n!r}")
        back = self.down_nodes - set(down_nodes)
        was = {(i, j): self._link_up(i, j) for i, j in self._links_of(self.down_links, self.down_nodes)}
        self.down_links, self.down_nodes = set(down_links), set(down_nodes)
        self._hop_moved, self._alt_moved, self._back = {}, {}, back
        for i, j in sorted(set(was) | self._links_of(self.down_links, self.down_nodes)):
            up = self._link_up(i, j)
            if was.get((i, j), True) != up:
                self._relink(i, j, self._base[i][j] if up else None)
        sets = self._live_sets()
        if sets != self._sets:  # a set lost (or gained) its only BFER: every table has other entries
            self._sets = sets
            self._hop_moved = {s: set(sets) for s in range(len(self.names))}
            self._alt_moved = {s: set(sets) for s in range(len(self.names))}  # the backups' F-BMs too
        changed = set()
        for s, table in self._tables_of(sorted(self._hop_moved), self._hop_moved).items():
            if table != self._tables[s]:
                self._tables[s] = table
                changed.add(self.names[s])
        return (changed | back) - self.down_nodes

    def moved(self, backups: bool = True) -> dict[str, set[int]]:
        """Per live BFR, the SIs whose table (or, with `backups`, whose table or backups) the last set_state
        may have changed: the others are as they were. Every SI of every live BFR before the first
        backups_of; every SI of a BFR that came back."""
        if backups and self._alt is None:
            every = {s: set(self._sets) for s in range(len(self.names))}
        else:
            every = {s: set(sis) for s, sis in self._hop_moved.items()}
            for s, sis in self._alt_moved.items() if backups else ():
                every.setdefault(s, set()).update(sis)
        for name in self._back:
            every[self._index[name]] = set(self._sets)
        return {self.names[s]: sis for s, sis in every.items() if self.names[s] not in self.down_nodes}

    def _mark(self, into: dict[int, set[int]], rows: np.ndarray, cols: np.ndarray) -> None:
        """Notes, for each BFR in rows, the SI of the BFER in the same place of cols as moved."""
        si = self._si[cols]
        keep = si >= 0
        span = max(1, int(si.max(initial=0)) + 1)
        for key in np.unique(rows[keep] * span + si[keep]).tolist():
            into.setdefault(key // span, set()).add(key % span)

    def _mark_whole(self, into: dict[int, set[int]], rows: Iterable[int]) -> None:
        for r in rows:
            into[r] = set(self._sets)

    def backups_stale(self) -> set[str]:
        """The live BFRs whose backups the last set_state changed: a backup neighbour, or a next hop (the
        backups are per primary neighbour). Every live BFR before the first backups_of."""
        return set(self.moved())

    def backups(self, src: str) -> dict[str, dict[int, dict[str, int]]]:
        """Fast reroute for src (RFC 5286's loop-free alternates, per BFER): neighbour n -> SI -> backup
        neighbour b -> the F-BM b takes over while src's link to n is down. A BFER d behind n gets the
        neighbour b != n minimising cost(src, b) + dist(b, d) (ties: the smallest name) among those with
        dist(b, d) < dist(b, src) + dist(src, d): whatever way b's own BIFT breaks ties, its path to d does
        not come back through src, so the copy cannot loop while the other BFRs still forward as before the
        failure. A BFER with no such neighbour is not protected (its bits are counted as lost until the
        controller's new BIFTs come)."""
        return self.backups_of([src])[src]

    def backups_of(
        self, sources: Iterable[str], sis: dict[str, set[int]] | None = None
    ) -> dict[str, dict[str, dict[int, dict[str, int]]]]:
        """`backups` for many BFRs at once, from the backup neighbour of every (BFR, BFER) (`_alternates`,
        kept up to date by set_state once made): the F-BMs set in one scatter and packed in one call, in
        blocks of BFRs (a Python loop per BFER would dominate). sis: per BFR only these SIs' backups."""
        names = list(sources)
        out: dict[str, dict[str, dict[int, dict[str, int]]]] = {n: {} for n in names}
        size = len(self.names)
        if not size:
            return out
        if self._alt is None:
            every = np.arange(size)
            self._alt = self._alternates(every, every)
        for lo in range(0, len(names), 64):
            block = np.array([self._index[n] for n in names[lo : lo + 64]], dtype=np.int64)
            alt = self._alt[block]
            ok = alt >= 0
            if sis is not None:
                ok &= self._wanted([sis.get(n, set()) for n in names[lo : lo + 64]])
            k, d = np.nonzero(ok)
            if not k.size:
                continue
            # one bit row per (source, primary neighbour, backup, set) that has a bit: one F-BM each, the
            # neighbours by their place in the source's list, so that the rows are counted, not sorted
            nbrs = [list(self._base[x]) for x in block.tolist()]
            span = max(map(len, nbrs)) or 1
            slot = np.zeros((len(block), size), dtype=np.int64)
            for row, ns in enumerate(nbrs):
                slot[row, ns] = np.arange(len(ns))
            sets = np.array(self._sets, dtype=np.int64)  # every live set (one not here simply has no row)
            group = (k * span + slot[k, self._hop[block[k], d]]) * span + slot[k, alt[k, d]]
            group = group * len(sets) + np.searchsorted(sets, self._si[d])
            used = np.flatnonzero(np.bincount(group, minlength=len(block) * span * span * len(sets)))
            place = np.zeros(len(block) * span * span * len(sets), dtype=np.int64)
            place[used] = np.arange(used.size)
            bits = np.zeros((used.size, self.bits), dtype=bool)
            bits[place[group], self._pos[d] - 1] = True
            packed = np.packbits(bits, axis=1, bitorder="little")
            si_of, raw, w = sets.tolist(), packed.tobytes(), packed.shape[1]
            rest, m = np.divmod(used, len(si_of))
            rest, bs = np.divmod(rest, span)
            ks, ns_ = np.divmod(rest, span)
            rows = [out[n] for n in names[lo : lo + 64]]
            called = [[self.names[x] for x in ns] for ns in nbrs]  # each source's neighbours by name
            view = memoryview(raw)
            fbm = [int.from_bytes(view[off : off + w], "little") for off in range(0, len(raw), w)]
            for src, nbr, backup, at, f in zip(ks.tolist(), ns_.tolist(), bs.tolist(), m.tolist(), fbm, strict=True):
                them = called[src]
                per = rows[src].get(them[nbr])
                if per is None:
                    per = rows[src][them[nbr]] = {}
                got = per.get(si_of[at])
                if got is None:
                    got = per[si_of[at]] = {}
                got[them[backup]] = f
        return out

    def _wanted(self, per_row: list[set[int]]) -> np.ndarray:
        """A row per entry of per_row (SI numbers), a column per BFR: True where the BFR is a BFER of one of
        the row's SIs."""
        width = int(self._si.max(initial=0)) + 1
        by_si = np.zeros((len(per_row), width), dtype=bool)
        for k, sis in enumerate(per_row):
            by_si[k, [si for si in sis if si < width]] = True
        return by_si[:, np.maximum(self._si, 0)] & (self._si >= 0)[None, :]

    def _alternates(self, sources: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The backup neighbour (-1: none) of every source toward every BFER in `cols` (see `backups`): one
        row per (source, neighbour) pair, the best neighbour per (source, BFER) by one reduceat (cost, then
        name), in blocks of sources."""
        size = len(self.names)
        out = np.full((len(sources), len(cols)), -1, dtype=np.int64)
        dist, rank = self._dist, self._rank
        bfer = (self._si >= 0)[cols]
        for lo, block, row, nbr, cost, starts in self._neighbour_blocks(sources, 64):
            src = block[row]
            hop = self._hop[np.ix_(src, cols)]  # each pair's source's next hop toward every BFER
            to = dist[np.ix_(nbr, cols)]
            with np.errstate(invalid="ignore"):
                free = to < dist[nbr, src][:, None] + dist[np.ix_(src, cols)]
            ok = free & (hop >= 0) & (hop != nbr[:, None]) & bfer[None, :]
            # cost first, the neighbour's name on a tie: one number per (pair, BFER), the least per source wins
            key = np.where(ok, (cost[:, None] + to) * (size + 1) + rank[nbr][:, None], np.inf)
            best = np.minimum.reduceat(key, starts, axis=0)
            fin = np.isfinite(best)
            alt = np.full(best.shape, -1, dtype=np.int64)
            alt[fin] = self._by_rank[(best[fin] % (size + 1)).astype(np.int64)]
            out[lo + row[starts]] = alt
        return out

    def _realternate(
        self,
        xs: np.ndarray,
        ds: np.ndarray,
        near: tuple[np.ndarray, np.ndarray],
        hops: tuple[np.ndarray, np.ndarray],
        whole: set[int],
        csr: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """The backup neighbours again where what they read moved, as for next hops: s's backup toward d
        reads dist(s, d), its neighbours' dist(b, d) and dist(b, s), and its next hop toward d. So the pairs
        `near` the moved distances (xs, ds), the pairs whose next hop changed (`hops`), and whole rows for
        `whole` (the link's ends) and for a BFR whose distance to a neighbour moved. The (BFR, SI)s whose
        backups changed join _alt_moved."""
        assert self._alt is not None
        size = len(self.names)
        indptr, nbrs, costs = csr
        deg = np.diff(indptr)
        rows_whole = set(whole) | {x for x, y in zip(xs.tolist(), ds.tolist(), strict=True) if y in self._adj[x]}
        if rows_whole:
            at = np.array(sorted(rows_whole), dtype=np.int64)
            alt = self._alternates(at, np.arange(size))
            r, c = np.nonzero(alt != self._alt[at])
            self._alt[at] = alt
            self._mark(self._alt_moved, at[r], c)
        rs, cs = self._pairs(np.concatenate([near[0], hops[0]]), np.concatenate([near[1], hops[1]]), rows_whole)
        if not rs.size:
            return
        at = _spans(indptr, rs)
        pr = np.repeat(np.arange(rs.size), deg[rs])
        b, dist = nbrs[at], self._dist
        hop = self._hop[rs, cs][pr]
        to = dist[b, cs[pr]]
        with np.errstate(invalid="ignore"):
            free = to < dist[b, rs[pr]] + dist[rs, cs][pr]
        ok = free & (hop >= 0) & (hop != b) & (self._si >= 0)[cs[pr]]
        key2 = np.where(ok, (costs[at] + to) * (size + 1) + self._rank[b], np.inf)
        best = np.full(rs.size, np.inf)
        np.minimum.at(best, pr, key2)
        fin = np.isfinite(best)
        alt = np.full(rs.size, -1, dtype=np.int64)
        alt[fin] = self._by_rank[(best[fin] % (size + 1)).astype(np.int64)]
        differ = alt != self._alt[rs, cs]
        self._alt[rs[differ], cs[differ]] = alt[differ]
        self._mark(self._alt_moved, rs[differ], cs[differ])

    def next_hops_toward(self, dest: str) -> dict[str, str]:
        """BFR -> its next hop toward dest now (the BFRs that reach it)."""
        d = self._index[dest]
        return {self.names[s]: self.names[h] for s, h in enumerate(self._hop[:, d].tolist()) if h >= 0}

    # ---- the arithmetic -------------------------------------------------------------------------------------
    def _links_of(self, down_links: set[frozenset[str]], down_nodes: set[str]) -> set[tuple[int, int]]:
        """The links (i < j) that these failures take down."""
        out = set()
        for link in down_links:
            i, j = sorted(self._index[n] for n in link)
            if j in self._base[i]:
                out.add((i, j))
        for n in down_nodes:
            i = self._index[n]
            out |= {(min(i, j), max(i, j)) for j in self._base[i]}
        return out

    def _link_up(self, i: int, j: int) -> bool:
        a, b = self.names[i], self.names[j]
        return frozenset((a, b)) not in self.down_links and a not in self.down_nodes and b not in self.down_nodes

    def _live_sets(self) -> list[int]:
        return sorted(
            {int(si) for si, name in zip(self._si, self.names, strict=True) if si >= 0 and name not in self.down_nodes}
        )

    def _graph(self) -> csr_matrix:
        from scipy.sparse import csr_matrix

        rows = [i for i, nbrs in self._adj.items() for _ in nbrs]
        cols = [j for nbrs in self._adj.values() for j in nbrs]
        vals = [c for nbrs in self._adj.values() for c in nbrs.values()]
        size = len(self.names)
        return csr_matrix((np.array(vals, dtype=np.float64), (rows, cols)), shape=(size, size))

    def _hops(self, sources: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The next hop (-1: none) of every source toward every BFR in `cols`: of the source's neighbours
        n with cost(s, n) + dist(n, d) = dist(s, d), the one with the smallest name. All sources at once:
        one row per (source, neighbour) pair, the smallest rank per source by reduceat (in blocks)."""
        out = np.full((len(sources), len(cols)), -1, dtype=np.int64)
        dist, rank = self._dist, self._rank
        none = len(self.names)
        for lo, block, row, nbr, cost, starts in self._neighbour_blocks(sources, 128):
            want = dist[np.ix_(block[row], cols)]
            ok = np.isfinite(want) & (cost[:, None] + dist[np.ix_(nbr, cols)] == want)
            ranked = np.where(ok, rank[nbr][:, None], none)
            best = np.minimum.reduceat(ranked, starts, axis=0)
            hops = np.where(best < none, self._by_rank[np.minimum(best, none - 1)], -1)
            out[lo + row[starts]] = hops
        out[sources[:, None] == cols[None, :]] = -1
        return out

    def _neighbour_blocks(
        self, sources: np.ndarray, step: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Sources in blocks of `step`, each block one row per (source, neighbour): (lo, block, row, nbr,
        cost, starts), row the source's place in the block and starts where each source's rows begin (the
        sources with a neighbour), for a reduceat per source."""
        for lo in range(0, len(sources), step):
            block = sources[lo : lo + step]
            pairs = [(k, n, c) for k, s in enumerate(block.tolist()) for n, c in self._adj[s].items()]
            if not pairs:
                continue
            row, nbr, cost = (np.array(x) for x in zip(*pairs, strict=True))
            yield lo, block, row, nbr, cost, np.flatnonzero(np.r_[True, row[1:] != row[:-1]])

    def _relink(self, i: int, j: int, cost: int | None) -> None:
        """Sets the link i-j's cost (None: down); notes the (BFR, SI)s whose next hops changed in _hop_moved
        (every SI of the link's ends: their neighbours changed) and those whose backups did in _alt_moved."""
        old = self._adj[i].get(j)
        if old == cost:
            return
        went = [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))]  # the distances (x, d) that moved
        if old is not None:  # the link goes (a dearer one is the cheaper's removal, then an addition)
            del self._adj[i][j], self._adj[j][i]
            went.append(self._removed(i, j, old))
        if cost is not None:
            self._adj[i][j] = self._adj[j][i] = cost
            went.append(self._added(i, j, cost))
        xs, ds = (np.concatenate(x) for x in zip(*went, strict=True))
        csr = self._csr()  # the links as they are now, for next hops and backups
        indptr, nbrs, _ = csr
        # what a (BFR, BFER) pair reads of the distances: its own and its neighbours' in the same column, so
        # every moved (x, d) and (n, d) for x's neighbours n (links are symmetric): a few thousand pairs after
        # a link change in a 1,000-BFR domain, where the rows x columns around them are hundreds of thousands
        near = (
            np.concatenate([xs, nbrs[_spans(indptr, xs)]]),
            np.concatenate([ds, np.repeat(ds, np.diff(indptr)[xs])]),
        )
        hop_rows, hop_cols = self._rehop(*self._pairs(*near, {i, j}), csr)  # the ends are done whole
        ends = np.array([i, j], dtype=np.int64)
        self._hop[ends] = self._hops(ends, np.arange(len(self.names)))
        for moved in (self._hop_moved, self._alt_moved) if self._alt is not None else (self._hop_moved,):
            self._mark(moved, hop_rows, hop_cols)
            self._mark_whole(moved, (i, j))
        if self._alt is not None:
            self._realternate(xs, ds, near, (hop_rows, hop_cols), {i, j}, csr)

    def _pairs(self, rows: np.ndarray, cols: np.ndarray, skip: set[int]) -> tuple[np.ndarray, np.ndarray]:
        """These (row, column) pairs once each, without a BFR's own column and without the rows in skip."""
        size = len(self.names)
        keep = (rows != cols) & ~np.isin(rows, list(skip))
        key = np.unique(rows[keep] * size + cols[keep])
        return key // size, key % size

    def _rehop(
        self, rs: np.ndarray, cs: np.ndarray, csr: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The next hops of these (BFR, BFER) pairs again (s's hop toward d reads dist(s, d) and its
        neighbours' dist(n, d)); returns the pairs whose next hops changed."""
        size = len(self.names)
        indptr, nbrs, costs = csr
        deg = np.diff(indptr)
        # each pair's candidates: its row's neighbours n with cost(r, n) + dist(n, d) = dist(r, d)
        at = _spans(indptr, rs)
        pr = np.repeat(np.arange(rs.size), deg[rs])
        n = nbrs[at]
        want = self._dist[rs, cs][pr]
        ok = np.isfinite(want) & (costs[at] + self._dist[n, cs[pr]] == want)
        ranked = np.where(ok, self._rank[n], size)
        best = np.full(rs.size, size, dtype=np.int64)
        np.minimum.at(best, pr, ranked)
        hops = np.where(best < size, self._by_rank[np.minimum(best, size - 1)], -1)
        differ = hops != self._hop[rs, cs]
        self._hop[rs[differ], cs[differ]] = hops[differ]
        return rs[differ], cs[differ]

    def _csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The links that are up as arrays: row i's neighbours are nbrs[indptr[i]:indptr[i + 1]], with costs."""
        size = len(self.names)
        deg = np.array([len(self._adj[i]) for i in range(size)], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(deg)])
        nbrs = np.fromiter((j for i in range(size) for j in self._adj[i]), dtype=np.int64, count=int(indptr[-1]))
        costs = np.fromiter(
            (c for i in range(size) for c in self._adj[i].values()), dtype=np.float64, count=int(indptr[-1])
        )
        return indptr, nbrs, costs

    def _removed(self, i: int, j: int, cost: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances after the link i-j (of `cost`) went; returns the (row, column)s that moved. Only a pair
        with a shortest path over the link can change: s on i's side (a shortest path from s to j through i)
        with d on j's side. Of those, a source that reaches the far end as soon through another of its
        neighbours keeps every distance (a path over the link to any d, its part up to the far end swapped
        for that one, is as short; that neighbour's own distance cannot use the link, it is nearer than the far
        end): common where costs tie. Dijkstra runs from the smaller side of what is left only, the other
        side's rows take the columns by symmetry."""
        dist = self._dist
        none = np.zeros(0, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            near_i = np.flatnonzero(dist[:, i] + cost == dist[:, j])
            near_j = np.flatnonzero(dist[:, j] + cost == dist[:, i])
        near_i, near_j = near_i[~self._tied(near_i, j)], near_j[~self._tied(near_j, i)]
        if not near_i.size or not near_j.size:
            return none, none
        side = near_i if near_i.size <= near_j.size else near_j
        new = _dijkstra(self._graph(), side)
        r, c = np.nonzero(new != dist[side])
        dist[side] = new
        dist[:, side] = new.T
        return np.concatenate([side[r], c]), np.concatenate([c, side[r]])

    def _tied(self, sources: np.ndarray, far: int) -> np.ndarray:
        """Per source, whether one of far's neighbours over the links that are up now lies on a shortest
        path from it to far (by the distances as they are)."""
        nbrs = self._adj[far]
        if not nbrs or not sources.size:
            return np.zeros(sources.size, dtype=bool)
        ks = np.fromiter(nbrs, dtype=np.int64, count=len(nbrs))
        costs = np.fromiter(nbrs.values(), dtype=np.float64, count=len(nbrs))
        with np.errstate(invalid="ignore"):
            return (self._dist[np.ix_(sources, ks)] + costs == self._dist[sources, far][:, None]).any(axis=1)  # type: ignore[no-any-return]

    def _added(self, i: int, j: int, cost: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances after a link i-j of `cost` came: a shortest path uses it at most once, so
        dist'(s, d) = min(dist(s, d), dist(s, i) + cost + dist(j, d), dist(s, j) + cost + dist(i, d)), no
        search needed. Only a source that reaches j sooner through i (a) toward a BFR that reaches i sooner
        through j (b) can gain by i -> j, and the way back is the same pairs turned round: the a x b block
        alone, not every pair. Returns the (row, column)s that moved."""
        dist = self._dist
        with np.errstate(invalid="ignore"):
            a = np.flatnonzero(dist[:, i] + cost < dist[:, j])
            b = np.flatnonzero(dist[:, j] + cost < dist[:, i])
        if not a.size or not b.size:
            none = np.zeros(0, dtype=np.int64)
            return none, none
        via = dist[a, i][:, None] + cost + dist[j, b][None, :]
        r, c = np.nonzero(via < dist[np.ix_(a, b)])
        xs, ds, new = a[r], b[c], via[r, c]
        dist[xs, ds] = new
        dist[ds, xs] = new
        return np.concatenate([xs, ds]), np.concatenate([ds, xs])

    def _tables_of(self, nodes: list[int], sis: dict[int, set[int]] | None = None) -> dict[int, dict[int, BiftSet]]:
        """The BIFTs of these BFRs at once: one bit row per (BFR, neighbour), the sets side by side, set from
        the next hops in one scatter and packed in one call (a Python loop per BFR would dominate). sis: per
        BFR only these SIs are made, its other sets are the ones it has."""
        if not nodes:
            return {}
        size = len(self.names)
        # each BFR's neighbours in name order: the F-BMs are made in that order (the entries' ports keep it)
        pairs = [(s, n) for s in nodes for n in sorted(self._adj[s], key=self._rank_of.__getitem__)]
        # (the k-th of nodes, neighbour) -> its place in pairs
        row_of = np.zeros((len(nodes), size), dtype=np.int64)
        local = {s: k for k, s in enumerate(nodes)}
        row_of[[local[s] for s, _ in pairs], [n for _, n in pairs]] = np.arange(len(pairs))
        set_of = np.searchsorted(np.array(self._sets), self._si)  # a BFER's set's place in self._sets
        hop = self._hop[np.array(nodes, dtype=np.int64)]
        ok = (hop >= 0) & (self._si >= 0)[None, :]
        if sis is not None:
            ok &= self._wanted([sis[s] for s in nodes])
        k, d = np.nonzero(ok)
        # one bit row per (BFR, neighbour, set): one F-BM each, where it has a bit
        nsets = len(self._sets)
        bits = np.zeros((len(pairs) * nsets, self.bits), dtype=bool)
        bits[row_of[k, hop[k, d]] * nsets + set_of[d], self._pos[d] - 1] = True
        packed = np.packbits(bits, axis=1, bitorder="little")
        fbms: dict[int, dict[int, dict[str, int]]] = {s: {si: {} for si in self._sets} for s in nodes}
        rows = np.flatnonzero(packed.any(axis=1))
        raw, w = memoryview(packed[rows].tobytes()), packed.shape[1]
        fbm = [int.from_bytes(raw[off : off + w], "little") for off in range(0, len(raw), w)]
        names, sets = self.names, self._sets
        for r, f in zip(rows.tolist(), fbm, strict=True):
            (s, n), m = pairs[r // nsets], r % nsets
            fbms[s][sets[m]][names[n]] = f
        out = {}
        ids = {si: bift_id(self.bsl_code, si, self.sd) for si in self._sets}
        for s in nodes:
            own_si, own_pos = int(self._si[s]), int(self._pos[s])
            made = self._sets if sis is None else sis[s]
            out[s] = {
                si: BiftSet(
                    ids[si],
                    si,
                    fbms[s][si],
                    1 << (own_pos - 1) if own_si == si else 0,
                )
                if si in made
                else self._tables[s][si]
                for si in self._sets
            }
        return out


def compute_bifts(topo: BierTopology, bsl_code: int, sd: int = 0) -> dict[str, dict[int, BiftSet]]:
    """Every BFR's BIFT: name -> SI -> BiftSet, for every set that holds a BFER."""
    return BiftPlanner(topo, bsl_code, sd).tables()


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
    frr: bool = True  # backup neighbours in every BIFT entry (fast reroute: BiftPlanner.backups)

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


@dataclass(frozen=True, slots=True)
class BiftPort:
    """One neighbour in a BIFT entry: the node's port toward it (an interface name on Linux, a port number on
    a switch), the neighbour's MAC (dmac), the F-BM of the neighbour (RFC 8279 s6.1), and the port's own MAC
    (smac; a Linux target may read it from the interface)."""

    port: str
    dmac: str
    fbm: int
    smac: str = ""


@dataclass(frozen=True, slots=True)
class BiftBackup:
    """Fast reroute of one BIFT entry: while the port toward a neighbour (`port`) is down, the entry's
    neighbours are these: that neighbour's bits moved to its loop-free alternates (BiftPlanner.backups),
    a BFER without one left out (its bits are not forwarded until the controller's new BIFTs)."""

    port: str
    neighbors: tuple[BiftPort, ...]


@dataclass(frozen=True, slots=True)
class BiftEntry:
    """A BFR's entry for one BIFT-id (BSL, SD and SI): its own bits (local delivery) and its neighbours."""

    bift_id: int
    local: int
    neighbors: tuple[BiftPort, ...]
    backups: tuple[BiftBackup, ...] = ()  # fast reroute, per protected neighbour (a target may not do it)


@dataclass(frozen=True, slots=True)
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


@dataclass(slots=True)
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


class DomainPlanner:
    """plan_domain for one domain over its life: the BIFTs move with the failures incrementally
    (BiftPlanner), and only the (BFR, SI)s whose tables or backups changed get new BIFT entries; the others
    keep the very objects they had. The BFIR entries follow the intent's groups as they are at each call."""

    def __init__(self, intent: BierIntent):
        self.intent = intent
        self.bifts = BiftPlanner(intent.topo, intent.bsl_code)
        # per BFR, neighbour -> F-BM -> its port value: a backup repeats the entry's other ports, and a change
        # rewrites mostly the ports it had (frozen dataclasses are dear to make by the hundred thousand)
        self._ports: dict[str, defaultdict[str, dict[int, BiftPort]]] = {}
        tables = self.bifts.tables()
        frr = self.bifts.backups_of(tables) if intent.frr else {}
        self._entries = {name: self._entries_of(name, t, frr.get(name, {})) for name, t in tables.items()}

    def _entries_of(
        self,
        name: str,
        table: dict[int, BiftSet],
        frr: dict[str, dict[int, dict[str, int]]],
        sis: set[int] | None = None,
    ) -> dict[int, BiftEntry]:
        """The BFR's BIFT entries, each with its backups (`frr`: BiftPlanner.backups of the BFR); with sis
        only those SIs' entries are made, the others are the BFR's entries as they are."""
        old = self._entries.get(name, {}) if sis is not None else {}
        ports = self.intent.ports
        made = self._ports.get(name)
        if made is None or sum(map(len, made.values())) > 4096:  # none yet, or F-BMs of long-gone states
            made = self._ports[name] = defaultdict(dict)

        def new(nbr: str, fbm: int) -> BiftPort:
            p = made[nbr][fbm] = BiftPort(
                ports[(name, nbr)].ifname, ports[(nbr, name)].mac, fbm, ports[(name, nbr)].mac
            )
            return p

        out = {}
        protected = sorted(frr.items())
        for si, entry in table.items():
            if sis is not None and si not in sis and entry.bift_id in old:
                out[entry.bift_id] = old[entry.bift_id]
                continue
            fbms = entry.fbm  # in neighbour name order (BiftPlanner), so the ports are too
            primary = {nbr: made[nbr].get(fbm) or new(nbr, fbm) for nbr, fbm in fbms.items()}
            backups = []
            for nbr, per in protected:  # the whole entry while nbr's port is down
                alt = per.get(si)
                if not alt or nbr not in primary:
                    continue
                # the other neighbours' ports as they are, a backup's with the bits it takes over
                down = primary.copy()
                del down[nbr]
                added = False
                for b, f in alt.items():
                    had = down.get(b)
                    if had is None:
                        added = True
                    else:
                        f |= had.fbm
                    down[b] = made[b].get(f) or new(b, f)
                # a neighbour the entry had keeps its place in name order; one it did not have is sorted in
                keep = tuple([down[n] for n in sorted(down)]) if added else tuple(down.values())
                backups.append(BiftBackup(ports[(name, nbr)].ifname, keep))
            out[entry.bift_id] = BiftEntry(entry.bift_id, entry.local, tuple(primary.values()), tuple(backups))
        return out

    def plan(
        self, down_links: set[frozenset[str]] | None = None, down_nodes: set[str] | None = None
    ) -> dict[str, NodePlan]:
        """Every live BFR's entries with these links and BFRs down (see plan_domain). The cyclic garbage
        collector waits meanwhile: a change makes tens of thousands of objects, none of them cyclic, and each
        collection it would set off walks the hundreds of thousands the planner holds."""
        with _gc_paused():
            return self._plan(down_links, down_nodes)

    def _plan(self, down_links: set[frozenset[str]] | None, down_nodes: set[str] | None) -> dict[str, NodePlan]:
        self.bifts.set_state(set(down_links or ()), set(down_nodes or ()))
        tables = self.bifts.tables()
        # the SIs whose tables moved, with fast reroute also those whose backups did (a backup reads its
        # neighbours' distances too)
        redo = self.bifts.moved(backups=self.intent.frr)
        frr = self.bifts.backups_of(sorted(redo), redo) if self.intent.frr else {}
        for name, sis in redo.items():
            entries = self._entries_of(name, tables[name], frr.get(name, {}), sis)
            if entries != self._entries.get(name):  # unchanged entries stay the very objects they were
                self._entries[name] = entries
        plans = {name: NodePlan(bifts=self._entries[name]) for name in tables}
        for g in self.intent.groups:
            if g.bfir not in plans:
                continue
            e = BfirEntry(
                g.dst,
                self.intent.topo.bfr_ids[g.bfir] or 0,
                self.intent.bsl_code,
                group_sets(self.intent, g.to),
                g.src,
                g.udp_port,
            )
            plans[g.bfir].bfirs[e.match] = e
        return plans


def plan_domain(
    intent: BierIntent, down_links: set[frozenset[str]] | None = None, down_nodes: set[str] | None = None
) -> dict[str, NodePlan]:
    """Every live BFR's entries, for the topology without the failed links and nodes: BIFTs from shortest
    paths (RFC 8279 s6), checked disjoint, and every group's BFIR entry (the bitstring of all its BFERs:
    a BFER that cannot be reached is simply not forwarded to, and is there again when it returns)."""
    planner = DomainPlanner(intent)
    plans = planner.plan(down_links, down_nodes)
    check_disjoint(planner.bifts.tables())
    return plans


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection within (reference counting goes on); as it was after. What was made
    meanwhile and lives on (the domain's new entries: tens of thousands of objects, none cyclic) goes
    straight to the oldest generation (gc.freeze, then gc.unfreeze: two list splices), as the collector would
    move it after walking it twice; otherwise the first young collection after the pause walks it all (7 ms a
    plan at 1,000 BFRs). Cyclic garbage made just before waits for the next full collection instead."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _dijkstra(graph: csr_matrix, indices: Any = None) -> np.ndarray:
    """scipy's Dijkstra (C): the distances from `indices` (None: every node) to every node."""
    from scipy.sparse.csgraph import dijkstra

    return dijkstra(graph, directed=True, indices=indices)  # type: ignore[no-any-return]


def _spans(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The positions indptr[r]..indptr[r + 1] - 1 of every r in rows, one after another."""
    deg = indptr[rows + 1] - indptr[rows]
    if not deg.sum():
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(indptr[rows] - np.cumsum(deg) + deg, deg)
    return starts + np.arange(int(deg.sum()))
