"""The node agent: a process on a Linux host that owns the host's bcc programs and pinned maps and serves
them over gRPC (its client is dinet.targets.remote.RemoteNode). Errors cross the wire as gRPC status codes
with the message, and come back out of RemoteNode as the same dinet exceptions."""

from __future__ import annotations

import collections
import logging
import threading
from concurrent import futures
from typing import Any

import grpc

from .. import proto
from ..creds import Identity, Revocations, listen, peer_identity, peer_serial, same_token
from ..errors import ConfigError, DataPlaneError, DinetError
from ..model import ServiceKey
from ..targets.remote import CODES, bfir_from_msg, bift_from_msg, inst_from_msg, inst_msg

log = logging.getLogger(__name__)


class AgentService:
    """What the agent process serves, over a local SteeringNode (and a TcBierTarget once BIER is asked for)."""

    def __init__(
        self,
        steer: Any,
        bier_factory: Any = None,
        token: str = "",
        controllers: frozenset[str] = frozenset(),
        revocations: Revocations | None = None,
    ):
        """token: a second factor every call must carry ('' none); controllers: the identities (certificate
        names) allowed to drive this agent over mutual TLS; revocations: the CRL of their CA."""
        self.steer = steer
        self.bier_factory = bier_factory
        self.bier: Any = None
        self.token = token
        self.controllers = controllers
        self.revocations = revocations
        self.refused: collections.Counter[str] = collections.Counter()  # by reason
        self.lock = threading.Lock()

    def authorize(self, identity: str | None, token: str, serial: int | None = None) -> str | None:
        """The refusal reason ('revoked', 'identity', 'token'), counted; None when the caller may go on."""
        reason = None
        if self.revocations is not None and self.revocations.revoked(serial):
            reason = "revoked"
        elif identity is not None and identity not in self.controllers:
            reason = "identity"
        elif self.token and not same_token(token, self.token):
            reason = "token"
        if reason:
            self.refused[reason] += 1
        return reason

    def servicer(self) -> Any:
        pb, pb_grpc = proto.agent()
        svc_self = self

        def guarded(fn: Any) -> Any:
            def call(_servicer: Any, request: Any, context: grpc.ServicerContext) -> Any:
                md = dict(context.invocation_metadata())
                token = md.get("authorization", "").removeprefix("Bearer ").strip()
                reason = svc_self.authorize(peer_identity(context), token, peer_serial(context))
                if reason == "revoked":
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, "this certificate is revoked")
                if reason == "identity":
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, "this identity may not drive this node")
                if reason == "token":
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or missing controller token")
                try:
                    with svc_self.lock:
                        return fn(_servicer, request)
                except DinetError as e:
                    code = next((c for t, c in CODES.items() if isinstance(e, t)), grpc.StatusCode.FAILED_PRECONDITION)
                    context.abort(code, str(e))

            return call

        def state(svc: ServiceKey) -> Any:
            st = svc_self.steer.service(svc)
            return pb.ServiceState(
                service=str(svc),
                slot=st.svc_id,
                ring_sel=st.ring_sel,
                instances=[inst_msg(pb, slot, i) for slot, i in sorted(st.instances.items())],
                session=st.session,
                two_choices=st.two_choices,
            )

        class Servicer(pb_grpc.NodeAgentServicer):  # type: ignore[misc,name-defined]
            @guarded
            def AddService(self, r: Any) -> Any:  # noqa: N802 - gRPC names
                svc = ServiceKey.parse(r.service)
                svc_self.steer.add_service(svc, session=r.session, two_choices=r.two_choices)
                return state(svc)

            @guarded
            def GetService(self, r: Any) -> Any:  # noqa: N802
                return state(ServiceKey.parse(r.service))

            @guarded
            def SetInstances(self, r: Any) -> Any:  # noqa: N802
                svc = ServiceKey.parse(r.service)
                svc_self.steer.set_instances(svc, [inst_from_msg(m) for m in r.instances])
                return state(svc)

            @guarded
            def GetCounters(self, r: Any) -> Any:  # noqa: N802
                total, per = svc_self.steer.service_counters(ServiceKey.parse(r.service))
                out = pb.Counters(service=pb.CounterMsg(**total.__dict__), verdicts=svc_self.steer.verdicts())
                for iid, c in per.items():
                    out.instances[iid].CopyFrom(pb.CounterMsg(**c.__dict__))
                return out

            @guarded
            def RemoveService(self, r: Any) -> Any:  # noqa: N802
                svc_self.steer.remove_service(ServiceKey.parse(r.service))
                return pb.Done()

            @guarded
            def ListServices(self, r: Any) -> Any:  # noqa: N802
                return pb.ServiceList(services=[state(s.key) for s in svc_self.steer.services()])

            @guarded
            def SetBift(self, r: Any) -> Any:  # noqa: N802
                svc_self._bier().set_bift(bift_from_msg(r))
                return pb.Done()

            @guarded
            def RemoveBift(self, r: Any) -> Any:  # noqa: N802
                svc_self._bier().remove_bift(r.bift_id)
                return pb.Done()

            @guarded
            def SetBfir(self, r: Any) -> Any:  # noqa: N802
                svc_self._bier().set_bfir(bfir_from_msg(r))
                return pb.Done()

            @guarded
            def RemoveBfir(self, r: Any) -> Any:  # noqa: N802
                svc_self._bier().remove_bfir(bfir_from_msg(r))
                return pb.Done()

            @guarded
            def PortsUp(self, r: Any) -> Any:  # noqa: N802
                from ..targets.netns import links_up

                return pb.PortsState(up=links_up(list(r.ifnames)))

        return Servicer()

    def _bier(self) -> Any:
        if self.bier is None:
            if self.bier_factory is None:
                raise DataPlaneError("this agent runs no BIER program")
            self.bier = self.bier_factory()
        return self.bier


class AgentServer:
    """The agent on a gRPC port, over mutual TLS with `identity`'s credentials; without credentials only
    when `insecure` (a warning)."""

    def __init__(
        self,
        service: AgentService,
        address: str = "127.0.0.1:0",
        identity: Identity | None = None,
        insecure: bool = False,
    ):
        _, pb_grpc = proto.agent()
        if identity is None and not insecure:
            raise ConfigError("the node agent has no credentials: give it a certificate (dinet certs), or --insecure")
        if identity is None and not service.token:  # as the insecure collector: a token names who may call
            raise ConfigError("a node agent without TLS (--insecure) needs a token: --token-file FILE or DINET_TOKEN")
        self.insecure = identity is None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_NodeAgentServicer_to_server(service.servicer(), self.server)
        self.port, self.address = listen(self.server, address, identity, "node agent")

    def __enter__(self) -> AgentServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=1).wait()


def serve_forever(
    node: str,
    listen: str,
    token: str,
    stop: threading.Event | None = None,
    identity: Identity | None = None,
    controllers: frozenset[str] = frozenset({"controller"}),
    insecure: bool = False,
    prometheus: str | None = None,
) -> None:
    """`dinet agent`: serves the node's programs until stopped (SIGINT/SIGTERM in the CLI); with
    `prometheus` (HOST:PORT), its refusals by reason and whether it runs without TLS."""
    from ..targets.tc import BierNode, TcBierTarget
    from ..targets.xdp import SteeringNode

    stop = stop or threading.Event()
    steer = SteeringNode(node)
    try:
        revocations = identity.revocations() if identity else None
        service = AgentService(steer, lambda: TcBierTarget(BierNode(node)), token, controllers, revocations)
        with AgentServer(service, listen, identity, insecure) as srv:
            http = None
            if prometheus:
                http = _serve_metrics(service, prometheus, srv.insecure)
            print(f"dinet agent: node {node} on {srv.address}", flush=True)
            stop.wait()
            if http:
                http[0].shutdown()
    finally:
        steer.close()
        if service.bier is not None:
            service.bier.close()


def _serve_metrics(service: AgentService, listen: str, insecure: bool) -> Any:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector as PromCollector

    class AgentMetrics(PromCollector):
        def collect(self) -> Any:
            refused = CounterMetricFamily("dinet_agent_refused", "Calls the node agent refused", labels=["reason"])
            for reason, n in sorted(service.refused.items()):
                refused.add_metric([reason], n)
            yield refused
            yield GaugeMetricFamily("dinet_insecure", "1 if the agent runs without TLS", value=int(insecure))

    reg = CollectorRegistry()
    reg.register(AgentMetrics())
    host, _, port = listen.rpartition(":")
    try:
        return start_http_server(int(port), addr=host or "127.0.0.1", registry=reg)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot serve Prometheus on {listen}: {e}") from None
