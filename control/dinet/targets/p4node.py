"""The dinet pipeline on a P4Runtime switch (p4/dinet.p4 on BMv2): the same operations as the XDP steering
node and the TC BIER node, turned into table, default-action and multicast-group writes."""

from __future__ import annotations

import ipaddress
import itertools
import logging
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .. import consts
from ..errors import ConfigError, DataPlaneError, InterfaceError, TableFullError, UnknownServiceError
from ..model import Instance, InstanceLoad, InstanceState, IPAddress, ServiceKey, parse_address
from ..policy.bift import BfirEntry, BiftEntry, BiftPort
from ..policy.steering import plan_instances
from ..rfc8296 import split_bift_id
from .base import (
    Counter,
    InstanceEdits,
    ServiceState,
    SteerSizes,
    TreeHopPort,
    TreeReplicaPort,
    TreeRoot,
    svc_flags,
)
from .netns import LinkEvents, PortMonitor, ifindex, links_up
from .p4rt import P4RuntimeSwitch, TableEntry

C = consts.load()
log = logging.getLogger(__name__)
LOCAL_RID = 0xFFFF
BFIR_CLONE_SESSION = 500  # BIER_BFIR_CLONE_SESSION in p4/bier.p4
GROUPS_PER_BIFT = 512
# multicast group ids: BMv2 takes 1..0x7FFF (0x8000 is refused). BIER's from 1 up, GROUPS_PER_BIFT per
# BIFT-id (47 BIFT-ids); the trees' from TREE_GROUP_BASE, two per replication segment (its replicas; its
# replicas and the local port): TREE_MAX_SEGMENTS of them
GROUP_LIMIT = 0x8000
TREE_GROUP_BASE = GROUP_LIMIT - 2 * C["TREE_MAX_SEGMENTS"]
MAX_TREE_SEGMENTS = C["TREE_MAX_SEGMENTS"]


def _inst_meta(inst: Instance) -> bytes:
    """What the switch keeps beside an instance entry for a controller that reads it back: the weight and the
    site (the data plane needs neither: weights live in the ring)."""
    return struct.pack(">IH", inst.weight, inst.site_id)


def _key(e: TableEntry) -> tuple[str, Any]:
    return (e.table, "default" if e.is_default else tuple(sorted(e.match)))


def _mac(text: str) -> int:
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        raise ConfigError(f"not a MAC address: {text!r}")
    return int.from_bytes(raw, "big")


@dataclass
class _Svc:
    svc_id: int
    ring_sel: int
    gen: int
    instances: dict[int, Instance] = field(default_factory=dict)
    flags: int = 0  # DINET_SVC_*


@dataclass(frozen=True)
class P4Neighbor:
    port: int
    smac: str
    dmac: str
    fbm: int


def open_p4node(sw: P4RuntimeSwitch, pipeline: Any, sizes: SteerSizes, set_pipeline: bool = True) -> P4Node:
    """A P4Node on a connected switch. A switch that already runs this pipeline (same cookie: a controller
    restart) is adopted: its entries are read back, nothing is written, its registers (affinity) are kept.
    Otherwise the pipeline is set, unless set_pipeline is False (then it is an error)."""
    node = P4Node(sw, sizes)
    node.pipeline = pipeline
    ours = sw.pipeline_cookie(pipeline.p4info, pipeline.json)
    running = sw.running_cookie()
    if running == ours:
        sw.use_pipeline(pipeline.p4info)
        n = node.adopt()
        log.info("switch %s runs this pipeline: adopted %d entries", sw.name, n)
    elif set_pipeline:
        sw.set_pipeline(pipeline.p4info, pipeline.json)
    else:
        raise DataPlaneError(
            f"switch {sw.name} runs another pipeline (cookie {running}) and set_pipeline is false: "
            "compile with the same sizes, or let dinet set it"
        )
    return node


def _free_slot(used: dict[int, int]) -> int:
    """The lowest slot no key holds (slots of removed entries are reused)."""
    taken = set(used.values())
    return next(i for i in itertools.count() if i not in taken)


ENTRY_TABLES = ("vip_v4", "vip_v6", "services_v4", "services_v6")  # a steered packet's first lookups


class P4Node(InstanceEdits):
    """Steering and BIER on one P4Runtime switch whose pipeline is dinet.p4 (compiled with `sizes`)."""

    fast_reroute = True  # backups in bift_backup, used while the link monitor (monitor_ports) says a port is down

    def __init__(self, switch: P4RuntimeSwitch, sizes: SteerSizes):
        self.sw = switch
        self.sizes = sizes
        self._svcs: dict[ServiceKey, _Svc] = {}
        self._gen = itertools.count(1)
        self._vips: dict[IPAddress, int] = {}
        self._bift_index: dict[int, int] = {}
        self._tree_index: dict[int, int] = {}  # replication SID -> its segment's slot (multicast groups)
        self._bfir: set[Any] = set()
        # what the switch should hold: replayed after the switch restarts (resync)
        self._entries: dict[tuple[str, Any], TableEntry] = {}
        self._groups: dict[int, list[tuple[int, int]]] = {}
        self.pipeline: Any = None  # the compiled pipeline, for resync (set by whoever set it)
        self._clone_session = False
        self.writes = 0  # entries written to the switch by this process
        self.local_port = 1  # where a BFER's local copies leave (the host port)
        self.port_names: dict[int, str] = {}  # port number -> interface, for link state (optional)
        self.port_netns: str | None = None
        self._events: LinkEvents | None = None
        self._monitor: PortMonitor | None = None  # fast reroute's link monitor, once monitor_ports ran
        self._port_of: dict[int, int] = {}  # ifindex -> port number, for the monitor
        self._down: dict[int, int] = {}  # port -> when its link went (CLOCK_MONOTONIC ns)
        self._down_written = True  # whether the switch holds _down (a failed write is retried by check)
        self.port_state_errors = 0
        self.ports_told_ns = 0  # when the switch last acknowledged the ports that are down (CLOCK_MONOTONIC)
        self._stale = False  # a write failed half-way and the switch could not be read back: read before writing
        # services whose live ring this process wrote from their instances as they are: only these may skip
        # the ring for a load alone (after a write cut short, or a switch adopted, the ring is written again)
        self._ring_ok: set[int] = set()

    def _write(self, entries: list[TableEntry], op: str = "INSERT") -> None:
        self.sw.write(entries, op)
        self.writes += len(entries)
        for e in entries:
            key = _key(e)
            if op == "DELETE":
                self._entries.pop(key, None)
            else:
                self._entries[key] = e

    def _write_groups(self, groups: dict[int, list[tuple[int, int]]], op: str) -> None:
        self.sw.write_multicast_groups(groups, op)
        self._groups.update(groups)

    def resync(self, p4info: Any, device_config: Any, set_pipeline: bool = True) -> int:
        """After the switch restarted (its tables empty): set the pipeline (unless it already runs it) and
        write back everything this node had written. Returns the number of entries and groups written."""
        if set_pipeline:
            self.sw.set_pipeline(p4info, device_config)
        self.sw.write_multicast_groups(self._groups, "INSERT")
        if self._clone_session:
            self.sw.write_clone_session(BFIR_CLONE_SESSION, [(0, 1)])
        defaults = [e for e in self._entries.values() if e.is_default]
        # what a packet meets first goes last: until a service's VIP is back, its flows find no half-written
        # service (a ring pointing at instances not yet there) and their SYNs are retried, not misplaced
        others = sorted((e for e in self._entries.values() if not e.is_default), key=lambda e: e.table in ENTRY_TABLES)
        self.sw.write(defaults)
        self.sw.write(others, "INSERT")
        return len(self._entries) + len(self._groups)

    def check(self, retries: int = 3) -> str:
        """What `dinet run` does every half second: is the switch there and holding what was written?
        'ok'; 'reconnected' (a transient failure: the same pipeline with its tables and registers is still
        there, nothing written); 'resynced' (a restarted switch: pipeline set again, entries written back);
        'away' (no answer: try again later). A failed read never wipes state."""
        try:
            self.sw.read_table("host_port")
            if not self._down_written:
                self._write_ports_down()
            return "ok"
        except DataPlaneError as e:
            log.warning("%s", e)
        for _ in range(retries):
            try:
                self.sw.reconnect()
                running = self.sw.running_cookie()
                break
            except DataPlaneError as e:
                log.warning("switch %s: %s", self.sw.name, e)
        else:
            return "away"
        ours = P4RuntimeSwitch.pipeline_cookie(self.pipeline.p4info, self.pipeline.json)
        if running == ours:
            self.sw.use_pipeline(self.pipeline.p4info)
            held = sum(len(self.sw.read_table(t)) for t in ("services_v4", "services_v6", "bift"))
            if held or not (self._svcs or self._bift_index):
                return "reconnected"
            n = self.resync(self.pipeline.p4info, self.pipeline.json, set_pipeline=False)
        else:
            n = self.resync(self.pipeline.p4info, self.pipeline.json)
        log.warning("switch %s: restarted; %d entries and groups written again", self.sw.name, n)
        return "resynced"

    def adopt(self) -> int:
        """Reads back what a running switch holds (a controller restart against a live switch): services,
        instances, live ring halves, VIPs, BIFT and BFIR entries, multicast groups. Nothing is written, so no
        remembered flow moves. Returns the number of entries read."""
        sw = self.sw
        entries: dict[tuple[str, Any], TableEntry] = {}
        for table in sw.p4info_tables():
            for e in sw.read_table(table):
                entries[_key(e)] = e
        svcs: dict[ServiceKey, _Svc] = {}
        by_id: dict[int, _Svc] = {}
        protos = {6: "tcp", 17: "udp"}
        for (table, _), e in entries.items():
            if table in ("services_v4", "services_v6"):
                m, prm = dict(e.match), dict(e.params)
                fam = "ipv4" if table.endswith("v4") else "ipv6"
                vip = (
                    ipaddress.ip_address(m[f"hdr.{fam}.dst"])
                    if fam == "ipv4"
                    else ipaddress.IPv6Address(m[f"hdr.{fam}.dst"])
                )
                key = ServiceKey(vip, m["hdr.l4.dport"], protos.get(m["meta.l4_proto"], "tcp"))
                st = _Svc(prm["svc_id"], prm["ring_sel"], prm["gen"], flags=prm.get("flags", 0))
                svcs[key], by_id[st.svc_id] = st, st
        loads: dict[tuple[int, int], InstanceLoad] = {}
        for (table, _), e in entries.items():
            m, prm = dict(e.match), dict(e.params)
            if table == "instances" and m["meta.svc_id"] in by_id:
                weight, site = struct.unpack(">IH", e.metadata) if len(e.metadata) == 6 else (1, 0)
                ep = prm["endpoint"]
                addr = ipaddress.IPv4Address(ep) if e.action == "instance4" else ipaddress.IPv6Address(ep)
                by_id[m["meta.svc_id"]].instances[m["meta.slot"]] = Instance(
                    prm["instance_id"], addr, weight, InstanceState(prm["state"]), site
                )
            elif table == "load_a" and m["meta.svc_id"] in by_id and prm["gen"]:
                loads[(m["meta.svc_id"], m["meta.slot"])] = InstanceLoad(
                    prm["value"], prm["step"], prm["free"], prm["gen"], prm["each"]
                )
            elif table == "bift":
                self._bift_index[m["hdr.bift.bift_id"]] = (prm["group_base"] - 1) // GROUPS_PER_BIFT
            elif table == "tree_segment":
                self._tree_index[m["meta.tree_rep"]] = (prm["group"] - TREE_GROUP_BASE) // 2
            elif table.startswith("bfir_"):
                self._bfir.add((table, tuple(sorted(e.match))))
                self._clone_session |= prm.get("sets", 1) > 1
        for (sid, slot), ld in loads.items():
            if slot in by_id[sid].instances:
                by_id[sid].instances[slot] = replace(by_id[sid].instances[slot], load=ld)
        self._svcs = svcs
        self._ring_ok = set()  # what the rings hold is not known from entries read back
        self._vips = {}
        for key in svcs:
            self._vips[key.vip] = self._vips.get(key.vip, 0) + 1
        self._gen = itertools.count(max((s.gen for s in svcs.values()), default=0) + 1)
        # what the switch holds, and the default actions (a read of a table returns its entries only): an
        # entry a half-done write took away is no longer counted as there
        self._entries = {k: e for k, e in self._entries.items() if e.is_default} | entries
        self._groups = sw.read_multicast_groups()
        return len(entries)

    def services(self) -> list[ServiceState]:
        return sorted((self.service(k) for k in self._svcs), key=lambda s: s.svc_id)

    def remove_service(self, svc: ServiceKey) -> None:
        """Removes a service (its packets then pass untouched): its entry, instances and ring."""
        st = self._state(svc)
        gone = [self._svc_entry(svc, st)]
        gone += [e for slot, inst in st.instances.items() for e in self._inst_entries(st, slot, inst)]
        gone += [
            e
            for e in self._entries.values()
            if e.table in ("ring", "ring_b", "load_a", "load_b") and dict(e.match)["meta.svc_id"] == st.svc_id
        ]
        self._vips[svc.vip] -= 1
        if not self._vips[svc.vip]:
            fam = "ipv4" if svc.vip.version == 4 else "ipv6"
            gone.append(TableEntry(f"vip_v{svc.vip.version}", ((f"hdr.{fam}.dst", int(svc.vip)),), "NoAction"))
            del self._vips[svc.vip]
        self._write(gone, "DELETE")
        del self._svcs[svc]
        self._ring_ok.discard(st.svc_id)

    # ---- steering ------------------------------------------------------------------------------------
    def configure(
        self,
        src4: str | IPAddress | None = None,
        src6: str | IPAddress | None = None,
        static_next_hop: tuple[int, str, str] | None = None,
        host_port: int = 1,
        pass_ports: dict[int, int] | None = None,
    ) -> None:
        """Tunnel sources; the next hop of tunnelled packets (port 0: back out of the ingress port, as
        XDP_TX); where traffic that is not steered goes: `host_port`, or per ingress port `pass_ports`."""
        s4 = int(parse_address(src4)) if src4 is not None else 0
        s6 = int(parse_address(src6)) if src6 is not None else 0
        writes = [
            TableEntry("tunnel_source", (), "set_sources", (("src4", s4), ("src6", s6)), is_default=True),
            TableEntry("host_port", (), "pass_to", (("port", host_port),), is_default=True),
        ]
        writes += [
            TableEntry("host_port", (("std.ingress_port", i),), "pass_to", (("port", o),))
            for i, o in sorted((pass_ports or {}).items())
        ]
        if static_next_hop:
            port, smac, dmac = static_next_hop
            if port == 0:
                writes.append(
                    TableEntry(
                        "next_hop", (), "back_out", (("smac", _mac(smac)), ("dmac", _mac(dmac))), is_default=True
                    )
                )
            else:
                writes.append(
                    TableEntry(
                        "next_hop",
                        (),
                        "via",
                        (("port", port), ("smac", _mac(smac)), ("dmac", _mac(dmac))),
                        is_default=True,
                    )
                )
        # idempotent: a restarted controller configures a switch it adopted (entries there already)
        held = [e for e in writes if _key(e) in self._entries]
        changed = [e for e in held if self._entries[_key(e)] != e]
        if changed:
            self._write(changed, "MODIFY")
        fresh = [e for e in writes if _key(e) not in self._entries]
        if fresh:
            self._write(fresh)

    def _svc_entry(self, svc: ServiceKey, st: _Svc) -> TableEntry:
        table = "services_v4" if svc.vip.version == 4 else "services_v6"
        return TableEntry(
            table,
            (
                ("hdr." + ("ipv4" if svc.vip.version == 4 else "ipv6") + ".dst", int(svc.vip)),
                ("meta.l4_proto", svc.proto_number),
                ("hdr.l4.dport", svc.port),
            ),
            "set_service",
            (("svc_id", st.svc_id), ("ring_sel", st.ring_sel), ("gen", st.gen), ("flags", st.flags)),
        )

    def add_service(self, svc: ServiceKey, session: bool = False, two_choices: bool = False) -> int:
        flags = svc_flags(session, two_choices)
        if svc in self._svcs:
            st = self._svcs[svc]
            if st.flags != flags:  # flows already placed stay where they are
                st.flags = flags
                if two_choices:  # its second ring and loads before the flag that makes them read
                    self._write_changed(self._ring_entries("ring_b", st, st.ring_sel, self._live_ring(st)))
                    self._sync_loads(st, self._load_entries(st, st.instances))
                self._write([self._svc_entry(svc, st)], "MODIFY")
            return st.svc_id
        used = {s.svc_id for s in self._svcs.values()}
        free = next((i for i in range(self.sizes.max_services) if i not in used), None)
        if free is None:
            raise TableFullError(f"switch {self.sw.name}: the service table is full ({self.sizes.max_services})")
        st = _Svc(free, 0, next(self._gen), flags=flags)
        writes = []
        if self._vips.get(svc.vip, 0) == 0:
            fam = "ipv4" if svc.vip.version == 4 else "ipv6"
            writes.append(TableEntry(f"vip_v{svc.vip.version}", ((f"hdr.{fam}.dst", int(svc.vip)),), "NoAction"))
        writes.append(self._svc_entry(svc, st))
        self._write(writes)
        self._vips[svc.vip] = self._vips.get(svc.vip, 0) + 1
        self._svcs[svc] = st
        return free

    def _state(self, svc: ServiceKey) -> _Svc:
        try:
            return self._svcs[svc]
        except KeyError:
            raise UnknownServiceError(f"no service {svc} on switch {self.sw.name}") from None

    def service(self, svc: ServiceKey) -> ServiceState:
        st = self._state(svc)
        return ServiceState(
            svc,
            st.svc_id,
            st.ring_sel,
            dict(st.instances),
            bool(st.flags & C["DINET_SVC_SESSION"]),
            bool(st.flags & C["DINET_SVC_TWO_CHOICES"]),
        )

    def _live_ring(self, st: _Svc) -> list[int]:
        """The ring the service's live half holds (planned again from the record: the same inputs, the same ring)."""
        return plan_instances(
            ServiceKey.parse("0.0.0.0:1/tcp"), st.instances, list(st.instances.values()), self.sizes.max_instances,
            self.sizes.ring_size,
        ).ring  # fmt: skip

    def _ring_entries(self, table: str, st: _Svc, sel: int, ring: list[int]) -> list[TableEntry]:
        idx = "meta.ring_idx" if table == "ring" else "ring_idx_b"
        act = "set_slot" if table == "ring" else "set_slot_b"
        return [
            TableEntry(table, (("meta.svc_id", st.svc_id), ("meta.ring_sel", sel), (idx, i)), act,
                       (("slot", slot & 0xFFFF),))
            for i, slot in enumerate(ring)
        ]  # fmt: skip

    def _load_entries(self, st: _Svc, instances: dict[int, Instance]) -> dict[tuple[str, Any], TableEntry]:
        """A two-choices service's load entries: one in each of load_a and load_b per instance that is up."""
        out = {}
        for slot, inst in instances.items():
            if inst.state != InstanceState.UP:
                continue
            ld = inst.load
            params = (
                ("value", ld.value if ld else 0),
                ("step", ld.step if ld else 1),  # no load written: each flow placed counts 1, as on XDP
                ("free", ld.free if ld else 0),
                ("gen", ld.seq if ld else 0),
                ("each", ld.each if ld else 0),
            )
            for table, slot_field in (("load_a", "meta.slot"), ("load_b", "slot_b")):
                e = TableEntry(table, (("meta.svc_id", st.svc_id), (slot_field, slot)), f"set_{table}", params)
                out[_key(e)] = e
        return out

    def _write_changed(self, entries: list[TableEntry]) -> None:
        """Writes only the entries the switch does not hold as given (new ones inserted, others modified): a
        ring half rewritten for a weight change moves few of its 4,096 slots, and BMv2 takes about a second
        for the whole half under load."""
        fresh, changed = [], []
        for e in entries:
            have = self._entries.get(_key(e))
            if have is None:
                fresh.append(e)
            elif have.action != e.action or sorted(have.params) != sorted(e.params):
                changed.append(e)
        if fresh:
            self._write(fresh, "INSERT")
        if changed:
            self._write(changed, "MODIFY")

    def _sync_loads(self, st: _Svc, want: dict[tuple[str, Any], TableEntry]) -> None:
        """Makes `want` the service's load entries: removed, added and changed ones written."""
        gone = [
            e
            for k, e in self._entries.items()
            if e.table in ("load_a", "load_b") and dict(e.match)["meta.svc_id"] == st.svc_id and k not in want
        ]
        if gone:
            self._write(gone, "DELETE")
        self._write_changed(list(want.values()))

    def _inst_entries(self, st: _Svc, slot: int, inst: Instance) -> list[TableEntry]:
        key = (("meta.svc_id", st.svc_id), ("meta.slot", slot))
        if inst.endpoint.version == 4:
            act = "instance4"
        else:
            act = "instance6"
        params = (("endpoint", int(inst.endpoint)), ("state", int(inst.state)), ("instance_id", inst.instance_id))
        return [
            TableEntry("instances", key, act, params, metadata=_inst_meta(inst)),
            TableEntry("instance_check", key, "check", (("state", int(inst.state)), ("instance_id", inst.instance_id))),
        ]

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        """Writes the instance set in the order that never strands a flow (new slots, then the other ring half,
        then the service entry that switches to it, then what was freed). A write that fails half-way leaves
        the record as the switch holds it: read back at once, or before the next write if the switch is away."""
        if self._stale:
            self.adopt()
            self._stale = False
        try:
            self._set_instances(svc, instances)
        except DataPlaneError:
            try:
                self.adopt()
            except DataPlaneError:
                self._stale = True
            raise

    def _set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        st = self._state(svc)
        plan = plan_instances(svc, st.instances, instances, self.sizes.max_instances, self.sizes.ring_size)
        ring_known = st.svc_id in self._ring_ok
        self._ring_ok.discard(st.svc_id)  # until this write is through
        inserts = [
            e
            for slot, inst in plan.changed.items()
            if slot not in st.instances
            for e in self._inst_entries(st, slot, inst)
        ]
        modifies = [
            e for slot, inst in plan.changed.items() if slot in st.instances for e in self._inst_entries(st, slot, inst)
        ]
        if inserts:
            self._write(inserts, "INSERT")
        if modifies:
            self._write(modifies, "MODIFY")
        two = bool(st.flags & C["DINET_SVC_TWO_CHOICES"])
        after = {plan.placed[i.instance_id]: i for i in instances}
        if two:  # loads of the instances that stay or come, before the ring names them
            self._sync_loads(st, self._load_entries(st, after) | self._load_entries(st, {
                s: i for s, i in st.instances.items() if s not in after}))  # fmt: skip
        if plan.ring_changed or not ring_known:  # a load alone changes no ring
            sel = st.ring_sel ^ 1  # the staged half: only its slots that change are written
            if two:
                self._write_changed(self._ring_entries("ring_b", st, sel, plan.ring))
            self._write_changed(self._ring_entries("ring", st, sel, plan.ring))
            st.ring_sel = sel
            self._write([self._svc_entry(svc, st)], "MODIFY")
        gone = [e for slot in plan.freed for e in self._inst_entries(st, slot, st.instances[slot])]
        if gone:
            self._write(gone, "DELETE")
        st.instances = after
        if two:
            self._sync_loads(st, self._load_entries(st, after))
        self._ring_ok.add(st.svc_id)

    def ring(self, svc: ServiceKey) -> list[int]:
        """The live ring, read back from the switch."""
        st = self._state(svc)
        out = [C["DINET_SLOT_NONE"]] * self.sizes.ring_size
        for e in self.sw.read_table("ring"):
            m = dict(e.match)
            if m["meta.svc_id"] == st.svc_id and m["meta.ring_sel"] == st.ring_sel:
                slot = dict(e.params)["slot"]
                out[m["meta.ring_idx"]] = C["DINET_SLOT_NONE"] if slot == 0xFFFF else slot
        return out

    def verdicts(self) -> dict[str, int]:
        names = consts.verdict_names() | {C["DINET_AFFINITY_COLLISION"]: "affinity_collision"}
        cells = self.sw.read_counters("steering.verdicts")
        return {names[i]: cells.get(i, (0, 0))[0] for i in sorted(names) if "decap" not in names[i]}

    def service_counters(self, svc: ServiceKey) -> tuple[Counter, dict[int, Counter]]:
        st = self._state(svc)
        base = st.svc_id * self.sizes.max_instances
        kinds = ("stats", "new_flows", "session_flows", "sessions", "sessions_replaced")
        # the service's cell and its instances' cells only, in one Read (not the whole arrays)
        slots = [base + s for s in st.instances]
        got = self.sw.read_counter_cells({f"svc_{k}": [st.svc_id] for k in kinds} | {f"inst_{k}": slots for k in kinds})
        stats, new, *svc_kinds = (got[f"svc_{k}"] for k in kinds)
        istats, inew, *inst_kinds = (got[f"inst_{k}"] for k in kinds)
        zero = (0, 0)

        def counter(
            cells: dict[int, tuple[int, int]], flows: dict[int, tuple[int, int]], more: list, i: int
        ) -> Counter:  # type: ignore[type-arg]
            return Counter(cells.get(i, zero)[0], cells.get(i, zero)[1], flows.get(i, zero)[0],
                           *(m.get(i, zero)[0] for m in more))  # fmt: skip

        per = {i.instance_id: counter(istats, inew, inst_kinds, base + s) for s, i in st.instances.items()}
        return counter(stats, new, svc_kinds, st.svc_id), per

    # ---- BIER ------------------------------------------------------------------------------------------
    def write_bift(
        self,
        bift_id: int,
        local: int,
        neighbors: list[P4Neighbor],
        local_port: int = 1,
        backups: dict[int, list[P4Neighbor]] | None = None,
    ) -> None:
        """This BFR's entry for one BIFT-id, with a multicast group for every set of neighbours (and the
        local port) a bitstring can select, and the per-replica rewrite of each neighbour's copies.
        Fast reroute (`backups`: a port -> the entry's neighbours while it is down): a backup neighbour the
        entry does not name gets a slot too (an empty F-BM until then), so a backup selects the entry's own
        groups; each backup is a bift_backup entry (its F-BMs slot by slot) and its replicas' rewrites. Only
        ports below 64 can be watched (the program's mask)."""
        bsl, _, _ = split_bift_id(bift_id)
        if bsl not in (1, 2, 3):
            raise ConfigError(f"this data plane forwards BSL 64, 128 and 256 bits (codes 1-3), not code {bsl}")
        backups = {p: b for p, b in (backups or {}).items() if p < 64}
        slots, ports = list(neighbors), {x.port for x in neighbors}
        for _, nbrs in sorted(backups.items()):
            for x in nbrs:
                if x.port not in ports:
                    slots.append(P4Neighbor(x.port, x.smac, x.dmac, 0))
                    ports.add(x.port)
        if len(slots) > 8:
            raise TableFullError(f"BIFT-id {bift_id:#x}: {len(slots)} neighbours; the P4 program holds 8")
        fresh = bift_id not in self._bift_index
        idx = self._bift_index.get(bift_id, _free_slot(self._bift_index))
        base = 1 + idx * GROUPS_PER_BIFT
        if base + GROUPS_PER_BIFT > TREE_GROUP_BASE:
            raise TableFullError(f"switch {self.sw.name}: no multicast groups left for BIFT-id {bift_id:#x}")
        self._bift_index[bift_id] = idx
        n = len(slots)
        fbms = [x.fbm for x in slots] + [0] * (8 - n)
        watched = sum(1 << x.port for x in neighbors if x.port < 64)
        params = (
            ("group_base", base),
            ("neighbors", n),
            ("ports", watched),
            ("local", local),
            *((f"fbm{i}", fbms[i]) for i in range(8)),
        )
        groups = {}
        members = [(x.port, i + 1) for i, x in enumerate(slots)] + [(local_port, LOCAL_RID)]
        for mask in range(1, 1 << (n + 1)):
            groups[base + mask] = [members[i] for i in range(n + 1) if mask >> i & 1]

        def replicas(failed: int, fbm: list[int]) -> list[TableEntry]:
            out = [
                TableEntry(
                    "bier_replica",
                    (("hdr.bift.bift_id", bift_id), ("meta.bier_failed", failed), ("std.egress_rid", i + 1)),
                    "nbr_copy",
                    (("f", f), ("smac", _mac(x.smac)), ("dmac", _mac(x.dmac))),
                )
                for i, (x, f) in enumerate(zip(slots, fbm, strict=False))
                if f
            ]
            out.append(
                TableEntry(
                    "bier_replica",
                    (("hdr.bift.bift_id", bift_id), ("meta.bier_failed", failed), ("std.egress_rid", LOCAL_RID)),
                    "local_copy",
                )
            )
            return out

        extra = replicas(0, fbms)
        for port, nbrs in sorted(backups.items()):
            by_port = {x.port: x.fbm for x in nbrs}
            b_fbms = [by_port.get(x.port, 0) for x in slots] + [0] * (8 - n)
            extra += replicas(1 << port, b_fbms)
            extra.append(
                TableEntry(
                    "bift_backup",
                    (("hdr.bift.bift_id", bift_id), ("meta.bier_failed", 1 << port)),
                    "backup_entry",
                    tuple((f"fbm{i}", b_fbms[i]) for i in range(8)),
                )
            )
        # groups, rewrites and backups the switch has are modified, new ones inserted, then the entry that
        # names them is written (a port that goes down in between finds its backup there), and last what the
        # entry no longer names is deleted (a neighbour set may grow or shrink)
        old_groups = {g for g in self._groups if base <= g < base + GROUPS_PER_BIFT}
        self._write_groups({g: m for g, m in groups.items() if g not in old_groups}, "INSERT")
        self._write_groups({g: m for g, m in groups.items() if g in old_groups}, "MODIFY")
        old = {
            _key(e): e
            for e in self._entries.values()
            if e.table in ("bier_replica", "bift_backup") and dict(e.match)["hdr.bift.bift_id"] == bift_id
        }
        self._write([e for e in extra if _key(e) not in old], "INSERT")
        self._write([e for e in extra if _key(e) in old], "MODIFY")
        self._write(
            [TableEntry("bift", (("hdr.bift.bift_id", bift_id),), "bift_entry", params)],
            "INSERT" if fresh else "MODIFY",
        )
        kept = {_key(e) for e in extra}
        # backups before the rewrites they name
        self._write(
            sorted((e for k, e in old.items() if k not in kept), key=lambda e: e.table != "bift_backup"), "DELETE"
        )
        stale_groups = {g: self._groups[g] for g in old_groups - set(groups)}
        if stale_groups:
            self.sw.write_multicast_groups(stale_groups, "DELETE")
            for g in stale_groups:
                del self._groups[g]

    def write_bfir(
        self,
        dst: IPAddress | str,
        bfir_id: int,
        bsl_code: int,
        sets: dict[int, int],
        src: IPAddress | str | None = None,
        udp_port: int = 0,
    ) -> None:
        """Traffic matching the entry goes to the BFERs of `sets` (BIFT-id -> bit mask, up to four sets: the
        program sends one set per pass, recirculating for the next)."""
        if not 1 <= len(sets) <= C["BIER_MAX_SI_PER_GROUP"]:
            raise ConfigError(f"a BFIR entry names 1 to {C['BIER_MAX_SI_PER_GROUP']} sets, not {len(sets)}")
        for bid in sets:
            if split_bift_id(bid)[0] != bsl_code:
                raise ConfigError(f"BIFT-id {bid:#x} is not of BSL code {bsl_code}")
        if len(sets) > 1 and not self._clone_session:
            self.sw.write_clone_session(BFIR_CLONE_SESSION, [(0, 1)])
            self._clone_session = True
        ordered = sorted(sets.items()) + [(0, 0)] * (C["BIER_MAX_SI_PER_GROUP"] - len(sets))
        params: tuple[tuple[str, int], ...] = (("bsl", bsl_code), ("bfir_id", bfir_id), ("sets", len(sets)))
        for i, (bid, bits) in enumerate(ordered):
            params += ((f"bift{i}", bid), (f"bits{i}", bits))
        table, key = self._root_key("bfir", dst, src, udp_port)
        op = "MODIFY" if (table, tuple(sorted(key))) in self._bfir else "INSERT"
        self._write([TableEntry(table, key, "push", params)], op)
        self._bfir.add((table, tuple(sorted(key))))

    # ---- SR-P2MP trees (the baseline; p4/tree.p4) --------------------------------------------------------
    def write_tree_node(self, node_sid: int, hop: P4Neighbor | None) -> None:
        """How this switch forwards frames whose top label is node_sid: toward hop (port and MACs; its fbm is
        not used), or None: the switch's own SID (its replication segments)."""
        key = (("hdr.mpls0.label", node_sid),)
        if hop is None:
            e = TableEntry("tree_node", key, "own_sid")
        else:
            e = TableEntry(
                "tree_node", key, "toward", (("port", hop.port), ("smac", _mac(hop.smac)), ("dmac", _mac(hop.dmac)))
            )
        self._write([e], "MODIFY" if _key(e) in self._entries else "INSERT")

    def remove_tree_node(self, node_sid: int) -> None:
        held = [
            e for e in self._entries.values() if e.table == "tree_node" and dict(e.match)["hdr.mpls0.label"] == node_sid
        ]
        if not held:
            raise ConfigError(f"switch {self.sw.name} has no route for node SID {node_sid}")
        self._write(held, "DELETE")

    def write_tree_segment(
        self, rep_sid: int, replicas: list[tuple[int, int, P4Neighbor]], leaf: bool, local_port: int = 1
    ) -> None:
        """This switch's replication segment of one tree: replicas as (node SID, replication SID, first hop)
        of each downstream replication node; a leaf also delivers to local_port. Groups and per-replica
        relabelling first, then the segment entry that names them, then what it no longer names."""
        if len(replicas) > C["TREE_MAX_REPLICAS"]:
            raise TableFullError(
                f"replication SID {rep_sid}: {len(replicas)} replicas; at most {C['TREE_MAX_REPLICAS']}"
            )
        fresh = rep_sid not in self._tree_index
        idx = self._tree_index.get(rep_sid, _free_slot(self._tree_index))
        if idx >= MAX_TREE_SEGMENTS:
            raise TableFullError(f"switch {self.sw.name}: no multicast groups left for replication SID {rep_sid}")
        self._tree_index[rep_sid] = idx
        g = TREE_GROUP_BASE + 2 * idx
        members = [(hop.port, i + 1) for i, (_, _, hop) in enumerate(replicas)]
        groups = {g: members} if members else {}  # an empty group is refused
        if leaf:
            groups[g + 1] = [*members, (local_port, LOCAL_RID)]
        old_groups = {x for x in (g, g + 1) if x in self._groups}
        self._write_groups({x: m for x, m in groups.items() if x not in old_groups}, "INSERT")
        self._write_groups({x: m for x, m in groups.items() if x in old_groups}, "MODIFY")
        reps = [
            TableEntry(
                "tree_replica",
                (("meta.tree_rep", rep_sid), ("std.egress_rid", i + 1)),
                "relabel",
                (("node_sid", n), ("rep_sid", r), ("smac", _mac(hop.smac)), ("dmac", _mac(hop.dmac))),
            )
            for i, (n, r, hop) in enumerate(replicas)
        ]
        old_reps = {
            _key(e): e
            for e in self._entries.values()
            if e.table == "tree_replica" and dict(e.match)["meta.tree_rep"] == rep_sid
        }
        self._write([e for e in reps if _key(e) not in old_reps], "INSERT")
        self._write([e for e in reps if _key(e) in old_reps], "MODIFY")
        params = (("group", g), ("n", len(replicas)), ("is_leaf", int(leaf)), ("deliver_port", local_port))
        self._write(
            [TableEntry("tree_segment", (("meta.tree_rep", rep_sid),), "segment", params)],
            "INSERT" if fresh else "MODIFY",
        )
        self._write([e for k, e in old_reps.items() if k not in {_key(r) for r in reps}], "DELETE")
        stale = {x: self._groups.pop(x) for x in old_groups - set(groups)}
        if stale:
            self.sw.write_multicast_groups(stale, "DELETE")

    def remove_tree_segment(self, rep_sid: int) -> None:
        if rep_sid not in self._tree_index:
            raise ConfigError(f"switch {self.sw.name} has no replication segment {rep_sid}")
        gone = [
            e
            for e in self._entries.values()
            if e.table in ("tree_segment", "tree_replica") and dict(e.match)["meta.tree_rep"] == rep_sid
        ]
        self._write(sorted(gone, key=lambda e: e.table != "tree_segment"), "DELETE")
        g = TREE_GROUP_BASE + 2 * self._tree_index.pop(rep_sid)
        groups = {x: self._groups[x] for x in (g, g + 1) if x in self._groups}
        self.sw.write_multicast_groups(groups, "DELETE")
        for x in groups:
            del self._groups[x]

    def write_tree_root(
        self, dst: IPAddress | str, rep_sid: int, src: IPAddress | str | None = None, udp_port: int = 0
    ) -> None:
        """Traffic matching (S,G), (*,G) or (*, dst, UDP port) goes on the tree whose root segment here is
        rep_sid (when no BFIR entry takes it first)."""
        table, key = self._root_key("tree_root", dst, src, udp_port)
        e = TableEntry(table, key, "root", (("rep_sid", rep_sid),))
        self._write([e], "MODIFY" if _key(e) in self._entries else "INSERT")

    def delete_tree_root(self, dst: IPAddress | str, src: IPAddress | str | None = None, udp_port: int = 0) -> None:
        table, key = self._root_key("tree_root", dst, src, udp_port)
        held = [e for e in self._entries.values() if _key(e) == _key(TableEntry(table, key, "root"))]
        if not held:
            raise ConfigError(f"switch {self.sw.name} is no tree root for {dst} (udp {udp_port})")
        self._write(held, "DELETE")

    @staticmethod
    def _root_key(  # the table and key of a BFIR's or a tree root's match: (S,G), (*, dst, UDP port), (*,G)
        prefix: str, dst: IPAddress | str, src: IPAddress | str | None, udp_port: int
    ) -> tuple[str, tuple[tuple[str, int], ...]]:
        d = parse_address(dst)
        fam = "ipv4" if d.version == 4 else "ipv6"
        if src is not None:
            return f"{prefix}_sg_v{d.version}", (
                (f"hdr.{fam}.src", int(parse_address(src))),
                (f"hdr.{fam}.dst", int(d)),
            )
        if udp_port:
            return f"{prefix}_sync_v{d.version}", ((f"hdr.{fam}.dst", int(d)), ("hdr.l4.dport", udp_port))
        return f"{prefix}_g_v{d.version}", ((f"hdr.{fam}.dst", int(d)),)

    # TreeTarget (dinet.targets.base): ports are port numbers
    def _p4_hop(self, h: TreeHopPort) -> P4Neighbor:
        if not h.smac:
            raise ConfigError(f"switch {self.sw.name}: port {h.port} needs its MAC address (smac)")
        try:
            return P4Neighbor(int(h.port), h.smac, h.dmac, 0)
        except ValueError:
            raise ConfigError(f"switch {self.sw.name}: a port is a number, not {h.port!r}") from None

    def set_tree_node(self, node_sid: int, hop: TreeHopPort | None) -> None:
        self.write_tree_node(node_sid, None if hop is None else self._p4_hop(hop))

    def set_tree_segment(self, rep_sid: int, replicas: list[TreeReplicaPort], leaf: bool) -> None:
        reps = [(r.node_sid, r.rep_sid, self._p4_hop(r.hop)) for r in replicas]
        self.write_tree_segment(rep_sid, reps, leaf, self.local_port)

    def set_tree_root(self, root: TreeRoot) -> None:
        self.write_tree_root(root.dst, root.rep_sid, root.src or None, root.udp_port)

    def remove_tree_root(self, root: TreeRoot) -> None:
        self.delete_tree_root(root.dst, root.src or None, root.udp_port)

    def tree_entries(self) -> dict[str, list[TableEntry]]:
        """What the switch holds for the trees, read back from it: table -> entries."""
        tables = [
            t
            for t in self.sw.p4info_tables()
            if t.startswith(("tree_node", "tree_segment", "tree_root", "tree_replica"))
        ]
        return {t: self.sw.read_table(t) for t in tables}

    # ---- BierTarget (dinet.targets.base): ports are port numbers ------------------------------------------
    def set_bift(self, entry: BiftEntry) -> None:
        def p4(p: BiftPort) -> P4Neighbor:
            if not p.smac:
                raise ConfigError(f"switch {self.sw.name}: port {p.port} needs its MAC address (smac)")
            return P4Neighbor(self._port_no(p.port), p.smac, p.dmac, p.fbm)

        backups = {self._port_no(b.port): [p4(p) for p in b.neighbors] for b in entry.backups}
        self.write_bift(entry.bift_id, entry.local, [p4(p) for p in entry.neighbors], self.local_port, backups)

    def _port_no(self, port: str) -> int:
        try:
            return int(port)
        except ValueError:
            raise ConfigError(f"switch {self.sw.name}: a port is a number, not {port!r}") from None

    def remove_bift(self, bift_id: int) -> None:
        if bift_id not in self._bift_index:
            raise ConfigError(f"switch {self.sw.name} has no BIFT-id {bift_id:#x}")
        gone = [
            e
            for e in self._entries.values()
            if e.table in ("bift", "bift_backup", "bier_replica") and dict(e.match)["hdr.bift.bift_id"] == bift_id
        ]
        self._write(gone, "DELETE")
        base = 1 + self._bift_index.pop(bift_id) * GROUPS_PER_BIFT
        groups = {g: r for g, r in self._groups.items() if base <= g < base + GROUPS_PER_BIFT}
        self.sw.write_multicast_groups(groups, "DELETE")
        for g in groups:
            del self._groups[g]

    def set_bfir(self, entry: BfirEntry) -> None:
        self.write_bfir(entry.dst, entry.bfir_id, entry.bsl_code, dict(entry.sets), entry.src or None, entry.udp_port)

    def remove_bfir(self, entry: BfirEntry) -> None:
        table, key = self._root_key("bfir", entry.dst, entry.src or None, entry.udp_port)
        if (table, tuple(sorted(key))) not in self._bfir:
            raise ConfigError(f"switch {self.sw.name} has no BFIR entry for {entry.match}")
        self._write([TableEntry(table, key, "push")], "DELETE")
        self._bfir.discard((table, tuple(sorted(key))))

    def ports_up(self, ports: list[str]) -> dict[str, bool]:
        """The switch must answer (a read over P4Runtime); a port is up if its interface (port_names, in
        port_netns) is, and taken as up where the switch's interfaces are not known."""
        self.sw.read_table("host_port")
        known = {str(n): name for n, name in self.port_names.items()}
        if not known:
            return {p: True for p in ports}
        state = links_up([known[p] for p in ports if p in known], self.port_netns)
        return {p: state.get(known[p], False) if p in known else True for p in ports}

    def watch_links(self, wake: threading.Event) -> None:
        """Where the switch's interfaces are known (port_netns): wake at their link events."""
        if self.port_names:
            self._events = LinkEvents(self.port_netns)
            self._events.start(wake)

    def unwatch_links(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None

    # ---- fast reroute's port state (p4/bier.p4: bier_port_state) --------------------------------------------
    def monitor_ports(self) -> None:
        """Starts the switch's own link monitor (fast reroute): from then on a port of port_names (in
        port_netns) that loses its link is written into bier_port_state at once, one entry and no planning,
        and the program uses the backups of the entries that name it. v1model has no port state of its own;
        this is BMv2's stand-in for it. Ports from 64 up are not watched (the program's mask)."""
        if self._monitor is not None or not self.port_names:
            return
        self._port_of = {}
        for port, name in self.port_names.items():
            if port >= 64:
                continue
            try:
                self._port_of[ifindex(name, self.port_netns)] = port
            except InterfaceError:  # no such interface (yet): down, and not watched
                log.warning("switch %s: port %d's interface %s is not there: taken as down", self.sw.name, port, name)
                self._down[port] = time.monotonic_ns()
        self._down_written = False
        self._monitor = PortMonitor(self.sw.name, self.port_netns, self._mark_port)
        if not self._down_written:  # every port up: the entry is written once all the same (read back, resync)
            self._write_ports_down()

    def _mark_port(self, ifindex: int, down: bool) -> None:
        port = self._port_of.get(ifindex)
        if port is not None:
            self.mark_port(port, down)

    def mark_port(self, port: int, down: bool) -> None:
        """Tells the switch that a port is down (or up again): what the link monitor does at a link event."""
        if not 0 <= port < 64:
            raise ConfigError(f"switch {self.sw.name}: fast reroute watches ports 0..63, not {port}")
        if (port in self._down) == down:
            return
        if down:
            self._down[port] = time.monotonic_ns()
        else:
            del self._down[port]
        self._write_ports_down()

    def _write_ports_down(self) -> None:
        mask = sum(1 << p for p in self._down)
        try:
            self._write([TableEntry("bier_port_state", (), "ports_down", (("down", mask),), is_default=True)], "MODIFY")
            self._down_written, self.ports_told_ns = True, time.monotonic_ns()
        except DataPlaneError as e:  # the switch away: check() writes it again
            self._down_written = False
            self.port_state_errors += 1
            log.warning("switch %s: cannot write the ports that are down: %s", self.sw.name, e)

    def ports_down(self) -> dict[int, int]:
        """Port -> when the monitor saw its link go (CLOCK_MONOTONIC ns)."""
        return dict(self._down)

    def close(self) -> None:
        """Stops the link monitor and closes the connection (the switch keeps its entries)."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        self.sw.close()

    def bier_counters(self) -> dict[str, int]:
        names = {
            v: k.removeprefix("BIER_EV_").removeprefix("BIER_").lower()
            for k, v in C.items()
            if k.startswith(("BIER_EV_", "BIER_DROP_"))
        }
        arrays = [
            self.sw.read_counters(c)
            for c in ("bier.bier_counters", "bier_egress.bier_copies", "tree.tree_counters", "tree_egress.tree_copies")
        ]
        return {name: sum(a.get(i, (0, 0))[0] for a in arrays) for i, name in sorted(names.items())}
