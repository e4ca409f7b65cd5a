"""The node agent: a process on a Linux host that owns the host's bcc programs and pinned maps, and the
controller's client for it (`RemoteNode`, the same calls as a local SteeringNode). Errors cross the wire as
gRPC status codes with the message, and come back out as the same dinet exceptions."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Any

import grpc

from . import proto
from .errors import ConfigError, DataPlaneError, DinetError, TableFullError, UnknownInstanceError, UnknownServiceError
from .model import Instance, InstanceState, ServiceKey
from .steering import InstanceEdits

log = logging.getLogger(__name__)

_CODES = {
    UnknownServiceError: grpc.StatusCode.NOT_FOUND,
    UnknownInstanceError: grpc.StatusCode.NOT_FOUND,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    TableFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: ConfigError, grpc.StatusCode.RESOURCE_EXHAUSTED: TableFullError}


def _inst_msg(pb: Any, slot: int, i: Instance) -> Any:
    return pb.InstanceMsg(
        instance_id=i.instance_id,
        endpoint=str(i.endpoint),
        weight=i.weight,
        state=i.state.name.lower(),
        site_id=i.site_id,
        slot=slot,
    )


def _inst(m: Any) -> Instance:
    try:
        state = InstanceState[m.state.upper() or "UP"]
    except KeyError:
        raise ConfigError(f"instance {m.instance_id}: state must be up, draining or down, not {m.state!r}") from None
    return Instance(m.instance_id, m.endpoint, m.weight, state, m.site_id)


class AgentService:
    """What the agent process serves, over a local SteeringNode (and a BierNode once BIER is asked for)."""

    def __init__(self, steer: Any, bier_factory: Any = None, token: str = ""):
        self.steer = steer
        self.bier_factory = bier_factory
        self.bier: Any = None
        self.token = token
        self.lock = threading.Lock()

    def servicer(self) -> Any:
        pb, pb_grpc = proto.agent()
        svc_self = self

        def guarded(fn: Any) -> Any:
            def call(_servicer: Any, request: Any, context: grpc.ServicerContext) -> Any:
                md = dict(context.invocation_metadata())
                if svc_self.token and md.get("authorization", "") != f"Bearer {svc_self.token}":
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown controller token")
                try:
                    with svc_self.lock:
                        return fn(_servicer, request)
                except DinetError as e:
                    code = next((c for t, c in _CODES.items() if isinstance(e, t)), grpc.StatusCode.FAILED_PRECONDITION)
                    context.abort(code, str(e))

            return call

        def state(svc: ServiceKey) -> Any:
            st = svc_self.steer.service(svc)
            return pb.ServiceState(
                service=str(svc),
                slot=st.svc_id,
                ring_sel=st.ring_sel,
                instances=[_inst_msg(pb, slot, i) for slot, i in sorted(st.instances.items())],
            )

        class Servicer(pb_grpc.NodeAgentServicer):  # type: ignore[misc,name-defined]
            @guarded
            def AddService(self, r: Any) -> Any:  # noqa: N802 - gRPC names
                svc = ServiceKey.parse(r.service)
                svc_self.steer.add_service(svc)
                return state(svc)

            @guarded
            def GetService(self, r: Any) -> Any:  # noqa: N802
                return state(ServiceKey.parse(r.service))

            @guarded
            def SetInstances(self, r: Any) -> Any:  # noqa: N802
                svc = ServiceKey.parse(r.service)
                svc_self.steer.set_instances(svc, [_inst(m) for m in r.instances])
                return state(svc)

            @guarded
            def GetCounters(self, r: Any) -> Any:  # noqa: N802
                total, per = svc_self.steer.service_counters(ServiceKey.parse(r.service))
                out = pb.Counters(service=pb.CounterMsg(**total.__dict__), verdicts=svc_self.steer.verdicts())
                for iid, c in per.items():
                    out.instances[iid].CopyFrom(pb.CounterMsg(**c.__dict__))
                return out

            @guarded
            def SetBift(self, r: Any) -> Any:  # noqa: N802
                from . import netns
                from .targets.tc import BiftNeighbor

                bier = svc_self._bier()
                nbrs = [
                    BiftNeighbor(netns.ifindex(n.ifname), netns.mac_of(n.ifname), n.dmac, int.from_bytes(n.fbm, "big"))
                    for n in r.neighbors
                ]
                bier.set_bift(r.bift_id, int.from_bytes(r.local, "big"), nbrs)
                return pb.Done()

            @guarded
            def SetBfir(self, r: Any) -> Any:  # noqa: N802
                from .targets.tc import BfirMatch

                match = BfirMatch(r.dst, r.src or None, r.udp_port)
                sets = {bid: int.from_bytes(bits, "big") for bid, bits in r.sets.items()}
                svc_self._bier().set_bfir(match, r.bfir_id, r.bsl, sets)
                return pb.Done()

        return Servicer()

    def _bier(self) -> Any:
        if self.bier is None:
            if self.bier_factory is None:
                raise DataPlaneError("this agent runs no BIER program")
            self.bier = self.bier_factory()
        return self.bier


class AgentServer:
    def __init__(self, service: AgentService, address: str = "127.0.0.1:0"):
        _, pb_grpc = proto.agent()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_NodeAgentServicer_to_server(service.servicer(), self.server)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {address}")
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"

    def __enter__(self) -> AgentServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=1).wait()


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
                err = _ERRORS.get(code, DataPlaneError)
            if code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAUTHENTICATED,
            ):
                detail = f"node agent {self.name} ({self.address}): {code.name} {detail}"
            raise err(detail) from None

    def _state(self, msg: Any) -> Any:
        from .targets.xdp import ServiceState

        return ServiceState(
            ServiceKey.parse(msg.service), msg.slot, msg.ring_sel, {m.slot: _inst(m) for m in msg.instances}
        )

    def add_service(self, svc: ServiceKey) -> int:
        return int(self._call("AddService", self.pb.ServiceRef(service=str(svc))).slot)

    def service(self, svc: ServiceKey) -> Any:
        return self._state(self._call("GetService", self.pb.ServiceRef(service=str(svc))))

    def set_instances(self, svc: ServiceKey, instances: list[Instance]) -> None:
        req = self.pb.SetInstancesRequest(service=str(svc), instances=[_inst_msg(self.pb, 0, i) for i in instances])
        self._call("SetInstances", req)

    def service_counters(self, svc: ServiceKey) -> Any:
        from .targets.xdp import Counter

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


def serve_forever(node: str, listen: str, token: str, stop: threading.Event | None = None) -> None:
    """`dinet agent`: serves the node's programs until stopped (SIGINT/SIGTERM in the CLI)."""
    from .targets.tc import BierNode
    from .targets.xdp import SteeringNode

    stop = stop or threading.Event()
    steer = SteeringNode(node)
    try:
        service = AgentService(steer, lambda: BierNode(node), token)
        with AgentServer(service, listen) as srv:
            print(f"dinet agent: node {node} on {srv.address}", flush=True)
            stop.wait()
    finally:
        steer.close()
        if service.bier is not None:
            service.bier.close()
