"""The contract between the control plane and every data plane: what a steering target and a BIER target do,
and the values they take and give back. XDP (xdp.py), TC (tc.py), P4Runtime (p4node.py) and a remote node
agent (remote.py) each implement it; the controller sees nothing else of them.

Writers apply plans computed in pure code (dinet.policy: instance slots, the Maglev ring, BIFT entries); they
never decide. Every read method reads the data plane itself, never a copy kept in the writer: the
controller reads back only at start and on an explicit resync, and plans from its own record in between."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from .. import consts
from ..errors import ConfigError, UnknownInstanceError
from ..model import Instance, InstanceState, IPAddress, ServiceKey
from ..policy.bift import BfirEntry, BiftBackup, BiftEntry, BiftPort

__all__ = [
    "BfirEntry",
    "BiftBackup",
    "BiftEntry",
    "BiftPort",
    "BierTarget",
    "Counter",
    "FlowEntry",
    "InstanceEdits",
    "ServiceState",
    "SteerSizes",
    "SteeringTarget",
    "TreeHopPort",
    "TreeReplicaPort",
    "TreeRoot",
    "TreeTarget",
    "svc_flags",
]

C = consts.load()


@dataclass(frozen=True)
class SteerSizes:
    """Table sizes of the steering pipeline (compile-time constants of steer.bpf.c and dinet.p4). Pinned maps
    and a running switch fix them: a later load must use the same."""

    max_services: int = C["DINET_MAX_SERVICES"]
    max_instances: int = C["DINET_MAX_INSTANCES"]
    ring_size: int = C["DINET_RING_SIZE"]
    affinity_entries: int = C["DINET_AFFINITY_ENTRIES"]

    def defines(self) -> dict[str, int]:
        return {
            "DINET_MAX_SERVICES": self.max_services,
            "DINET_MAX_INSTANCES": self.max_instances,
            "DINET_RING_SIZE": self.ring_size,
            "DINET_AFFINITY_ENTRIES": self.affinity_entries,
        }


@dataclass(frozen=True)
class Counter:
    packets: int = 0
    bytes: int = 0
    new_flows: int = 0
    session_flows: int = 0  # of the new flows, those of a session that found its session's instance
    sessions: int = 0  # sessions placed (a session key met for the first time)
    sessions_replaced: int = 0  # sessions placed again: the instance they had left


@dataclass
class ServiceState:
    """A service as read back from a data plane: its slot, the live ring half, its instances by slot, and how it
    places new flows (dinet_consts.h): by their session key (DINET_SVC_SESSION), on the lower loaded of two
    ring candidates (DINET_SVC_TWO_CHOICES), else by the ring alone."""

    key: ServiceKey
    svc_id: int
    ring_sel: int
    instances: dict[int, Instance] = field(default_factory=dict)  # slot -> instance
    session: bool = False
    two_choices: bool = False  # DINET_SVC_TWO_CHOICES: new flows to the lower loaded of two ring candidates


@dataclass(frozen=True)
class FlowEntry:
    """One remembered flow (affinity): its 5-tuple, and the service slot, instance slot and id it is held to."""

    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    proto: int
    svc_id: int
    slot: int
    instance_id: int


def svc_flags(session: bool, two_choices: bool) -> int:
    """The service flags (DINET_SVC_*) of a placement; a service is session-affine or two-choices, not both."""
    if session and two_choices:
        raise ConfigError("a service places new flows by their session or on two choices, not both")
    return (C["DINET_SVC_SESSION"] if session else 0) | (C["DINET_SVC_TWO_CHOICES"] if two_choices else 0)


@runtime_checkable
class SteeringTarget(Protocol):
    """A steering data plane. `services()` and `service()` read the data plane; `set_instances` makes a list the
    service's whole instance set (slots kept for those it has, the ring rewritten in its idle half, then
    switched, where the weights changed; an instance's load alone is written in place); `add_service` is
    idempotent, and sets how the service places new flows on a service already there: session-affine (by their
    session key: the IPv6 flow label or the client's source-port group) or two-choices (the lower loaded of two
    ring candidates), not both."""

    def add_service(self, svc: ServiceKey, session: bool = False, two_choices: bool = False) -> int: ...
    def remove_service(self, svc: ServiceKey) -> None: ...
    def services(self) -> list[ServiceState]: ...
    def service(self, svc: ServiceKey) -> ServiceState: ...
    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None: ...
    def service_counters(self, svc: ServiceKey) -> tuple[Counter, dict[int, Counter]]: ...


class InstanceEdits:
    """Edits of one instance, in terms of a target's `service()` and `set_instances()` (every steering target
    has both): each reads the service's instance set back and writes it whole, through the same plan. A
    target's base class (XDP, P4Runtime, a node agent), for the CLI and the tests; the controller writes whole
    sets."""

    def service(self, svc: ServiceKey) -> Any:
        raise NotImplementedError

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        raise NotImplementedError

    def _current(self, svc: ServiceKey, instance_id: int | None = None) -> list[Instance]:
        current = list(self.service(svc).instances.values())
        if instance_id is not None and instance_id not in {i.instance_id for i in current}:
            raise UnknownInstanceError(f"{svc} has no instance {instance_id}")
        return current

    def _replace(self, svc: ServiceKey, instance_id: int, **changes: Any) -> None:
        current = self._current(svc, instance_id)
        self.set_instances(svc, [replace(i, **changes) if i.instance_id == instance_id else i for i in current])

    def upsert_instance(self, svc: ServiceKey, inst: Instance) -> None:
        self.set_instances(svc, [i for i in self._current(svc) if i.instance_id != inst.instance_id] + [inst])

    def remove_instance(self, svc: ServiceKey, instance_id: int) -> None:
        self.set_instances(svc, [i for i in self._current(svc, instance_id) if i.instance_id != instance_id])

    def set_weight(self, svc: ServiceKey, instance_id: int, weight: int) -> None:
        self._replace(svc, instance_id, weight=weight)

    def set_state(self, svc: ServiceKey, instance_id: int, state: InstanceState) -> None:
        """DRAINING: no new flow, established flows stay. DOWN: its flows are placed anew too."""
        self._replace(svc, instance_id, state=state)

    def drain(self, svc: ServiceKey, instance_id: int) -> None:
        self.set_state(svc, instance_id, InstanceState.DRAINING)


@runtime_checkable
class BierTarget(Protocol):
    """A BIER data plane (one BFR). Entries (values of dinet.policy.bift, planned there) are written whole and
    removed by key. `ports_up` tells which of the node's ports have a live link (raises DataPlaneError when
    the node does not answer: the controller takes that as the BFR failed). `fast_reroute`: whether the
    target uses an entry's backups (a target without it is written entries without them)."""

    fast_reroute: bool

    def set_bift(self, entry: BiftEntry) -> None: ...
    def remove_bift(self, bift_id: int) -> None: ...
    def set_bfir(self, entry: BfirEntry) -> None: ...
    def remove_bfir(self, entry: BfirEntry) -> None: ...
    def ports_up(self, ports: list[str]) -> dict[str, bool]: ...


# ---- SR-P2MP trees (the baseline BIER is measured against) ------------------------------------------------
@dataclass(frozen=True)
class TreeHopPort:
    """Where a node sends what goes toward a neighbour: its port (an interface name on Linux, a port number on
    a switch), the port's MAC (smac; a Linux target may read it from the interface) and the neighbour's."""

    port: str
    dmac: str
    smac: str = ""


@dataclass(frozen=True)
class TreeReplicaPort:
    """One replica of a replication segment: the downstream replication node's node SID and replication SID,
    sent out toward `hop` (the first hop on the way to that node)."""

    node_sid: int
    rep_sid: int
    hop: TreeHopPort


@dataclass(frozen=True)
class TreeRoot:
    """Traffic a tree's root puts on the tree: (S,G) with src, (*,G), or (*, dst, UDP port) as a BFIR entry
    matches; rep_sid the root's replication SID of the tree."""

    dst: str
    rep_sid: int
    src: str = ""
    udp_port: int = 0


@runtime_checkable
class TreeTarget(Protocol):
    """A node of the SR-P2MP tree baseline: node-SID routes (hop None: the node's own SID), replication
    segments per tree, root entries; each written whole and removed by key."""

    def set_tree_node(self, node_sid: int, hop: TreeHopPort | None) -> None: ...
    def remove_tree_node(self, node_sid: int) -> None: ...
    def set_tree_segment(self, rep_sid: int, replicas: list[TreeReplicaPort], leaf: bool) -> None: ...
    def remove_tree_segment(self, rep_sid: int) -> None: ...
    def set_tree_root(self, root: TreeRoot) -> None: ...
    def remove_tree_root(self, root: TreeRoot) -> None: ...
