"""A node agent (`dinet agent`) seen from the controller: the same steering and BIER calls as a local target,
over gRPC. Errors come back as the same dinet exceptions the agent's target raised."""

from __future__ import annotations

from typing import Any

import grpc

from .. import proto
from ..errors import ConfigError, DataPlaneError, DinetError, TableFullError, UnknownInstanceError, UnknownServiceError
from ..model import Instance, InstanceState, ServiceKey
from ..policy.steering import InstanceEdits

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
    )


def inst_from_msg(m: Any) -> Instance:
    try:
        state = InstanceState[m.state.upper() or "UP"]
    except KeyError:
        raise ConfigError(f"instance {m.instance_id}: state must be up, draining or down, not {m.state!r}") from None
    return Instance(m.instance_id, m.endpoint, m.weight, state, m.site_id)


class RemoteNode(InstanceEdits):
    """A node agent seen from the controller: the steering calls of SteeringNode, plus set_bift/set_bfir."""

    def __init__(self, address: str, token: str = "", timeout: float = 10.0, name: str = ""):
        self.pb, pb_grpc = proto.agent()
        self.address, self.name = address, name or address
        self.channel = grpc.insecure_channel(address)
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
            ):
                detail = f"node agent {self.name} ({self.address}): {code.name} {detail}"
            raise err(detail) from None

    def _state(self, msg: Any) -> Any:
        from .xdp import ServiceState

        return ServiceState(
            ServiceKey.parse(msg.service), msg.slot, msg.ring_sel, {m.slot: inst_from_msg(m) for m in msg.instances}
        )

    def add_service(self, svc: ServiceKey) -> int:
        return int(self._call("AddService", self.pb.ServiceRef(service=str(svc))).slot)

    def service(self, svc: ServiceKey) -> Any:
        return self._state(self._call("GetService", self.pb.ServiceRef(service=str(svc))))

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        req = self.pb.SetInstancesRequest(service=str(svc), instances=[inst_msg(self.pb, 0, i) for i in instances])
        self._call("SetInstances", req)

    def service_counters(self, svc: ServiceKey) -> Any:
        from .xdp import Counter

        c = self._call("GetCounters", self.pb.ServiceRef(service=str(svc)))
        per = {iid: Counter(m.packets, m.bytes, m.new_flows) for iid, m in c.instances.items()}
        return Counter(c.service.packets, c.service.bytes, c.service.new_flows), per

    def set_bift(self, bift_id: int, local: int, neighbors: list[tuple[str, str, int]], nbytes: int = 32) -> None:
        """neighbors: (interface on the agent's host, neighbour MAC, F-BM)."""
        msg = self.pb.BiftEntry(
            bift_id=bift_id,
            local=local.to_bytes(nbytes, "big"),
            neighbors=[self.pb.Neighbor(ifname=i, dmac=m, fbm=f.to_bytes(nbytes, "big")) for i, m, f in neighbors],
        )
        self._call("SetBift", msg)

    def set_bfir(
        self,
        dst: str,
        bfir_id: int,
        bsl_code: int,
        sets: dict[int, int],
        src: str = "",
        udp_port: int = 0,
        nbytes: int = 32,
    ) -> None:
        msg = self.pb.BfirEntry(
            dst=str(dst),
            src=str(src or ""),
            udp_port=udp_port,
            bfir_id=bfir_id,
            bsl=bsl_code,
            sets={b: m.to_bytes(nbytes, "big") for b, m in sets.items()},
        )
        self._call("SetBfir", msg)

    def close(self) -> None:
        self.channel.close()
