"""The P4Runtime encoding and the P4 target's plans, without a switch: canonical byte strings (P4Runtime s8.4),
entry messages built from the compiled P4Info, and the multicast groups and replica rewrites a BIFT entry
becomes. A switch-side test would pass a wrong plan that happens to forward the vectors; these read it."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import bmv2_tools_or_skip
from dinet.errors import ConfigError
from dinet.targets.p4info import encode


@pytest.mark.parametrize(
    "value,bits,wire",
    [
        (0, 32, b"\x00"),
        (1, 9, b"\x01"),
        (0x1FF, 9, b"\x01\xff"),
        (0x0A000001, 32, b"\x0a\x00\x00\x01"),
        (b"\x00\x05", 16, b"\x05"),
    ],
)
def test_values_are_encoded_in_the_canonical_shortest_form(value: Any, bits: int, wire: bytes) -> None:
    assert encode(value, bits) == wire


def test_a_value_wider_than_its_field_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not fit in 9 bits"):
        encode(512, 9)


class FakeSwitch:
    """Records what a P4Node writes, as a switch would receive it."""

    name = "fake"

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []
        self.groups: dict[int, list[tuple[int, int]]] = {}
        self.deleted_groups: set[int] = set()

    def write(self, entries: list[Any], op: str = "INSERT") -> None:
        self.entries += [(op, e) for e in entries]

    def write_multicast_groups(self, groups: dict[int, list[tuple[int, int]]], op: str = "INSERT") -> None:
        if op == "DELETE":
            self.deleted_groups |= set(groups)
        else:
            self.groups.update(groups)

    def write_clone_session(self, *a: Any, **k: Any) -> None:
        pass


def _node() -> tuple[Any, FakeSwitch]:
    from dinet.targets.base import SteerSizes
    from dinet.targets.p4node import P4Node

    sw = FakeSwitch()
    return P4Node(sw, SteerSizes(max_services=4, max_instances=4, ring_size=13)), sw  # type: ignore[arg-type]


def test_a_bift_entry_becomes_a_group_per_subset_of_neighbours_and_a_rewrite_per_replica() -> None:
    from dinet.packets import bift_id
    from dinet.targets.base import BiftEntry, BiftPort
    from dinet.targets.p4node import LOCAL_RID

    node, sw = _node()
    bid = bift_id(1, 0)
    nbrs = tuple(BiftPort(str(p), f"02:00:00:00:00:0{p}", 1 << (p - 2), "02:00:00:00:00:10") for p in (2, 3, 4))
    node.local_port = 1
    node.set_bift(BiftEntry(bid, 0b1000, nbrs))
    base = 1  # the first BIFT-id's groups start at 1
    members = [(2, 1), (3, 2), (4, 3), (1, LOCAL_RID)]
    assert len(sw.groups) == 2**4 - 1  # every non-empty subset of 3 neighbours and the local port
    for mask in range(1, 16):
        assert sw.groups[base + mask] == [members[i] for i in range(4) if mask >> i & 1]
    replicas = {dict(e.match)["std.egress_rid"]: e for op, e in sw.entries if e.table == "bier_replica"}
    assert {rid: dict(e.params).get("f") for rid, e in replicas.items()} == {1: 0b1, 2: 0b10, 3: 0b100, LOCAL_RID: None}
    assert replicas[LOCAL_RID].action == "local_copy"
    (bift,) = [e for op, e in sw.entries if e.table == "bift"]
    params = dict(bift.params)
    assert params["neighbors"] == 3 and params["local"] == 0b1000 and params["group_base"] == base
    assert [params[f"fbm{i}"] for i in range(8)] == [1, 2, 4, 0, 0, 0, 0, 0]
    # removing it takes every entry and group it made
    node.remove_bift(bid)
    assert {e.table for op, e in sw.entries if op == "DELETE"} == {"bift", "bier_replica"}
    assert sum(1 for op, e in sw.entries if op == "DELETE") == 1 + 4
    assert sw.deleted_groups == set(sw.groups)


def test_fast_reroute_backups_share_the_entrys_groups_and_name_their_f_bms_per_failed_port() -> None:
    """b's entry toward ports 2 (c) and 3 (d), with d's backup through c and a BFER behind port 4 only on the
    backup: port 4 gets a slot of its own (an empty F-BM in the entry), the groups cover all three slots, the
    backup entry is keyed by port 3's bit with its F-BMs slot by slot, its replicas by the same bit; the
    entry watches ports 2 and 3. Written again without the backup, its entries go, the backup first."""
    from dinet.packets import bift_id
    from dinet.targets.base import BiftBackup, BiftEntry, BiftPort
    from dinet.targets.p4node import LOCAL_RID

    node, sw = _node()
    bid = bift_id(1, 0)
    mac = "02:00:00:00:00:10"
    c, d = BiftPort("2", "02:00:00:00:00:02", 0b0010, mac), BiftPort("3", "02:00:00:00:00:03", 0b0100, mac)
    backup = BiftBackup("3", (BiftPort("2", c.dmac, 0b0110, mac), BiftPort("4", "02:00:00:00:00:04", 0b1000, mac)))
    node.set_bift(BiftEntry(bid, 0b0001, (c, d), (backup,)))
    by_table: dict[str, list[Any]] = {}
    for op, e in sw.entries:
        assert op == "INSERT"
        by_table.setdefault(e.table, []).append(e)
    (entry,) = by_table["bift"]
    prm = dict(entry.params)
    assert prm["neighbors"] == 3 and prm["ports"] == 0b1100 and prm["local"] == 0b0001
    assert [prm[f"fbm{i}"] for i in range(4)] == [0b0010, 0b0100, 0, 0]
    assert len(node._groups) == 15 and node._groups[prm["group_base"] + 0b0100] == [(4, 3)]
    (b,) = by_table["bift_backup"]
    assert dict(b.match) == {"hdr.bift.bift_id": bid, "meta.bier_failed": 1 << 3}
    assert [dict(b.params)[f"fbm{i}"] for i in range(4)] == [0b0110, 0, 0b1000, 0]
    rewrites = {
        (dict(e.match)["meta.bier_failed"], dict(e.match)["std.egress_rid"]): e for e in by_table["bier_replica"]
    }
    assert set(rewrites) == {(0, 1), (0, 2), (0, LOCAL_RID), (8, 1), (8, 3), (8, LOCAL_RID)}
    assert dict(rewrites[(8, 1)].params)["f"] == 0b0110 and dict(rewrites[(8, 3)].params)["f"] == 0b1000
    # the entry was written after its backup and rewrites (a port failing in between finds them)
    assert [e.table for _, e in sw.entries][-1] == "bift"
    sw.entries.clear()
    node.set_bift(BiftEntry(bid, 0b0001, (c, d)))
    deleted = [(e.table, dict(e.match).get("std.egress_rid")) for op, e in sw.entries if op == "DELETE"]
    assert deleted[0] == ("bift_backup", None)
    assert sorted(deleted[1:]) == [("bier_replica", 1), ("bier_replica", 3), ("bier_replica", LOCAL_RID)]
    assert dict(next(e for op, e in sw.entries if e.table == "bift").params)["neighbors"] == 2


def test_a_switch_port_needs_its_mac_and_a_number() -> None:
    from dinet.targets.base import BiftEntry, BiftPort

    node, _ = _node()
    with pytest.raises(ConfigError, match="needs its MAC"):
        node.set_bift(BiftEntry(0x10000, 0, (BiftPort("2", "02:00:00:00:00:02", 1),)))
    with pytest.raises(ConfigError, match="a port is a number, not 'eth0'"):
        node.set_bift(BiftEntry(0x10000, 0, (BiftPort("eth0", "02:00:00:00:00:02", 1, "02:00:00:00:00:01"),)))


def test_steering_plan_as_p4_entries_and_messages() -> None:
    """A service with two instances: the entries the plan becomes, then their P4Runtime messages built
    from the compiled P4Info (ids and canonical values), with the weight and site kept as entry metadata."""
    bmv2_tools_or_skip()
    from dinet.model import Instance, ServiceKey
    from dinet.targets.bmv2 import compile_p4
    from dinet.targets.p4rt import P4RuntimeSwitch

    node, sw = _node()
    svc = ServiceKey.parse("10.99.0.1:80/tcp")
    node.add_service(svc)
    node.set_instances(svc, [Instance(7, "192.0.2.7", 3, site_id=2), Instance(9, "2001:db8::9", 1, site_id=5)])
    by_table: dict[str, list[Any]] = {}
    for _, e in sw.entries:
        by_table.setdefault(e.table, []).append(e)
    assert len(by_table["ring"]) == 13
    insts = {dict(e.params)["instance_id"]: e for e in by_table["instances"]}
    assert insts[7].action == "instance4" and insts[9].action == "instance6"
    assert insts[7].metadata == (3).to_bytes(4, "big") + (2).to_bytes(2, "big")
    pipe = compile_p4(node.sizes.defines())
    p4rt = P4RuntimeSwitch("unix:/nonexistent", name="offline")
    try:
        p4rt.use_pipeline(pipe.p4info)
        info = p4rt._info()
        msg = p4rt._table_entry_msg(insts[7])
        assert msg.table_id == info.table("instances").preamble.id
        assert msg.action.action.action_id == info.action("instance4").preamble.id
        params = {p.param_id: p.value for p in msg.action.action.params}
        assert params[info.param("instance4", "endpoint").id] == bytes([192, 0, 2, 7])
        assert params[info.param("instance4", "instance_id").id] == b"\x07"
        assert msg.metadata == insts[7].metadata
        svc_msg = p4rt._table_entry_msg(by_table["services_v4"][-1])
        fields = {m.field_id: m.exact.value for m in svc_msg.match}
        assert fields[info.match_field("services_v4", "hdr.ipv4.dst").id] == bytes([10, 99, 0, 1])
        assert fields[info.match_field("services_v4", "hdr.l4.dport").id] == b"\x50"
    finally:
        p4rt.close()


def test_a_bift_entry_whose_neighbours_shrink_and_grow_keeps_the_switch_consistent() -> None:
    """Groups and replicas the switch has are modified, new ones inserted, those no longer named deleted: a
    MODIFY of a group the switch never had (a neighbour set that grew after a failure healed) fails there."""
    from dinet.packets import bift_id
    from dinet.targets.base import BiftEntry, BiftPort

    node, sw = _node()
    bid = bift_id(1, 0)
    three = tuple(BiftPort(str(p), f"02:00:00:00:00:0{p}", 1 << (p - 2), "02:00:00:00:00:10") for p in (2, 3, 4))
    node.set_bift(BiftEntry(bid, 0, three))
    sw.entries.clear()
    node.set_bift(BiftEntry(bid, 0, (BiftPort("2", "02:00:00:00:00:02", 0b111, "02:00:00:00:00:10"),)))
    deleted = [dict(e.match)["std.egress_rid"] for op, e in sw.entries if op == "DELETE"]
    assert sorted(deleted) == [2, 3] and set(node._groups) == {2, 3, 4}  # masks 1..3 of one neighbour + local
    assert sw.deleted_groups == {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
    sw.entries.clear()
    node.set_bift(BiftEntry(bid, 0, three))
    ops = {(op, dict(e.match).get("std.egress_rid")) for op, e in sw.entries if e.table == "bier_replica"}
    assert ("INSERT", 2) in ops and ("INSERT", 3) in ops and ("MODIFY", 1) in ops
    assert len(node._groups) == 15


class StrictSwitch(FakeSwitch):
    """A switch that holds what it is given as P4Runtime does (INSERT of an entry it has: ALREADY_EXISTS;
    MODIFY of one it lacks: NOT_FOUND) and can refuse one write call (the `fail_at`-th)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[Any, Any] = {}
        self.calls = 0
        self.fail_at = 0

    def write(self, entries: list[Any], op: str = "INSERT") -> None:
        from dinet.errors import DataPlaneError
        from dinet.targets.p4node import _key

        self.calls += 1
        if self.calls == self.fail_at:
            raise DataPlaneError("the switch refused the write (injected)")
        for e in entries:
            k = _key(e)
            if op == "INSERT" and not e.is_default and k in self.held:
                raise DataPlaneError(f"ALREADY_EXISTS: {k}")
            if op == "MODIFY" and not e.is_default and k not in self.held:
                raise DataPlaneError(f"NOT_FOUND: {k}")
        for e in entries:
            if op == "DELETE":
                self.held.pop(_key(e), None)
            else:
                self.held[_key(e)] = e
        super().write(entries, op)

    def p4info_tables(self) -> list[str]:
        return sorted({k[0] for k in self.held})

    def read_table(self, table: str) -> list[Any]:
        return [e for k, e in self.held.items() if k[0] == table]

    def read_multicast_groups(self) -> dict[int, list[tuple[int, int]]]:
        return dict(self.groups)


def test_a_write_that_fails_half_way_leaves_the_record_as_the_switch_holds_it() -> None:
    """A third instance's entries are inserted, then the switch refuses the ring write. The record follows the
    switch (read back), so the same decision written again succeeds (no ALREADY_EXISTS until a resync) and
    the switch ends up holding exactly the plan."""
    from dinet.errors import DataPlaneError
    from dinet.model import Instance, ServiceKey
    from dinet.targets.base import SteerSizes
    from dinet.targets.p4node import P4Node

    sw = StrictSwitch()
    node = P4Node(sw, SteerSizes(max_services=4, max_instances=4, ring_size=13))  # type: ignore[arg-type]
    svc = ServiceKey.parse("10.99.0.1:80/tcp")
    node.add_service(svc)
    two = [Instance(1, "192.0.2.1", 1), Instance(2, "192.0.2.2", 1)]
    node.set_instances(svc, two)
    three = [*two, Instance(3, "192.0.2.3", 1)]
    sw.fail_at = sw.calls + 2  # the new slot's INSERT goes through, the ring's write is refused
    with pytest.raises(DataPlaneError, match="injected"):
        node.set_instances(svc, three)
    assert {i.instance_id for i in node.service(svc).instances.values()} == {1, 2, 3}  # as the switch holds it
    node.set_instances(svc, three)
    live = node.service(svc)
    assert {i.instance_id for i in live.instances.values()} == {1, 2, 3}
    assert set(node.ring(svc)) == set(live.instances)  # the live ring half holds every slot, nothing else
