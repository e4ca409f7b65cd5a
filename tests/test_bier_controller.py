"""The BIER controller against recording targets (no kernel): it writes each entry once, rewrites only what a
failure changes, removes what a node no longer needs, and tells failed links and BFRs from what the nodes say."""

from __future__ import annotations

from typing import Any

import pytest

from dinet.errors import DataPlaneError
from dinet.packets import bift_id
from dinet.policy.bift import BierGroup, BierIntent, BierTopology, Port
from dinet.services.bier import BierController


class Recorder:
    """A BierTarget that remembers its entries and counts writes; ports_up answers from `up`."""

    def __init__(self) -> None:
        self.bifts: dict[int, Any] = {}
        self.bfirs: dict[Any, Any] = {}
        self.writes = 0
        self.up: dict[str, bool] = {}
        self.answers = True

    def set_bift(self, entry: Any) -> None:
        self.bifts[entry.bift_id] = entry
        self.writes += 1

    def remove_bift(self, bid: int) -> None:
        del self.bifts[bid]
        self.writes += 1

    def set_bfir(self, entry: Any) -> None:
        self.bfirs[entry.match] = entry
        self.writes += 1

    def remove_bfir(self, entry: Any) -> None:
        del self.bfirs[entry.match]
        self.writes += 1

    def ports_up(self, ports: list[str]) -> dict[str, bool]:
        if not self.answers:
            raise DataPlaneError("node does not answer")
        return {p: self.up.get(p, True) for p in ports}


def diamond() -> tuple[BierIntent, dict[str, Recorder]]:
    """a (BFIR) - b, c - d, e (BFERs): d behind both b and c, e behind c only."""
    t = BierTopology()
    for name, bfr in (("a", 3), ("b", None), ("c", None), ("d", 1), ("e", 2)):
        t.add_node(name, bfr)
    ports = {}
    for x, y in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("c", "e")):
        t.add_link(x, y)
        ports[(x, y)] = Port(f"to-{y}", f"02:00:00:00:{ord(x):02x}:{ord(y):02x}")
        ports[(y, x)] = Port(f"to-{x}", f"02:00:00:00:{ord(y):02x}:{ord(x):02x}")
    intent = BierIntent(1, t, ports, [BierGroup("a", "10.200.0.1", frozenset({"d", "e"}), udp_port=9000)])
    return intent, {n: Recorder() for n in t.bfr_ids}


def test_install_writes_each_entry_once_and_a_second_install_nothing() -> None:
    intent, nodes = diamond()
    ctl = BierController(intent, nodes)  # type: ignore[arg-type]
    first = ctl.install()
    assert first == sum(r.writes for r in nodes.values()) == 5 + 1  # one BIFT entry per BFR, one BFIR entry
    assert ctl.install() == 0
    (bfir,) = nodes["a"].bfirs.values()
    assert bfir.sets == ((bift_id(1, 0), 0b11),) and bfir.udp_port == 9000


def test_a_failed_link_rewrites_only_the_entries_it_changes() -> None:
    intent, nodes = diamond()
    ctl = BierController(intent, nodes)  # type: ignore[arg-type]
    ctl.install()
    bid = bift_id(1, 0)
    assert {p.port for p in nodes["a"].bifts[bid].neighbors} == {"to-b", "to-c"}  # d via b (name order), e via c
    before = {n: r.writes for n, r in nodes.items()}
    # a sends d's bit to c now; b reaches d and e through a; d reaches a through c. c and e keep theirs.
    assert ctl.link_down("b", "d") == 3
    changed = {n for n, r in nodes.items() if r.writes != before[n]}
    assert changed == {"a", "b", "d"}
    (via_c,) = nodes["a"].bifts[bid].neighbors
    assert via_c.port == "to-c" and via_c.fbm == 0b11
    assert nodes["a"].bfirs[("10.200.0.1", "", 9000)].sets == ((bid, 0b11),)  # no tree: the bitstring stays
    assert ctl.link_up("b", "d") == 3
    assert {p.port for p in nodes["a"].bifts[bid].neighbors} == {"to-b", "to-c"}
    assert [h.entries_written for h in ctl.history] == [3, 3]


def test_observe_tells_failed_links_and_nodes() -> None:
    intent, nodes = diamond()
    ctl = BierController(intent, nodes)  # type: ignore[arg-type]
    ctl.install()
    nodes["d"].up["to-c"] = False  # one end's port down is enough
    links, down = ctl.observe()
    assert links == {frozenset(("c", "d"))} and down == set()
    nodes["b"].answers = False  # a BFR that does not answer is down, with its links
    links, down = ctl.observe()
    assert down == {"b"} and links == {frozenset(("c", "d")), frozenset(("a", "b")), frozenset(("b", "d"))}
    ctl.set_state(links, down)
    assert nodes["a"].bifts[bift_id(1, 0)].neighbors[0].port == "to-c"
    # d is cut off (both its links down): its bit goes nowhere, e still gets hers
    (nbr,) = nodes["a"].bifts[bift_id(1, 0)].neighbors
    assert nbr.fbm == 0b10
    nodes["b"].answers = True
    nodes["d"].up["to-c"] = True
    writes_b = nodes["b"].writes
    ctl.set_state(*ctl.observe())
    assert nodes["b"].writes > writes_b  # a BFR that comes back is written whole


def test_a_node_that_fails_during_a_write_is_written_whole_later() -> None:
    intent, nodes = diamond()

    def refuse(entry: Any) -> None:
        raise DataPlaneError("switch b: Write failed: UNAVAILABLE")

    nodes["b"].set_bift = refuse  # type: ignore[method-assign]
    ctl = BierController(intent, nodes)  # type: ignore[arg-type]
    ctl.install()
    assert "b" not in ctl.record and nodes["a"].writes == 2  # a's BIFT entry and its BFIR entry
    del nodes["b"].set_bift
    assert ctl.install() == 1 and "b" in ctl.record


def test_a_domain_without_a_target_for_a_bfr_is_refused() -> None:
    intent, nodes = diamond()
    del nodes["e"]
    with pytest.raises(Exception, match=r"no node programs BFR\(s\) \['e'\]"):
        BierController(intent, nodes)  # type: ignore[arg-type]
