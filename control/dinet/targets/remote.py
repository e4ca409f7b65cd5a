"""A node agent (`dinet agent`) seen from the controller: the same steering and BIER calls as a local target,
over gRPC. Errors come back as the same dinet exceptions the agent's target raised."""

from __future__ import annotations

from typing import Any

import grpc

from .. import proto
from ..creds import Identity
from ..errors import ConfigError, DataPlaneError, DinetError, TableFullError, UnknownInstanceError, UnknownServiceError
from ..model import Instance, InstanceLoad, InstanceState, ServiceKey
from .base import BfirEntry, BiftBackup, BiftEntry, BiftPort, Counter, InstanceEdits, ServiceState

CODES = {
    UnknownServiceError: grpc.StatusCode.NOT_FOUND,
    UnknownInstanceError: grpc.StatusCode.NOT_FOUND,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    TableFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: ConfigError, grpc.StatusCode.RESOURCE_EXHAUSTED: TableFullError}


def inst_msg(pb: Any, slot: int, i: Instance) -> Any:
    return pb.InstanceMsg(
        instance_id=i.instance_id,
        endpoint=str(i.endpoint),
        weight=i.weight,
        state=i.state.name.lower(),
        site_id=i.site_id,
        slot=slot,
        load=pb.LoadMsg(value=i.load.value, step=i.load.step, free=i.load.free, seq=i.load.seq, each=i.load.each)
        if i.load
        else None,
    )


BITS_BYTES = 32  # bit masks cross the wire as 256-bit big-endian strings


def _bits(mask: int) -> bytes:
    return mask.to_bytes(BITS_BYTES, "big")


def bift_msg(pb: Any, e: BiftEntry) -> Any:
    def nbrs(ports: tuple[BiftPort, ...]) -> list[Any]:
        return [pb.Neighbor(ifname=n.port, dmac=n.dmac, fbm=_bits(n.fbm), smac=n.smac) for n in ports]

    return pb.BiftEntry(
        bift_id=e.bift_id,
        local=_bits(e.local),
        neighbors=nbrs(e.neighbors),
        backups=[pb.Backup(ifname=b.port, neighbors=nbrs(b.neighbors)) for b in e.backups],
    )


def bift_from_msg(m: Any) -> BiftEntry:
    def nbrs(ns: Any) -> tuple[BiftPort, ...]:
        return tuple(BiftPort(n.ifname, n.dmac, int.from_bytes(n.fbm, "big"), n.smac) for n in ns)

    backups = tuple(BiftBackup(b.ifname, nbrs(b.neighbors)) for b in m.backups)
    return BiftEntry(m.bift_id, int.from_bytes(m.local, "big"), nbrs(m.neighbors), backups)


def bfir_msg(pb: Any, e: BfirEntry) -> Any:
    return pb.BfirEntry(
        dst=e.dst,
        src=e.src,
        udp_port=e.udp_port,
        bfir_id=e.bfir_id,
        bsl=e.bsl_code,
        sets={b: _bits(m) for b, m in e.sets},
    )


def bfir_from_msg(m: Any) -> BfirEntry:
    sets = tuple(sorted((bid, int.from_bytes(bits, "big")) for bid, bits in m.sets.items()))
    return BfirEntry(m.dst, m.bfir_id, m.bsl, sets, m.src, m.udp_port)


def inst_from_msg(m: Any) -> Instance:
    try:
        state = InstanceState[m.state.upper() or "UP"]
    except KeyError:
        raise ConfigError(f"instance {m.instance_id}: state must be up, draining or down, not {m.state!r}") from None
    ld = m.load
    load = InstanceLoad(ld.value, ld.step, ld.free, ld.seq, ld.each) if m.HasField("load") and ld.seq else None
    return Instance(m.instance_id, m.endpoint, m.weight, state, m.site_id, load=load)


class RemoteNode(InstanceEdits):
    """A node agent seen from the controller: a SteeringTarget and a BierTarget (dinet.targets.base)."""

    fast_reroute = True  # the agent's node is a TC BIER node

    def __init__(
        self,
        address: str,
        token: str = "",
        timeout: float = 10.0,
        name: str = "",
        identity: Identity | None = None,
        server: str = "",
    ):
        """identity: the controller's credentials, for mutual TLS with an agent whose certificate names
        `server`; None: a plain channel (an agent started --insecure)."""
        self.pb, pb_grpc = proto.agent()
        self.address, self.name = address, name or address
        if identity is not None and not server:
            raise ConfigError(f"node agent {self.name}: its identity (certificate name) is needed for TLS")
        self.channel = identity.channel(address, server) if identity else grpc.insecure_channel(address)
        self.stub = pb_grpc.NodeAgentStub(self.channel)
        self.md = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, metadata=self.md, timeout=self.timeout)
        except grpc.RpcError as e:
            code, detail = e.code(), e.details() or ""
            if code == grpc.StatusCode.NOT_FOUND:
                err: type[DinetError] = UnknownInstanceError if "no instance" in detail else UnknownServiceError
            else:
                err = ERRORS.get(code, DataPlaneError)
            if code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                detail = f"node agent {self.name} ({self.address}): {code.name} {detail}"
            raise err(detail) from None

    def _state(self, msg: Any) -> Any:
        return ServiceState(
            ServiceKey.parse(msg.service),
            msg.slot,
            msg.ring_sel,
            {m.slot: inst_from_msg(m) for m in msg.instances},
            msg.session,
            msg.two_choices,
        )

    def add_service(self, svc: ServiceKey, session: bool = False, two_choices: bool = False) -> int:
        ref = self.pb.ServiceRef(service=str(svc), session=session, two_choices=two_choices)
        return int(self._call("AddService", ref).slot)

    def service(self, svc: ServiceKey) -> Any:
        return self._state(self._call("GetService", self.pb.ServiceRef(service=str(svc))))

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        req = self.pb.SetInstancesRequest(service=str(svc), instances=[inst_msg(self.pb, 0, i) for i in instances])
        self._call("SetInstances", req)

    def service_counters(self, svc: ServiceKey) -> Any:
        c = self._call("GetCounters", self.pb.ServiceRef(service=str(svc)))

        def counter(m: Any) -> Counter:
            return Counter(m.packets, m.bytes, m.new_flows, m.session_flows, m.sessions, m.sessions_replaced)

        return counter(c.service), {iid: counter(m) for iid, m in c.instances.items()}

    def remove_service(self, svc: ServiceKey) -> None:
        self._call("RemoveService", self.pb.ServiceRef(service=str(svc)))

    def services(self) -> list[ServiceState]:
        return [self._state(m) for m in self._call("ListServices", self.pb.Empty()).services]

    # ---- BierTarget ------------------------------------------------------------------------------------
    def set_bift(self, entry: BiftEntry) -> None:
        self._call("SetBift", bift_msg(self.pb, entry))

    def remove_bift(self, bift_id: int) -> None:
        self._call("RemoveBift", self.pb.BiftRef(bift_id=bift_id))

    def set_bfir(self, entry: BfirEntry) -> None:
        self._call("SetBfir", bfir_msg(self.pb, entry))

    def remove_bfir(self, entry: BfirEntry) -> None:
        self._call("RemoveBfir", bfir_msg(self.pb, entry))

    def ports_up(self, ports: list[str]) -> dict[str, bool]:
        """Which of the agent host's interfaces are up; DataPlaneError if the agent does not answer."""
        return dict(self._call("PortsUp", self.pb.PortsRequest(ifnames=ports)).up)

    def close(self) -> None:
        self.channel.close()
