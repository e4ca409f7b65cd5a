"""The XDP target: the steering program of an ingress node and the decap program of a tunnel endpoint,
loaded by bcc, their maps pinned under BPFFS_ROOT/<node>/ so forwarding outlives this process and a new
process picks up every table (and every flow's affinity) where the last one left them."""

from __future__ import annotations

import ctypes
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import consts
from ..errors import ConfigError, DataPlaneError, InterfaceError, TableFullError, UnknownServiceError
from ..model import Instance, InstanceLoad, InstanceState, IPAddress, ServiceKey, family_of, parse_address
from ..paths import BPFFS_ROOT
from ..policy.steering import plan_instances
from .base import Counter, FlowEntry, InstanceEdits, ServiceState, SteerSizes, svc_flags
from .bcc_program import BccProgram, XdpProgramNode, update, write_array
from .bpfsys import pinned_map_info

log = logging.getLogger(__name__)
C = consts.load()
SLOT_NONE = C["DINET_SLOT_NONE"]


def pinned_sizes(pin_dir: Path) -> SteerSizes | None:
    """The sizes of the steering maps already pinned in pin_dir (None if there are none)."""
    svc = pinned_map_info(str(pin_dir / "services"))
    inst = pinned_map_info(str(pin_dir / "instances"))
    ring = pinned_map_info(str(pin_dir / "ring"))
    aff = pinned_map_info(str(pin_dir / "affinity"))
    if not (svc and inst and ring and aff):
        return None
    return SteerSizes(
        svc.max_entries,
        inst.max_entries // svc.max_entries,
        ring.max_entries // (2 * svc.max_entries),
        aff.max_entries,
    )


def _set_addr(dst: Any, addr: IPAddress) -> None:
    packed = addr.packed.ljust(16, b"\0")
    ctypes.memmove(ctypes.addressof(dst), packed, 16)


def _get_addr(src: Any, family: int) -> IPAddress:
    raw = bytes(src.addr)
    return parse_address(
        socket.inet_ntop(
            socket.AF_INET if family == C["DINET_AF_INET"] else socket.AF_INET6,
            raw[:4] if family == C["DINET_AF_INET"] else raw,
        )
    )


def vip_fold(addr: IPAddress) -> int:
    """The index of an address in the program's vip_filter (the same fold as vip_fold() in steer.bpf.c)."""
    raw = addr.packed.ljust(16, b"\0")
    x = 0
    for i in range(0, 16, 4):
        x ^= int.from_bytes(raw[i : i + 4], "little")
    return (x ^ (x >> 16)) & (C["DINET_VIP_FILTER_SIZE"] - 1)


@dataclass(frozen=True)
class FilterEntry:
    """A vip_filter value: VIP addresses and session-affine services folding there, and the entry's epoch."""

    vips: int = 0
    sessions: int = 0
    epoch: int = 0

    @classmethod
    def unpack(cls, value: int) -> FilterEntry:
        return cls(
            value & C["DINET_FILTER_VIPS"],
            value >> C["DINET_FILTER_SESSIONS_SHIFT"] & C["DINET_FILTER_SESSIONS_MASK"],
            value >> C["DINET_FILTER_EPOCH_SHIFT"],
        )

    def pack(self) -> int:
        return (
            self.vips | self.sessions << C["DINET_FILTER_SESSIONS_SHIFT"] | self.epoch << C["DINET_FILTER_EPOCH_SHIFT"]
        )

    def add(self, vips: int, sessions: int) -> FilterEntry:
        epoch = (self.epoch + 1) & 0xFFFF if sessions else self.epoch
        return FilterEntry(max(0, self.vips + vips), max(0, self.sessions + sessions), epoch)


def _session(v: Any) -> bool:
    return bool(v.flags & C["DINET_SVC_SESSION"])


def _two_choices(v: Any) -> bool:
    return bool(v.flags & C["DINET_SVC_TWO_CHOICES"])


class SteeringNode(XdpProgramNode, InstanceEdits):
    """The steering program of one ingress node and its pinned maps (BPFFS_ROOT/<node>/steer)."""

    PROGRAM = "xdp_steer"

    def __init__(
        self, node: str = "default", sizes: SteerSizes | None = None, bpffs_root: Path = BPFFS_ROOT, bench: bool = False
    ):
        self._netns: str | None = None  # where the program was last attached (attach)
        pin_dir = bpffs_root / node / "steer"
        pinned = pinned_sizes(pin_dir)
        if pinned and sizes and pinned != sizes:
            raise DataPlaneError(
                f"node {node!r} already holds maps of sizes {pinned}; asked for {sizes}. "
                f"Use `dinet xdp destroy --node {node}` first to start anew"
            )
        self.sizes = pinned or sizes or SteerSizes()
        # bench: with ebpf/bench_steer.bpf.c's wrappers (bench/ only)
        defines = self.sizes.defines() | ({"DINET_STEER_NO_ENTRY": 1} if bench else {})
        super().__init__(
            node, BccProgram("steer.bpf.c", pin_dir, defines, after=["bench_steer.bpf.c"] if bench else [])
        )
        t = self.prog.table
        self.services_t, self.vip_addrs_t, self.instances_t = t("services"), t("vip_addrs"), t("instances")
        self.ring_t, self.affinity_t, self.config_t = t("ring"), t("affinity"), t("config")
        self.svc_stats_t, self.inst_stats_t, self.verdicts_t = t("svc_stats"), t("inst_stats"), t("verdicts")
        self.vip_filter_t, self.svc_gen_t, self.sessions_t = t("vip_filter"), t("svc_gen"), t("sessions")
        self.placed_t = t("inst_placed")
        self._fill_crc_table(t("crc_table"))
        # slots in use, read once: this process is the node's one writer while it holds the node
        self._used_ids = {int(v.svc_id) for v in self.services_t.values()}
        # services whose live ring this process wrote from their instance entries as they are: only for these
        # may a load alone skip the ring (a ring pinned before, or a write cut short, is written again)
        self._ring_ok: set[int] = set()

    # ---- lifecycle (ProgramNode: close, destroy, detach) -----------------------------------------------
    def attach(self, ifname: str, netns: str | None = None, mode: str = "native") -> None:
        super().attach(ifname, netns, mode)
        self._netns = netns

    @staticmethod
    def _fill_crc_table(table: Any) -> None:
        # CRC-32 table, reflected polynomial 0xEDB88320: entry i is the CRC register after byte i.
        values = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
            values.append(c)
        write_array(table, 0, values)

    # ---- configuration -------------------------------------------------------------------------------
    def configure(
        self,
        src4: str | IPAddress | None = None,
        src6: str | IPAddress | None = None,
        static_next_hop: tuple[int, str, str] | None = None,
        static_mtu: int = 0,
    ) -> None:
        """Tunnel source addresses, and either FIB forwarding (default) or a static next hop
        (ifindex or 0 for back out of the ingress port, source MAC, destination MAC). What is not
        given keeps its current value, but the forwarding mode, which is FIB unless a next hop is given.
        static_mtu: the static next hop's MTU, against which every encapsulated packet is checked (a client
        gets ICMP "fragmentation needed" or an ICMPv6 Packet Too Big); 0: the MTU of the interface
        `ifindex` in the namespace the program was attached in, or no check if that is unknown."""
        cfg = self.config_t[self.config_t.Key(0)]
        if src4 is not None:
            a = parse_address(src4)
            if a.version != 4:
                raise ConfigError(f"src4 must be IPv4, not {a}")
            _set_addr(cfg.src4, a)
        if src6 is not None:
            a = parse_address(src6)
            if a.version != 6:
                raise ConfigError(f"src6 must be IPv6, not {a}")
            _set_addr(cfg.src6, a)
        if static_next_hop:
            ifindex, smac, dmac = static_next_hop
            cfg.fwd_mode = C["DINET_FWD_STATIC"]
            cfg.static_ifindex = ifindex
            if static_mtu < 0 or static_mtu > 65535:
                raise ConfigError(f"an MTU is 0..65535, not {static_mtu}")
            cfg.static_mtu = static_mtu or self._mtu_of(ifindex)
            for name, mac in (("static_smac", smac), ("static_dmac", dmac)):
                try:
                    raw = bytes.fromhex(mac.replace(":", ""))
                except ValueError:
                    raw = b""
                if len(raw) != 6:
                    raise ConfigError(f"not a MAC address: {mac!r}")
                getattr(cfg, name)[:] = list(raw)
        else:
            cfg.fwd_mode = C["DINET_FWD_FIB"]
        self.config_t[self.config_t.Key(0)] = cfg

    def _mtu_of(self, ifindex: int) -> int:
        if not ifindex:
            return 0
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        from . import netns

        try:
            with netns.entered(self._netns), IPRoute() as ipr:
                links = ipr.get_links(ifindex)
        except (NetlinkError, InterfaceError):  # no such interface here: nothing to check against
            return 0
        return int(links[0].get_attr("IFLA_MTU") or 0) if links else 0

    # ---- services --------------------------------------------------------------------------------------
    def _svc_key(self, svc: ServiceKey) -> Any:
        k = self.services_t.Key()
        _set_addr(k.vip, svc.vip)
        k.port = socket.htons(svc.port)
        k.proto = svc.proto_number
        k.family = family_of(svc.vip)
        return k

    def _vip_key(self, vip: IPAddress) -> Any:
        k = self.vip_addrs_t.Key()
        _set_addr(k.addr, vip)
        k.family = family_of(vip)
        return k

    def services(self) -> list[ServiceState]:
        """Every installed service, with its instances, read back from the maps."""
        out = []
        protos = {6: "tcp", 17: "udp"}
        for k, v in self.services_t.items():
            vip = _get_addr(k.vip, k.family)
            key = ServiceKey(vip, socket.ntohs(k.port), protos.get(k.proto, "tcp"))
            insts = self._read_instances(v.svc_id)
            out.append(ServiceState(key, v.svc_id, v.ring_sel, insts, _session(v), _two_choices(v)))
        return sorted(out, key=lambda s: s.svc_id)

    def service(self, svc: ServiceKey) -> ServiceState:
        try:
            v = self.services_t[self._svc_key(svc)]
        except KeyError:
            raise UnknownServiceError(f"no service {svc} on node {self.node!r}") from None
        return ServiceState(svc, v.svc_id, v.ring_sel, self._read_instances(v.svc_id), _session(v), _two_choices(v))

    def add_service(self, svc: ServiceKey, session: bool = False, two_choices: bool = False) -> int:
        """Installs a service with no instance (new flows to it are dropped, counted, until it has some).
        Returns its slot; adding an existing service changes nothing but how it places new flows."""
        flags = svc_flags(session, two_choices)
        k = self._svc_key(svc)
        try:
            have = self.services_t[k]
        except KeyError:
            pass
        else:
            if have.flags != flags:  # one word of the value; flows already placed stay where they are
                was = _session(have)
                have.flags = flags
                if session and not was:  # the filter first: the program takes the session rules there before
                    self._filter_add(svc.vip, sessions=+1)
                update(self.services_t, k, have, f"service {svc}")
                if was and not session:
                    self._filter_add(svc.vip, sessions=-1)
            return int(have.svc_id)
        free = next((i for i in range(self.sizes.max_services) if i not in self._used_ids), None)
        if free is None:
            raise TableFullError(
                f"the service table of node {self.node!r} is full "
                f"({self.sizes.max_services} services): cannot add {svc}"
            )
        v = self.services_t.Leaf()
        v.svc_id, v.ring_sel, v.gen = free, 0, self._bump_gen(free)
        v.flags = flags
        vk = self._vip_key(svc.vip)
        count = self.vip_addrs_t.get(vk)
        update(self.vip_addrs_t, vk, self.vip_addrs_t.Leaf((count.value if count else 0) + 1), f"VIP {svc.vip}")
        self._filter_add(svc.vip, vips=int(count is None), sessions=int(session))
        update(self.services_t, k, v, f"service {svc}")
        self._used_ids.add(free)
        log.info("node %s: service %s added as slot %d", self.node, svc, free)
        return free

    def remove_service(self, svc: ServiceKey) -> None:
        """Removes a service: its packets then pass untouched; its counters and instances are cleared."""
        state = self.service(svc)
        del self.services_t[self._svc_key(svc)]
        self._bump_gen(state.svc_id)  # its flows are no longer trusted without a service lookup
        vk = self._vip_key(svc.vip)
        count = self.vip_addrs_t.get(vk)
        if count is not None and count.value > 1:
            self.vip_addrs_t[vk] = self.vip_addrs_t.Leaf(count.value - 1)
        elif count is not None:
            del self.vip_addrs_t[vk]
        self._filter_add(svc.vip, vips=-int(count is not None and count.value <= 1), sessions=-int(state.session))
        self._clear_service_slots(state.svc_id)
        self._used_ids.discard(state.svc_id)
        self._ring_ok.discard(state.svc_id)

    def _bump_gen(self, svc_id: int) -> int:
        k = self.svc_gen_t.Key(svc_id)
        gen = (self.svc_gen_t[k].value + 1) & 0xFFFFFFFF or 1
        self.svc_gen_t[k] = self.svc_gen_t.Leaf(gen)
        return gen

    def _filter_add(self, vip: IPAddress, vips: int = 0, sessions: int = 0) -> None:
        """Counts VIP addresses and session-affine services in and out of the filter entry their address folds
        to (dinet_consts.h, DINET_FILTER_*); a change of the latter bumps the entry's epoch."""
        if not vips and not sessions:
            return
        k = self.vip_filter_t.Key(vip_fold(vip))
        have = FilterEntry.unpack(self.vip_filter_t[k].value)
        self.vip_filter_t[k] = self.vip_filter_t.Leaf(have.add(vips, sessions).pack())

    def _clear_service_slots(self, svc_id: int) -> None:
        """Empties a removed service's instance slots and counters, so the slot is clean for its next user."""
        base = svc_id * self.sizes.max_instances
        for slot in range(self.sizes.max_instances):
            idx = self.instances_t.Key(base + slot)
            if self.instances_t[idx].instance_id:
                self.instances_t[idx] = self.instances_t.Leaf()
            del self.inst_stats_t[self.inst_stats_t.Key(base + slot)]
        del self.svc_stats_t[self.svc_stats_t.Key(svc_id)]

    # ---- instances and weights -----------------------------------------------------------------------
    def _read_instances(self, svc_id: int) -> dict[int, Instance]:
        out = {}
        base = svc_id * self.sizes.max_instances
        for slot in range(self.sizes.max_instances):
            v = self.instances_t[self.instances_t.Key(base + slot)]
            if v.instance_id:
                out[slot] = Instance(
                    int(v.instance_id),
                    _get_addr(v.endpoint, v.family),
                    int(v.weight),
                    InstanceState(v.state),
                    int(v.site_id),
                    load=InstanceLoad(
                        int(v.load), int(v.load_step), int(v.load_free), int(v.load_gen), int(v.load_each)
                    )
                    if v.load_gen
                    else None,
                )
        return out

    def set_instances(self, svc: ServiceKey, instances: Iterable[Instance]) -> None:
        """Makes `instances` the service's whole instance set: existing ones keep their slot (and so
        their flows), new ones take free slots, missing ones leave (their flows are placed anew).
        The ring is rewritten in its idle half and then switched in one write."""
        wanted = list(instances)
        for i in wanted:
            if i.endpoint.version == 4 and not self._has_src(4):
                raise ConfigError(
                    f"instance {i.instance_id} has an IPv4 endpoint but node {self.node!r} "
                    "has no IPv4 tunnel source (configure --src4)"
                )
            if i.endpoint.version == 6 and not self._has_src(6):
                raise ConfigError(
                    f"instance {i.instance_id} has an IPv6 endpoint but node {self.node!r} "
                    "has no IPv6 tunnel source (configure --src6)"
                )
        state = self.service(svc)
        plan = plan_instances(svc, state.instances, wanted, self.sizes.max_instances, self.sizes.ring_size)
        base = state.svc_id * self.sizes.max_instances
        ring_known = state.svc_id in self._ring_ok
        self._ring_ok.discard(state.svc_id)  # until this write is through
        # 1. instance entries first: the ring never names a slot that is not yet written
        for slot, inst in plan.changed.items():
            key = self.instances_t.Key(base + slot)
            if slot not in state.instances:
                del self.inst_stats_t[self.inst_stats_t.Key(base + slot)]
            stays = slot in state.instances and state.instances[slot].instance_id == inst.instance_id
            # an instance that keeps its slot keeps its epoch (its flows stay); a new occupant draws one
            epoch = int(self.instances_t[key].epoch) if stays else (int.from_bytes(os.urandom(4), "little") or 1)
            self.instances_t[key] = self._inst_leaf(inst, epoch)
        # 2. the idle ring half, then the switch (where the weights changed: a load alone changes no ring)
        if plan.ring_changed or not ring_known:
            sel = state.ring_sel ^ 1
            write_array(self.ring_t, (state.svc_id * 2 + sel) * self.sizes.ring_size, plan.ring)
            v = self.services_t[self._svc_key(svc)]
            v.ring_sel = sel
            self.services_t[self._svc_key(svc)] = v
        # 3. instances that left: their slot is emptied once no ring names it
        for slot in plan.freed:
            self.instances_t[self.instances_t.Key(base + slot)] = self.instances_t.Leaf()
        self._ring_ok.add(state.svc_id)

    def _has_src(self, version: int) -> bool:
        cfg = self.config_t[self.config_t.Key(0)]
        raw = bytes((cfg.src4 if version == 4 else cfg.src6).addr)
        return any(raw)

    def _inst_leaf(self, inst: Instance, epoch: int) -> Any:
        v = self.instances_t.Leaf()
        v.epoch = epoch
        _set_addr(v.endpoint, inst.endpoint)
        v.family = family_of(inst.endpoint)
        v.instance_id, v.weight, v.state, v.site_id = inst.instance_id, inst.weight, int(inst.state), inst.site_id
        if inst.load is not None:
            v.load, v.load_step, v.load_free, v.load_gen, v.load_each = (
                inst.load.value, inst.load.step, inst.load.free, inst.load.seq, inst.load.each
            )  # fmt: skip
        else:  # no load written: each flow placed there counts 1 (two-choices balances what it placed)
            v.load_step = 1
        return v

    def ring(self, svc: ServiceKey) -> list[int]:
        """The live ring of a service: slot numbers (SLOT_NONE for none)."""
        st = self.service(svc)
        start = (st.svc_id * 2 + st.ring_sel) * self.sizes.ring_size
        return [int(self.ring_t[self.ring_t.Key(start + i)].value) for i in range(self.sizes.ring_size)]

    # ---- reading back ---------------------------------------------------------------------------------
    def _sum(self, table: Any, idx: int) -> Counter:
        vals = table.getvalue(table.Key(idx))
        return Counter(
            sum(v.packets for v in vals),
            sum(v.bytes for v in vals),
            sum(v.new_flows for v in vals),
            sum(v.session_flows for v in vals),
            sum(v.sessions for v in vals),
            sum(v.sessions_replaced for v in vals),
        )

    def service_counters(self, svc: ServiceKey) -> tuple[Counter, dict[int, Counter]]:
        """(the service's counter, instance id -> counter)."""
        st = self.service(svc)
        base = st.svc_id * self.sizes.max_instances
        per = {inst.instance_id: self._sum(self.inst_stats_t, base + slot) for slot, inst in st.instances.items()}
        return self._sum(self.svc_stats_t, st.svc_id), per

    def verdicts(self) -> dict[str, int]:
        names = consts.verdict_names()
        out = {}
        for idx in range(C["DINET_VERDICTS"]):
            if idx in names and "decap" not in names[idx]:
                out[names[idx]] = int(sum(self.verdicts_t.getvalue(self.verdicts_t.Key(idx))))
        return out

    def sessions(self) -> dict[tuple[int, IPAddress, int], tuple[int, int]]:
        """Sessions remembered (LRU): (service slot, client address, session key) -> (instance slot, id)."""
        return {
            (int(k.svc_id), _get_addr(k.src, k.family), int(k.session)): (int(v.slot), int(v.instance_id))
            for k, v in self.sessions_t.items()
        }

    def affinity(self, limit: int | None = None) -> Iterator[FlowEntry]:
        """Flows in the affinity table (LRU: the kernel may evict the least recently used)."""
        n = 0
        for k, v in self.affinity_t.items():
            if limit is not None and n >= limit:
                return
            n += 1
            yield FlowEntry(
                _get_addr(k.src, k.family),
                _get_addr(k.dst, k.family),
                socket.ntohs(k.sport),
                socket.ntohs(k.dport),
                int(k.proto),
                int(v.svc_id),
                int(v.slot),
                int(v.instance_id),
            )

    def memory(self) -> dict[str, int]:
        """Kernel memory charged to each map (bytes, from /proc/self/fdinfo)."""
        out = {}
        for name in (
            "services",
            "vip_addrs",
            "vip_filter",
            "svc_gen",
            "instances",
            "ring",
            "affinity",
            "sessions",
            "inst_placed",
            "svc_stats",
            "inst_stats",
            "verdicts",
            "config",
            "crc_table",
        ):
            fd = self.prog.table(name).map_fd
            for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("memlock:"):
                    out[name] = int(line.split()[1])
        return out

    def stats(self) -> dict[str, Any]:
        """Everything a `dinet stats` shows, as plain data."""
        services = []
        for st in self.services():
            total, per = self.service_counters(st.key)
            services.append(
                {
                    "service": str(st.key),
                    "slot": st.svc_id,
                    **total.__dict__,
                    "instances": [
                        i.as_dict() | per[i.instance_id].__dict__
                        for i in sorted(st.instances.values(), key=lambda x: x.instance_id)
                    ],
                }
            )
        return {"node": self.node, "services": services, "verdicts": self.verdicts()}


class DecapNode(XdpProgramNode):
    """The decap program of a tunnel endpoint host and its pinned maps (BPFFS_ROOT/<node>/decap)."""

    PROGRAM = "xdp_decap"

    def __init__(self, node: str = "default", bpffs_root: Path = BPFFS_ROOT):
        super().__init__(node, BccProgram("decap.bpf.c", bpffs_root / node / "decap"))
        self.endpoints_t = self.prog.table("endpoints")
        self.verdicts_t = self.prog.table("verdicts")

    def _key(self, addr: IPAddress) -> Any:
        k = self.endpoints_t.Key()
        _set_addr(k.addr, addr)
        k.family = family_of(addr)
        return k

    def add_endpoint(self, addr: str | IPAddress) -> None:
        a = parse_address(addr)
        update(self.endpoints_t, self._key(a), self.endpoints_t.Leaf(1), f"endpoint {a}")

    def remove_endpoint(self, addr: str | IPAddress) -> None:
        a = parse_address(addr)
        try:
            del self.endpoints_t[self._key(a)]
        except KeyError:
            raise ConfigError(f"{a} is not an endpoint of node {self.node!r}") from None

    def endpoints(self) -> list[IPAddress]:
        return sorted((_get_addr(k.addr, k.family) for k in self.endpoints_t.keys()), key=str)

    def verdicts(self) -> dict[str, int]:
        names = consts.verdict_names()
        return {
            names[i]: int(sum(self.verdicts_t.getvalue(self.verdicts_t.Key(i))))
            for i in (C["DINET_DECAP_OK"], C["DINET_DROP_DECAP_MALFORMED"])
        }
